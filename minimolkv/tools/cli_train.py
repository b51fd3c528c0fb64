"""The train and sample commands (python -m minimolkv train | sample).

Everything a user can get wrong is refused before any work, in one line (exit 2):
the sizes against the machine's RAM, an --out that cannot be written or already
holds another run, data shorter than the context. Ctrl-C leaves the last
checkpoint and says how to continue (exit 130).
"""

import os
import sys

from minimolkv.tools.options import config_from_args, settings_from_args
from minimolkv.tools.progress import Progress


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

    from minimolkv import checkpoint, lut
    for name in checkpoint.FILES + ("loss.png",):
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            os.remove(path)
    for entry in os.listdir(folder):
        if lut.is_tables_dir(os.path.join(folder, entry)):
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
        return train.DataSpec(name=args.data, tokenizer=args.tokenizer, vocab_size=args.vocab)
        # (the synthetic task's own seed stays 0: --seed sets the initialisation and the batch
        # order only, as in compare, so runs of different seeds train on the same task)
    except (TypeError, ValueError) as err:
        fail(args, f"--data: {err}")


def largest_vocab(args):
    """The vocabulary the data can have, before loading it: BPE and synthetic data have at
    most --vocab ids, bytes 256. Used to refuse sizes that cannot fit before any work."""
    return 256 if args.tokenizer == "byte" and args.data != "synthetic" else args.vocab


def default_out(config, data):
    """runs/<kind>-<data>, and runs/molkv-<variant>-<data> for MoLKV: the folder names the
    variant, since compare's entry "molkv" means joint and train's default is recency."""
    kind = f"molkv-{config.variant}" if config.kind == "molkv" else config.kind
    return os.path.join("runs", f"{kind}-{os.path.basename(str(data))}")


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
            if args.steps < run.step:
                fail(args, f"--steps {args.steps} is behind the checkpoint (step {run.step}); "
                           f"give --steps >= {run.step}")
            run.settings = dataclasses.replace(run.settings, steps=args.steps)
        out = args.out or args.resume
        check_memory(args, run.config, run.settings.batch_size, run.settings.dtype)
        check_out(args, out, resume=args.resume)
        print(f"Resuming {args.resume} at step {run.step} -> {run.settings.steps}")
        dataset = load_data(args, run.data, run.config.context_len)
        try:
            checkpoint.check_same_tokenizer(run, dataset)
        except ValueError as err:
            fail(args, str(err))
    else:
        settings = settings_from_args(args)                      # bad options fail before any work
        largest = config_from_args(args, args.parser, vocab_size=largest_vocab(args))
        check_memory(args, largest, settings.batch_size, settings.dtype)
        spec = data_spec(args)
        out = args.out or default_out(largest, args.data)
        check_out(args, out)
        print(f"Loading data: {args.data} ...", flush=True)
        dataset = load_data(args, spec, largest.context_len)
        config = config_from_args(args, args.parser, vocab_size=dataset.tokenizer.vocab_size)
        run = train.new_run(config, settings, spec, dataset)
    if args.overwrite and not (args.resume and os.path.abspath(out) == os.path.abspath(args.resume)):
        clear_old_run(out)                                       # every check passed: now replace it
    print(dataset.description)
    print(format_counts(run.config))
    print(f"Training {run.settings.steps} steps of {run.settings.batch_size} x "
          f"{run.config.context_len} tokens; checkpoints in {out}/", flush=True)
    progress = Progress(sys.stdout)                              # one moving line in a terminal
    try:
        train.train(run, dataset, out_dir=out, log=progress.keep, status=progress.update)
    except train.TrainingDiverged as err:
        progress.close()
        print(f"{PROG} train: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        progress.close()
        print(interrupted(run, out), file=sys.stderr)
        return 130
    plot = os.path.join(out, "loss.png")
    plots.loss_curves({run.config.kind: run.metrics}, path=plot,
                      title=f"{run.config.kind} on {run.data.name}")
    final = run.metrics[-1]
    seen = train.epochs(run, dataset)
    seen = "fresh batches from the stream" if seen is None else f"{seen:.2f} epochs of the training text"
    whole = final.get("full_val_loss")
    whole = "" if whole is None else f", {whole:.3f} on the whole validation split"
    print(f"\nFinal validation loss {final['val_loss']:.3f}{whole}, after {run.step} steps "
          f"({seen}; {final['elapsed_s']:.0f} s this session).")
    text, _ = sample_text(run, run.prompt, 60, 0.8, out, log=lambda note: print(note, file=sys.stderr))
    print(f"\nSample (temperature 0.8):\n{text}\n")
    print(f"Checkpoint: {out}/checkpoint.npz    Loss curve: {plot}")
    print(f"More samples: python -m minimolkv sample --checkpoint {out}")
    return 0


def interrupted(run, out):
    """The line Ctrl-C prints: where training stopped and how to go on. The folder is
    read too: Ctrl-C may have come just after a save committed, before the run noted it."""
    from minimolkv import checkpoint
    last, steps = run.last_checkpoint, run.settings.steps
    on_disk = checkpoint.holds_run(out)
    if isinstance(on_disk, int) and (last is None or (os.path.abspath(last["folder"]), last["step"])
                                     != (os.path.abspath(out), on_disk)):
        last = {"folder": out, "step": on_disk, "steps": steps}        # this run's save, just committed
    if last is None:
        return (f"interrupted at step {run.step}, before the first checkpoint (due at step "
                f"{min(run.settings.eval_every, steps)}); nothing was saved")
    again = f"{PROG} train --resume {last['folder']}"
    if last["steps"] != steps:                                          # resumed with a new --steps
        again += f" --steps {steps}"
    if os.path.abspath(last["folder"]) != os.path.abspath(out):
        again += f" --out {out}"
    return (f"interrupted at step {run.step}; the last checkpoint (step {last['step']}) is in "
            f"{last['folder']}; continue with: {again}")


def sample_text(run, prompt, n_tokens, temperature, folder, seed=0, top_k=None, on_text=None, log=None):
    """Generate from a trained run, MoLE/MoLKV from lookup tables on disk (built once).
    -> (text, luts). on_text(piece) receives the text of each new token as it comes."""
    import numpy as np

    from minimolkv import lut
    from minimolkv.generate import generate
    from minimolkv.tokenizer import text_pieces

    params, config, tok = run.params, run.config, run.tokenizer
    luts = lut.tables(folder, params, config, log=log)              # {} for dense and moe
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
    prompt = run.prompt if args.prompt is None else args.prompt
    if not prompt.strip():
        fail(args, "--prompt is empty; give some text to continue (or leave --prompt out)")
    try:
        run.tokenizer.encode(prompt)
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
