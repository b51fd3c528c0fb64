"""Command line: python -m minimolkv <command> [options]; --help on each.

Each command is a small function here that parses nothing itself and calls
into the package; the work lives in the modules.
"""

import argparse
import sys
import time


class Parser(argparse.ArgumentParser):
    """argparse, but a bad argument is one line on stderr and exit code 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# ----------------------------------------------------------------------------
# gradcheck
# ----------------------------------------------------------------------------

def cmd_gradcheck(args):
    from minimolkv.checks import CHECKS
    from minimolkv.gradcheck import format_table

    names = list(CHECKS) if not args.only else args.only
    unknown = [n for n in names if n not in CHECKS]
    if unknown:
        print(f"minimolkv gradcheck: error: unknown check {unknown[0]!r}; choose from {list(CHECKS)}",
              file=sys.stderr)
        return 2
    print("Gradient checks: centred differences (h = 1e-5) in float64, contracted with a random\n"
          f"upstream gradient; relative error = max|a-b| / max(|a|+|b|). Seed {args.seed}.\n")
    n_pass = n_fail = 0
    for name in names:
        start = time.perf_counter()
        rows = CHECKS[name](args.seed)
        print(format_table(rows, title=f"== {name}  ({time.perf_counter() - start:.1f} s)"))
        print()
        n_pass += sum(r.passed for r in rows)
        n_fail += sum(not r.passed for r in rows)
    print(f"{n_pass} passed, {n_fail} failed")
    return 1 if n_fail else 0


# ----------------------------------------------------------------------------
# model sizes, shared by every command that builds a model
# ----------------------------------------------------------------------------

CONFIG_ARGS = ("vocab_size", "context_len", "d_model", "n_layers", "n_heads", "d_ff",
               "n_experts", "d_expert", "d_key", "window", "top_k")


def add_config_args(p, kind_default="molkv"):
    """--kind and every size of model.Config; unset sizes keep Config's defaults."""
    from minimolkv.model import KINDS, Config
    p.add_argument("--kind", choices=KINDS, default=kind_default, help=f"expert kind (default {kind_default})")
    defaults = Config()
    for name in CONFIG_ARGS:
        p.add_argument("--" + name.replace("_", "-"), type=int, default=None, metavar="N",
                       help=f"default {getattr(defaults, name)}")


def config_from_args(args, parser, **overrides):
    """A Config from the parsed options; an invalid combination is a one-line error (exit 2)."""
    from minimolkv.model import Config
    sizes = {k: getattr(args, k) for k in CONFIG_ARGS if getattr(args, k, None) is not None}
    sizes.update(overrides)
    try:
        return Config(kind=args.kind, **sizes)
    except (TypeError, ValueError) as err:
        parser.error(str(err))


def cmd_info(args):
    from minimolkv.params import format_counts
    config = config_from_args(args, args.parser)
    print(format_counts(config, itemsize=args.itemsize))
    return 0


# ----------------------------------------------------------------------------

def build_parser():
    parser = Parser(prog="python -m minimolkv",
                    description="minimolkv: MoLE and MoLKV expert layers in NumPy, "
                                "every gradient by hand and checked.")
    sub = parser.add_subparsers(dest="command", metavar="command", parser_class=Parser)

    p = sub.add_parser("gradcheck", help="check every hand-written gradient against finite differences",
                       description="Check every layer's backward against centred differences and "
                                   "print one row per tensor. Exits 1 if any row fails.")
    p.add_argument("--seed", type=int, default=0, help="seed of inputs, parameters and upstream gradients")
    p.add_argument("--only", nargs="+", metavar="NAME", help="run only these checks (default: all)")
    p.set_defaults(func=cmd_gradcheck)

    p = sub.add_parser("info", help="parameter accounting of a model (the MoLE paper's Table 1 view)",
                       description="Count parameters trained, resident in RAM at inference, stored in "
                                   "lookup tables, loaded per token and activated per token.")
    add_config_args(p)
    p.add_argument("--itemsize", type=int, default=4, choices=(2, 4, 8),
                   help="bytes per stored number (2 = fp16 as in the MoLE paper, 4 = float32)")
    p.set_defaults(func=cmd_info, parser=p)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
