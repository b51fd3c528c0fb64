"""Command line: python -m minimolkv <command> [options]; --help on each.

Each command is a small function that parses nothing itself and calls into the
package; the work lives in the modules. train and sample are in cli_train.py,
the shared options in options.py.

Exit codes: 0 done; 1 a gradient check failed; 2 a refused input -- one line on
stderr naming the option and what is allowed, checked before any work where it
can be (sizes against the machine's RAM, --out, the data); 130 Ctrl-C.
"""

import contextlib
import os
import sys
import time

# One BLAS thread unless the user chose otherwise. This model's matmuls are
# small: on an idle machine one thread is as fast as two, and when another
# process holds a core, multi-threaded OpenBLAS spins and runs 10-50x slower.
# (Set before anything imports numpy; `bench` reports the count it ran with.)
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

from minimolkv.tools.cli_train import MAX_SAMPLE_TOKENS, PROG, check_memory, cmd_sample, cmd_train, data_spec, \
    fail, largest_vocab
from minimolkv.tools.options import Parser, add_config_args, add_kinds_arg, add_training_args, \
    compare_entries, config_from_args, non_negative_float, non_negative_int, positive_int, refuse_unused, \
    settings_from_args


# ----------------------------------------------------------------------------
# gradcheck
# ----------------------------------------------------------------------------

def cmd_gradcheck(args):
    from minimolkv.gradcheck_layers import CHECKS
    from minimolkv.gradcheck import format_table

    names = list(CHECKS) if not args.only else args.only
    unknown = [n for n in names if n not in CHECKS]
    if unknown:
        print(f"minimolkv gradcheck: error: unknown check {unknown[0]!r}; choose from {list(CHECKS)}",
              file=sys.stderr)
        return 2
    print("Gradient checks: centred differences (h = 1e-5) in float64, contracted with a random\n"
          f"upstream gradient; relative error = max|a-b| / max(1e-8, max(|a|+|b|)). Seed {args.seed}.\n")
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


def cmd_info(args):
    from minimolkv.params import format_counts
    config = config_from_args(args, args.parser)
    print(format_counts(config, itemsize=args.itemsize))
    return 0


# ----------------------------------------------------------------------------
# compare
# ----------------------------------------------------------------------------

def cmd_compare(args):
    import dataclasses

    from minimolkv import train
    from minimolkv.files import bounded_list, folder_lock, writable_folder
    from minimolkv.tools import compare

    base = config_from_args(args, args.parser)
    settings = settings_from_args(args)
    configs = []
    for entry in args.entries:                                   # every entry's config, before any work
        try:
            configs.append(compare.config_for(entry, dataclasses.replace(base, vocab_size=largest_vocab(args))))
        except (TypeError, ValueError) as err:
            fail(args, f"the sizes given leave the entry {entry!r} invalid: {err}")
        check_memory(args, configs[-1], settings.batch_size, settings.dtype)
    refuse_unused(args, args.parser, configs, f"the entries {' '.join(args.entries)}")
    for option, folder in (("--out", args.out), ("--save-params", args.save_params)):
        if folder is not None:
            try:
                writable_folder(folder, option)
                args.cleanup.enter_context(folder_lock(folder, option))   # one writer per folder
            except ValueError as err:
                fail(args, str(err))
    theirs = [os.path.join(args.out, name) for name in compare.FILES] + [
        os.path.join(args.save_params, f"{entry}-seed{k}.npz") for entry in args.entries for k in range(args.seeds)
        if args.save_params is not None]
    theirs = [path for path in theirs if os.path.lexists(path)]
    if theirs and not args.overwrite:                            # nothing the user has is replaced unasked
        fail(args, f"{bounded_list(theirs)} would be overwritten; choose another --out (or --save-params), "
                   "or add --overwrite to replace them")
    spec = data_spec(args)
    seeds = list(range(args.seeds))
    print(f"Comparing {', '.join(args.entries)} on {args.data}: {settings.steps} steps, seeds {seeds}",
          flush=True)
    start = time.perf_counter()
    try:
        runs, rows, curves, references = compare.compare(
            spec, base, settings, seeds, log=lambda line: print(line, flush=True), entries=args.entries,
            save_params=args.save_params)
    except (FileNotFoundError, ValueError, UnicodeDecodeError) as err:
        fail(args, str(err))
    except train.TrainingDiverged as err:
        print(f"{PROG} compare: error: {err}", file=sys.stderr)
        return 2
    minutes = (time.perf_counter() - start) / 60
    title = f"{args.data}: {settings.steps} steps x {len(seeds)} seeds ({minutes:.1f} min)"
    command = "python -m minimolkv " + " ".join(sys.argv[1:] if args.argv is None else args.argv)
    paths = compare.save(runs, rows, curves, references, args.out, title, command)
    print("\n" + compare.markdown_table(rows))
    print(f"\nSaved {', '.join(paths)}  ({minutes:.1f} min in all)")
    return 0


# ----------------------------------------------------------------------------
# bench
# ----------------------------------------------------------------------------

def cmd_bench(args):
    import dataclasses

    from minimolkv.tools import bench, bench_report

    if args.quick and args.preset:                               # --quick's tiny sizes would replace it
        args.parser.error(f"--preset {args.preset} means nothing with --quick (tiny sizes); drop one of them")
    quick = {k: v for k, v in bench.QUICK_SIZES.items() if args.quick and getattr(args, k) is None}
    config = config_from_args(args, args.parser, **quick)
    refuse_unused(args, args.parser, [dataclasses.replace(config, kind=k) for k in args.kinds],
                  f"the kinds {' '.join(args.kinds)}")
    measure = bench.QUICK if args.quick else bench.BenchSettings()
    for kind in args.kinds:                                      # sizes that cannot fit: refused up front
        check_memory(args, dataclasses.replace(config, kind=kind), measure.batch_size, "float32")
    print(f"Benchmarking {', '.join(args.kinds)}{' (quick, tiny sizes)' if args.quick else ''}; "
          "this takes about a minute without --quick.", flush=True)
    results = bench.run(config, measure, kinds=args.kinds,
                        log=lambda line: print(line, flush=True))
    print("\n" + bench_report.format_report(results))
    return 0


# ----------------------------------------------------------------------------
# vectors
# ----------------------------------------------------------------------------

def cmd_vectors(args):
    from minimolkv.files import bounded_list, writable_folder
    from minimolkv.tools import vectors
    try:
        writable_folder(args.out, "--out")
    except ValueError as err:
        fail(args, str(err))
    theirs = [name for name in vectors.file_names() if os.path.lexists(os.path.join(args.out, name))]
    if theirs and not args.overwrite:                            # nothing the user has is replaced unasked
        fail(args, f"--out {args.out!r} holds {bounded_list(theirs)}, which vectors would overwrite; "
                   "choose another --out, or add --overwrite to replace them")
    names = vectors.write(args.out)
    print(f"{len(names)} cases (float64 .npz) and README.md written to {args.out}")
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
    p.add_argument("--seed", type=non_negative_int, default=0, help="seed of inputs, parameters and upstream gradients")
    p.add_argument("--only", nargs="+", metavar="NAME", help="run only these checks (default: all)")
    p.set_defaults(func=cmd_gradcheck)

    p = sub.add_parser("info", help="parameter accounting of a model (the MoLE paper's Table 1 view)",
                       description="Count parameters trained, resident in RAM at inference, stored in "
                                   "lookup tables, loaded per token and activated per token.")
    add_config_args(p)
    p.add_argument("--itemsize", type=int, default=4, choices=(2, 4, 8),
                   help="bytes per stored number (2 = fp16 as in the MoLE paper, 4 = float32)")
    p.set_defaults(func=cmd_info, parser=p)

    p = sub.add_parser("train", help="train a tiny model (default: MoLKV on Shakespeare's plays)",
                       description="Train a tiny language model, print progress, save checkpoints, "
                                   "a loss curve and a sample. With no options: the default MoLKV "
                                   "model on the built-in corpus, a few minutes on a laptop CPU.")
    add_config_args(p, with_vocab=False)
    add_training_args(p)
    p.add_argument("--seed", type=non_negative_int, default=None, help="default 0")
    p.add_argument("--out", default=None, metavar="DIR", help="output folder (default runs/<kind>-<data>; "
                                                                "MoLKV: runs/molkv-<variant>-<data>)")
    p.add_argument("--resume", default=None, metavar="DIR", help="continue the run saved in DIR up to --steps")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the run already in --out (without it, train refuses to touch it)")
    p.set_defaults(func=cmd_train, parser=p)

    p = sub.add_parser("sample", help="generate text from a checkpoint (MoLE/MoLKV from lookup tables)",
                       description="Generate from a trained checkpoint. MoLE and MoLKV models decode "
                                   "from lookup tables, built once and saved beside the checkpoint.")
    p.add_argument("--checkpoint", required=True, metavar="DIR", help="a folder written by train")
    p.add_argument("--prompt", default=None, help="text to continue (default: the start of the validation text)")
    p.add_argument("--tokens", type=non_negative_int, default=100, metavar="N",
                   help=f"tokens to generate, printed as they come (default 100, at most {MAX_SAMPLE_TOKENS:,})")
    p.add_argument("--temperature", type=non_negative_float, default=0.8, help="0 = greedy (default 0.8)")
    p.add_argument("--top-k", type=positive_int, default=None, metavar="K", help="sample among the K most likely")
    p.add_argument("--seed", type=non_negative_int, default=0, help="sampling seed (default 0)")
    p.set_defaults(func=cmd_sample, parser=p)

    p = sub.add_parser("compare", help="train dense, moe, mole, the molkv variants and a control alike",
                       description="Train every entry on the same data, seeds and steps with "
                                   "activated parameters matched as in the MoLE paper (MoE: top-2 "
                                   "of experts half the dense FFN size, no dense FFN; the control: a "
                                   "narrower dense FFN). Prints and saves tables (Markdown + CSV: "
                                   "the whole validation split, 95 % intervals, paired differences "
                                   "to MoLE) and a plot of validation curves. docs/experiments.md "
                                   "has the protocols. E1 (default size): compare --seeds 5 --steps 1500. "
                                   "E2 (each cell, one command per entry, merged by python -m "
                                   "minimolkv.tools.e2): compare --preset xl --entries mole molkv-recency "
                                   "control --seeds 3 --steps 400 (--preset large: also --steps 800; "
                                   "--preset default: --seeds 5).")
    add_config_args(p, with_kind=False, with_vocab=False)
    add_training_args(p)
    p.add_argument("--seeds", type=positive_int, default=3, metavar="K", help="seeds per kind (default 3)")
    p.add_argument("--entries", nargs="+", choices=compare_entries(), default=list(compare_entries()),
                   metavar="ENTRY", help=f"what to train (default all: {' '.join(compare_entries())})")
    p.add_argument("--out", default="runs/compare", metavar="DIR", help="where the tables and plot go")
    p.add_argument("--save-params", default=None, metavar="DIR",
                   help="also keep every run's final parameters here (<entry>-seed<k>.npz)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the results (and saved parameters) already there (without it, compare refuses)")
    p.set_defaults(func=cmd_compare, parser=p)

    p = sub.add_parser("bench", help="speed of the train step, LUT inference and decoding, per kind",
                       description="Time the train step (tokens/s, GFLOP/s against the measured matmul "
                                   "peak), the forward from lookup tables against the train-mode forward, "
                                   "and one decode step at T = 16 and 256, for every kind; print a table "
                                   "and the goals met. Run on an idle machine.")
    add_config_args(p, with_kind=False)
    add_kinds_arg(p, "measure")
    p.add_argument("--quick", action="store_true", help="a tiny model and few repeats (seconds; for tests)")
    p.set_defaults(func=cmd_bench, parser=p)

    p = sub.add_parser("vectors", help="write reference vectors (float64 .npz) for porting the blocks",
                       description="Write, for every block, MoLKV variant and one small model of each "
                                   "kind, the inputs, parameters, outputs, gradients under a fixed "
                                   "upstream gradient, lookup tables and decoding steps, in float64 "
                                   ".npz files with a README of names, shapes and formulas.")
    p.add_argument("--out", required=True, metavar="DIR", help="the folder to write into")
    p.add_argument("--overwrite", action="store_true", help="replace the files of the same names in --out")
    p.set_defaults(func=cmd_vectors, parser=p)
    return parser


# Defaults of the options that are None in the parser, so that `given` can tell an option
# typed on the command line from one left out (train --resume refuses the former).
DEFAULTS = {"kind": "molkv", "data": "shakespeare", "tokenizer": "bpe", "vocab": 512}


def main(argv=None):
    """Run one command. Every refused input is one line on stderr and exit code 2;
    Ctrl-C is one line and exit code 130."""
    from minimolkv.memory import keep_freed_memory
    keep_freed_memory()                              # every command: no page-fault storms (memory.py)
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = argv
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    args.given = {k for k, v in vars(args).items()                      # the options typed (0 too:
                  if v is not None and v is not False                   # `0 == False`, so no `not in`)
                  and k not in ("func", "parser", "argv", "command")}
    for name in ("out", "resume", "checkpoint", "save_params"):            # an unset shell variable:
        if isinstance(getattr(args, name, None), str) and not getattr(args, name).strip():   # never a default
            args.parser.error(f"--{name.replace('_', '-')} is empty; give a folder (was a shell variable unset?)")
    for name, value in DEFAULTS.items():
        if getattr(args, name, "absent") is None:
            setattr(args, name, value)
    args.cleanup = contextlib.ExitStack()            # what a command holds to its end (train: the folder lock)
    try:
        with args.cleanup:
            return args.func(args)
    except KeyboardInterrupt:                        # train prints its own line (where to resume)
        print(f"{PROG} {args.command}: interrupted", file=sys.stderr)
        return 130
    except MemoryError as err:                       # the estimates refuse most of these up front
        print(f"{PROG} {args.command}: error: out of memory ({str(err)[:100] or 'no detail'}); use smaller "
              "sizes (--batch-size, --context-len, --d-model, ...) or smaller --data", file=sys.stderr)
        return 2
    except BrokenPipeError:                          # e.g. `sample ... | head`: the reader left
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())   # no error at exit either
        return 0
    except OSError as err:                           # the commands name most paths first; the rest:
        path = f"{os.fspath(err.filename)!r}: " if err.filename else ""
        print(f"{PROG} {args.command}: error: {path}{err.strerror or err}; check that path's permissions "
              "and the free disk space", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
