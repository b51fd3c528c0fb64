"""Shared test set-up.

Lessons and anything that trains run in fast mode under pytest, so the whole
suite stays within two minutes on a 2-core machine.
"""

import os

os.environ.setdefault("MINIMOLKV_FAST", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
