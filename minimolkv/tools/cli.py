"""Command line: python -m minimolkv <command> [options]; --help on each.

Each command is a small function here that parses nothing itself and calls
into the package; the work lives in the modules.

Exit codes: 0 done; 1 a gradient check failed; 2 a refused input -- one line on
stderr naming the option and what is allowed, checked before any work where it
can be (sizes against the machine's RAM, --out, the data); 130 Ctrl-C.
"""

import argparse
import math
import os
import sys
import time

# One BLAS thread unless the user chose otherwise. This model's matmuls are
# small: on an idle machine one thread is as fast as two, and when another
# process holds a core, multi-threaded OpenBLAS spins and runs 10-50x slower.
# (Set before anything imports numpy; `bench` reports the count it ran with.)
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")


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
               "n_experts", "d_expert", "d_key", "window", "top_k")     # integers; --kind, --variant besides


def add_config_args(p, with_kind=True, with_vocab=True):
    """--kind, --variant and every size of model.Config; unset sizes keep Config's defaults.
    with_vocab=False where the data's tokenizer decides the vocabulary (train, compare)."""
    from minimolkv.model import KINDS, Config
    from minimolkv.molkv import VARIANTS
    if with_kind:
        p.add_argument("--kind", choices=KINDS, default=None, help="expert kind (default molkv)")
        p.add_argument("--variant", choices=VARIANTS, default=None,
                       help="MoLKV formulation (default joint; docs/design.md)")
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


def config_from_args(args, parser, **overrides):
    """A Config from the parsed options; an invalid combination is a one-line error (exit 2)."""
    from minimolkv.model import Config
    sizes = {k: getattr(args, k) for k in CONFIG_ARGS + ("variant",) if getattr(args, k, None) is not None}
    sizes.update(overrides)
    try:
        return Config(kind=getattr(args, "kind", "dense"), **sizes)
    except (TypeError, ValueError) as err:
        parser.error(str(err))


def cmd_info(args):
    from minimolkv.params import format_counts
    config = config_from_args(args, args.parser)
    print(format_counts(config, itemsize=args.itemsize))
    return 0


# ----------------------------------------------------------------------------
# train and sample
# ----------------------------------------------------------------------------

PROG = "python -m minimolkv"
MAX_SAMPLE_TOKENS = 1_000_000           # sample --tokens: minutes of decoding, a few MiB of ids


def fail(args, message):
    """One line on stderr naming the command, exit code 2 (as argparse does for bad options)."""
    args.parser.error(message)


def check_out(args, out, resume=None):
    """--out must be a folder we can write, and must not hold another run unless --overwrite
    (two runs of different sizes would clobber each other). Checked before any work."""
    from minimolkv import checkpoint
    from minimolkv.files import writable_folder
    if resume is None or os.path.abspath(out) != os.path.abspath(resume):
        step = checkpoint.holds_run(out) if os.path.isdir(out) else None
        if step is not None and not args.overwrite:
            fail(args, f"--out {out!r} already holds a run (step {step}); continue it with --resume {out}, "
                       "choose another --out, or add --overwrite to replace it")
    try:
        writable_folder(out, "--out")
    except ValueError as err:
        fail(args, str(err))


def clear_old_run(folder):
    """--overwrite: remove the files of the run in `folder` (only those train and sample
    write), so the folder never mixes two runs."""
    import shutil

    from minimolkv import checkpoint
    for name in checkpoint.FILES + ("loss.png",):
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            os.remove(path)
    for entry in os.listdir(folder):
        if checkpoint.is_tables_dir(os.path.join(folder, entry)):
            shutil.rmtree(os.path.join(folder, entry))


def check_memory(args, config, batch_size, dtype):
    """Refuse, with the estimate and the machine's RAM, a run that cannot fit in memory."""
    import numpy as np

    from minimolkv import memory
    try:
        memory.check_fits(config, batch_size, np.dtype(dtype).itemsize)
    except ValueError as err:
        fail(args, str(err))


def load_data(args, spec, context_len):
    """The dataset of `spec`, checked to hold a window of context_len; problems exit 2."""
    from minimolkv.data import check_fits
    try:
        dataset = spec.load()
    except (FileNotFoundError, ValueError, UnicodeDecodeError) as err:
        fail(args, f"--data {spec.name}: {err}")
    try:
        check_fits(dataset, context_len)
    except ValueError as err:
        fail(args, str(err))
    return dataset


def data_spec(args):
    from minimolkv import train
    try:
        return train.DataSpec(name=args.data, tokenizer=args.tokenizer, vocab_size=args.vocab,
                              seed=getattr(args, "seed", None) or 0)
    except (TypeError, ValueError) as err:
        fail(args, f"--data: {err}")


def largest_vocab(args):
    """The vocabulary the data can have, before loading it: BPE and synthetic data have at
    most --vocab ids, bytes 256. Used to refuse sizes that cannot fit before any work."""
    return 256 if args.tokenizer == "byte" and args.data != "synthetic" else args.vocab


def cmd_train(args):
    import dataclasses

    from minimolkv import checkpoint, train
    from minimolkv.params import format_counts
    from minimolkv.tools import plots

    if args.resume:
        extra = sorted(args.given - {"resume", "steps", "out", "overwrite"})
        if extra:
            fail(args, f"--resume continues the run as it was saved: drop --{extra[0].replace('_', '-')} "
                       "(only --steps, --out and --overwrite go with --resume)")
        try:
            run = checkpoint.load(args.resume)
        except (FileNotFoundError, ValueError) as err:
            fail(args, str(err))
        if args.steps is not None:
            if args.steps < run["step"]:
                fail(args, f"--steps {args.steps} is behind the checkpoint (step {run['step']}); "
                           f"give --steps >= {run['step']}")
            run["settings"] = dataclasses.replace(run["settings"], steps=args.steps)
        out = args.out or args.resume
        check_memory(args, run["config"], run["settings"].batch_size, run["settings"].dtype)
        check_out(args, out, resume=args.resume)
        print(f"Resuming {args.resume} at step {run['step']} -> {run['settings'].steps}")
        dataset = load_data(args, run["data"], run["config"].context_len)
        try:
            checkpoint.check_same_tokenizer(run, dataset)
        except ValueError as err:
            fail(args, str(err))
    else:
        settings = settings_from_args(args)                      # bad options fail before any work
        largest = config_from_args(args, args.parser, vocab_size=largest_vocab(args))
        check_memory(args, largest, settings.batch_size, settings.dtype)
        spec = data_spec(args)
        out = args.out or os.path.join("runs", f"{args.kind}-{os.path.basename(str(args.data))}")
        check_out(args, out)
        print(f"Loading data: {args.data} ...", flush=True)
        dataset = load_data(args, spec, largest.context_len)
        config = config_from_args(args, args.parser, vocab_size=dataset.tokenizer.vocab_size)
        run = train.new_run(config, settings, spec, dataset)
    if args.overwrite and not (args.resume and os.path.abspath(out) == os.path.abspath(args.resume)):
        clear_old_run(out)                                       # every check passed: now replace it
    print(dataset.description)
    print(format_counts(run["config"]))
    print(f"Training {run['settings'].steps} steps of {run['settings'].batch_size} x "
          f"{run['config'].context_len} tokens; checkpoints in {out}/", flush=True)
    try:
        train.train(run, dataset, out_dir=out, log=lambda line: print(line, flush=True))
    except train.TrainingDiverged as err:
        print(f"{PROG} train: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(interrupted(run, out), file=sys.stderr)
        return 130
    plot = os.path.join(out, "loss.png")
    plots.loss_curves({run["config"].kind: run["metrics"]}, path=plot,
                      title=f"{run['config'].kind} on {run['data'].name}")
    final = run["metrics"][-1]
    seen = train.epochs(run, dataset)
    seen = "fresh batches from the stream" if seen is None else f"{seen:.2f} epochs of the training text"
    whole = final.get("full_val_loss")
    whole = "" if whole is None else f", {whole:.3f} on the whole validation split"
    print(f"\nFinal validation loss {final['val_loss']:.3f}{whole}, after {run['step']} steps "
          f"({seen}; {final['elapsed_s']:.0f} s this session).")
    text, _ = sample_text(run, run["prompt"], 60, 0.8, out, log=lambda note: print(note, file=sys.stderr))
    print(f"\nSample (temperature 0.8):\n{text}\n")
    print(f"Checkpoint: {out}/checkpoint.npz    Loss curve: {plot}")
    print(f"More samples: python -m minimolkv sample --checkpoint {out}")
    return 0


def interrupted(run, out):
    """The line Ctrl-C prints: where training stopped and how to go on. The folder is
    read too: Ctrl-C may have come just after a save committed, before the run noted it."""
    from minimolkv import checkpoint
    last, steps = run.get("last_checkpoint"), run["settings"].steps
    on_disk = checkpoint.holds_run(out)
    if isinstance(on_disk, int) and (last is None or (os.path.abspath(last["folder"]), last["step"])
                                     != (os.path.abspath(out), on_disk)):
        last = {"folder": out, "step": on_disk, "steps": steps}        # this run's save, just committed
    if last is None:
        return (f"interrupted at step {run['step']}, before the first checkpoint (due at step "
                f"{min(run['settings'].eval_every, steps)}); nothing was saved")
    again = f"{PROG} train --resume {last['folder']}"
    if last["steps"] != steps:                                          # resumed with a new --steps
        again += f" --steps {steps}"
    if os.path.abspath(last["folder"]) != os.path.abspath(out):
        again += f" --out {out}"
    return (f"interrupted at step {run['step']}; the last checkpoint (step {last['step']}) is in "
            f"{last['folder']}; continue with: {again}")


def sample_text(run, prompt, n_tokens, temperature, folder, seed=0, top_k=None, on_text=None, log=None):
    """Generate from a trained run, MoLE/MoLKV from lookup tables on disk (built once).
    -> (text, luts). on_text(piece) receives the text of each new token as it comes."""
    import numpy as np

    from minimolkv import checkpoint
    from minimolkv.generate import generate
    from minimolkv.tokenizer import text_pieces

    params, config, tok = run["params"], run["config"], run["tokenizer"]
    luts = checkpoint.tables(folder, params, config, log=log)              # {} for dense and moe
    prompt_ids = np.asarray(tok.encode(prompt), dtype=np.int64)             # generate slides past the context
    on_token = None
    if on_text is not None:
        piece = text_pieces(tok)
        on_text(tok.decode(prompt_ids))
        on_token = lambda ids: on_text(piece(int(ids[0])))                  # noqa: E731
    ids = generate(params, config, prompt_ids, n_tokens, temperature=temperature, top_k=top_k,
                   seed=seed, luts=luts or None, on_token=on_token)
    if on_text is not None:
        on_text(piece(None))
    return tok.decode(ids), luts


def cmd_sample(args):
    from minimolkv import checkpoint
    from minimolkv.files import format_bytes

    if args.tokens > MAX_SAMPLE_TOKENS:
        fail(args, f"--tokens {args.tokens:,} is more than this command generates (at most "
                   f"{MAX_SAMPLE_TOKENS:,}); use several runs with --seed")
    try:
        run = checkpoint.load(args.checkpoint)
    except (FileNotFoundError, ValueError) as err:
        fail(args, str(err))
    prompt = run["prompt"] if args.prompt is None else args.prompt
    if not prompt.strip():
        fail(args, "--prompt is empty; give some text to continue (or leave --prompt out)")
    try:
        run["tokenizer"].encode(prompt)
    except (ValueError, TypeError) as err:
        fail(args, f"--prompt cannot be encoded by this checkpoint's tokenizer: {err}")
    show = lambda text: print(text, end="", flush=True)                      # noqa: E731  tokens as they come
    try:
        _, luts = sample_text(run, prompt, args.tokens, args.temperature, args.checkpoint, seed=args.seed,
                              top_k=args.top_k, on_text=show, log=lambda note: print(note, file=sys.stderr))
    except (ValueError, TypeError, FileNotFoundError) as err:
        fail(args, str(err))
    except KeyboardInterrupt:
        print(flush=True)                                  # end the streamed line before main's note
        raise
    print()
    if luts:
        read = sum(t.bytes_read for t in luts.values())
        tokens = next(iter(luts.values())).tokens_read
        where = "on disk" if next(iter(luts.values())).on_disk else "in memory"
        print(f"[lookup tables: {format_bytes(sum(t.nbytes for t in luts.values()))} {where}; read "
              f"{format_bytes(read)} for {tokens} token lookups per layer, "
              f"{format_bytes(read / max(tokens, 1))} per token]")
    return 0


# ----------------------------------------------------------------------------
# compare
# ----------------------------------------------------------------------------

def cmd_compare(args):
    import dataclasses

    from minimolkv import train
    from minimolkv.files import writable_folder
    from minimolkv.tools import compare

    base = config_from_args(args, args.parser)
    settings = settings_from_args(args)
    for entry in args.entries:                                   # every entry's config, before any work
        try:
            config = compare.config_for(entry, dataclasses.replace(base, vocab_size=largest_vocab(args)))
        except (TypeError, ValueError) as err:
            fail(args, f"the sizes given leave the entry {entry!r} invalid: {err}")
        check_memory(args, config, settings.batch_size, settings.dtype)
    for option, folder in (("--out", args.out), ("--save-params", args.save_params)):
        if folder is not None:
            try:
                writable_folder(folder, option)
            except ValueError as err:
                fail(args, str(err))
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
    from minimolkv.tools import bench, bench_report

    quick = {k: v for k, v in bench.QUICK_SIZES.items() if args.quick and getattr(args, k) is None}
    config = config_from_args(args, args.parser, **quick)
    print(f"Benchmarking {', '.join(args.kinds)}{' (quick, tiny sizes)' if args.quick else ''}; "
          "this takes about a minute without --quick.", flush=True)
    results = bench.run(config, bench.QUICK if args.quick else bench.BenchSettings(), kinds=args.kinds,
                        log=lambda line: print(line, flush=True))
    print("\n" + bench_report.format_report(results))
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

    p = sub.add_parser("train", help="train a tiny model (default: MoLKV on the stdlib corpus)",
                       description="Train a tiny language model, print progress, save checkpoints, "
                                   "a loss curve and a sample. With no options: the default MoLKV "
                                   "model on the built-in corpus, a few minutes on a laptop CPU.")
    add_config_args(p, with_vocab=False)
    add_training_args(p)
    p.add_argument("--seed", type=non_negative_int, default=None, help="default 0")
    p.add_argument("--out", default=None, metavar="DIR", help="output folder (default runs/<kind>-<data>)")
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
                                   "the whole validation split, 95%% intervals, paired differences "
                                   "to MoLE) and a plot of validation curves. docs/experiments.md "
                                   "has the protocol.")
    add_config_args(p, with_kind=False, with_vocab=False)
    add_training_args(p)
    p.add_argument("--seeds", type=positive_int, default=3, metavar="K", help="seeds per kind (default 3)")
    p.add_argument("--entries", nargs="+", choices=compare_entries(), default=list(compare_entries()),
                   metavar="ENTRY", help=f"what to train (default all: {' '.join(compare_entries())})")
    p.add_argument("--out", default="runs/compare", metavar="DIR", help="where the tables and plot go")
    p.add_argument("--save-params", default=None, metavar="DIR",
                   help="also keep every run's final parameters here (<entry>-seed<k>.npz)")
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
    args.given = {k for k, v in vars(args).items()                      # the options typed
                  if v not in (None, False) and k not in ("func", "parser", "argv", "command")}
    for name, value in DEFAULTS.items():
        if getattr(args, name, "absent") is None:
            setattr(args, name, value)
    try:
        return args.func(args)
    except KeyboardInterrupt:                        # train prints its own line (where to resume)
        print(f"{PROG} {args.command}: interrupted", file=sys.stderr)
        return 130
    except MemoryError as err:                       # the estimates refuse most of these up front
        print(f"{PROG} {args.command}: error: out of memory ({err}); use smaller sizes", file=sys.stderr)
        return 2
    except BrokenPipeError:                          # e.g. `sample ... | head`: the reader left
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())   # no error at exit either
        return 0


if __name__ == "__main__":
    sys.exit(main())
