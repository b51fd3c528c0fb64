"""The command line's options: number types, a parser that fails in one line, and
the option groups several commands share (a model's sizes, the data and training
settings). tools/cli.py builds the commands from them.
"""

import argparse
import math


def positive_int(text):
    """argparse type: an integer >= 1."""
    return _number(text, int, 1)


def non_negative_int(text):
    """argparse type: an integer >= 0."""
    return _number(text, int, 0)


def non_negative_float(text):
    """argparse type: a finite number >= 0."""
    return _number(text, float, 0)


def positive_float(text):
    """argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"must be > 0 and finite, got {text}")
    return value


def _number(text, kind, low):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, got {text!r}")
    if not value >= low or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be {'>= ' + str(low)}{' and finite' if kind is float else ''}, got {text}")
    return value


class Parser(argparse.ArgumentParser):
    """argparse, but a bad argument is one line on stderr and exit code 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# ----------------------------------------------------------------------------
# model sizes, shared by every command that builds a model
# ----------------------------------------------------------------------------

CONFIG_ARGS = ("vocab_size", "context_len", "d_model", "n_layers", "n_heads", "d_ff",
               "n_experts", "d_expert", "d_key", "window", "top_k")     # integers; --kind, --variant besides


# Model sizes by name (--preset): E1's default and large sizes, E2's xl (docs/experiments.md).
# Each keeps d_ff = 4 D, d_expert = d_ff / 2, d_key = D / 4; a size typed as well overrides the preset's.
PRESETS = {
    "default": dict(d_model=64, n_layers=2, d_ff=256, d_expert=128, d_key=16),     # 168,256 dense params
    "large": dict(d_model=128, n_layers=4, d_ff=512, d_expert=256, d_key=32),      # 926,848
    "xl": dict(d_model=224, n_layers=6, d_ff=896, d_expert=448, d_key=56),         # 3,859,296
}


def add_config_args(p, with_kind=True, with_vocab=True):
    """--kind, --variant and every size of model.Config; unset sizes keep Config's defaults.
    with_vocab=False where the data's tokenizer decides the vocabulary (train, compare)."""
    from minimolkv.model import KINDS, Config
    from minimolkv.molkv import VARIANTS
    if with_kind:
        p.add_argument("--kind", choices=KINDS, default=None, help="expert kind (default molkv)")
        p.add_argument("--variant", choices=VARIANTS, default=None,
                       help="MoLKV formulation (default recency, the one that beats MoLE in experiment E1; "
                            "joint reads the paper's abstract literally; docs/design.md 3.2)")
    p.add_argument("--preset", choices=PRESETS, default=None,
                   help="model sizes by name: default (E1's), large (E1's, 5.5x the dense parameters), "
                        "xl (E2's, 4.2x large); a size typed as well overrides the preset's")
    defaults = Config()
    for name in CONFIG_ARGS:
        if name == "vocab_size" and not with_vocab:
            continue
        zero = " (0: no dense FFN)" if name == "d_ff" else ""
        p.add_argument("--" + name.replace("_", "-"), type=non_negative_int if zero else positive_int,
                       default=None, metavar="N", help=f"default {getattr(defaults, name)}{zero}")


def compare_entries():
    from minimolkv.tools.compare import ENTRIES
    return ENTRIES


def add_kinds_arg(p, verb):
    """--kinds, for the commands that run several kinds (compare, bench)."""
    from minimolkv.model import KINDS
    p.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS), metavar="KIND",
                   help=f"kinds to {verb} (default all: {' '.join(KINDS)})")


def add_training_args(p):
    """Data and optimisation options shared by train and compare."""
    from minimolkv.train import Settings
    d = Settings()
    p.add_argument("--data", default=None, metavar="shakespeare|stdlib|synthetic|PATH",
                   help="Shakespeare's plays (default), the stdlib's docstrings, the synthetic context task "
                        "(an endless stream), or a UTF-8 text file")
    p.add_argument("--tokenizer", choices=("bpe", "byte"), default=None, help="for text data (default bpe)")
    p.add_argument("--vocab", type=positive_int, default=None, metavar="V",
                   help="BPE vocabulary size; for synthetic data the number of token ids (default 512)")
    p.add_argument("--steps", type=positive_int, default=None, metavar="N", help=f"total steps per run (default {d.steps})")
    p.add_argument("--batch-size", type=positive_int, default=None, metavar="B", help=f"default {d.batch_size}")
    p.add_argument("--lr", type=positive_float, default=None, help=f"peak learning rate (default {d.lr})")
    p.add_argument("--eval-every", type=positive_int, default=None, metavar="K",
                   help=f"validate (and checkpoint) every K steps (default {d.eval_every})")


def settings_from_args(args):
    """train.Settings from the options given (the rest keep their defaults); bad values exit 2."""
    from minimolkv.train import Settings
    given = {k: getattr(args, k, None) for k in ("steps", "batch_size", "lr", "eval_every", "seed")}
    try:
        return Settings(**{k: v for k, v in given.items() if v is not None})
    except (TypeError, ValueError) as err:
        args.parser.error(str(err))


EXPERT_OPTIONS = ("n_experts", "d_expert", "d_key", "window", "variant", "top_k")   # read by some kinds only


def readers(name):
    """The kinds whose block reads the Config field `name` (model.BLOCKS says which)."""
    from minimolkv.model import BLOCKS, KINDS
    return [k for k in KINDS if k in BLOCKS and name in BLOCKS[k].init_args + BLOCKS[k].options]


def refuse_unused(args, parser, configs=None, what=None):
    """An expert option that none of the models of the command reads (--variant with
    --kind mole, --top-k with molkv, ...) is refused: it would change nothing yet be saved
    in the run's config. configs: those models (default: the one of --kind); what names them."""
    kind = getattr(args, "kind", None)
    if configs is None:
        if kind is None:
            return
        configs, what = [None], f"--kind {kind}"
    for name in EXPERT_OPTIONS:
        if name in getattr(args, "given", ()) and not any(
                (c.kind if c else kind) in readers(name) and (c is None or getattr(c, name) == getattr(args, name))
                for c in configs):                        # (compare's moe entry sets its own d_expert, top_k)
            who = readers(name)
            parser.error(f"--{name.replace('_', '-')} means nothing for {what} (only {', '.join(who)} "
                         f"{'reads' if len(who) == 1 else 'read'} it); drop it")


def config_from_args(args, parser, **overrides):
    """A Config from the parsed options; an invalid combination, or an option the kind does
    not use, is a one-line error (exit 2)."""
    from minimolkv.model import Config
    refuse_unused(args, parser)
    sizes = dict(PRESETS.get(getattr(args, "preset", None), {}))          # then the sizes typed
    sizes.update({k: getattr(args, k) for k in CONFIG_ARGS + ("variant",) if getattr(args, k, None) is not None})
    sizes.update(overrides)
    try:
        return Config(kind=getattr(args, "kind", "dense"), **sizes)
    except (TypeError, ValueError) as err:
        parser.error(str(err))
