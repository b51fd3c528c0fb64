"""python -m minimolkv <command>: the command line lives in minimolkv/tools/cli.py."""

import sys

from minimolkv.tools.cli import main

if __name__ == "__main__":
    sys.exit(main())
