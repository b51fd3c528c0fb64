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
DATA_BYTES_PER_BYTE = 12                # reading --data: its bytes, the text, int64 ids (8 per byte at worst)


def fail(args, message):
    """One line on stderr naming the command, exit code 2 (as argparse does for bad options)."""
    args.parser.error(message)


OURS = ("checkpoint.npz", "config.json", "metrics.csv", "loss.png")    # the files train writes in --out


def check_out(args, out, resume=None):
    """--out must be a folder we can write, not in use by another process (its lock is
    taken here and held to the end), and must hold neither another run nor files of the
    names train writes that no run wrote -- unless --overwrite. Checked before any work."""
    from minimolkv import checkpoint
    from minimolkv.files import folder_lock, writable_folder
    try:
        writable_folder(out, "--out")
        args.cleanup.enter_context(folder_lock(out, "--out"))            # one writer per run folder
    except ValueError as err:
        fail(args, str(err))
    if resume is not None and same_folder(out, resume) or args.overwrite:
        return
    step = checkpoint.holds_run(out)
    if step is not None:
        fail(args, f"--out {out!r} already holds a run (step {step}); continue it with --resume {out}, "
                   "choose another --out, or add --overwrite to replace it")
    theirs = [name for name in OURS if os.path.lexists(os.path.join(out, name))]
    if theirs:
        fail(args, f"--out {out!r} holds {', '.join(theirs)} but no run of train: these would be "
                   "overwritten; choose another --out, or add --overwrite to replace them")


def same_folder(a, b):
    """Do two folder names name one folder (through symlinks, ./ and ../ too)?"""
    return os.path.realpath(a) == os.path.realpath(b)


def clear_old_run(folder):
    """--overwrite, once the new run's first checkpoint is committed: remove what is left
    of the old run (its copies config.json and metrics.csv, which the save writes anew
    next, its loss curve and lookup tables), so the folder never mixes two runs, not even
    after a kill between the two. Until then the old run is whole."""
    import shutil

    from minimolkv import lut
    for name in OURS[1:]:
        if os.path.isfile(os.path.join(folder, name)):
            os.remove(os.path.join(folder, name))
    for entry in os.listdir(folder):
        if lut.is_tables_dir(os.path.join(folder, entry)):
            shutil.rmtree(os.path.join(folder, entry))


def kept(run, out):
    """What is on disk for the user when a run stops early: the last checkpoint, or the
    old run --overwrite has not yet replaced, or nothing."""
    last = run.last_checkpoint
    if last:
        return f"the last checkpoint (step {last['step']}) in {last['folder']!r} is intact"
    if run.on_first_save is not None:
        return f"the run already in {out!r} is unchanged"
    return "nothing was saved"


def save_failed(run, out, err):
    """The one line for an OS error while saving: the path, the cause, what to do, what is intact."""
    import errno
    todo = {errno.ENOSPC: "free some disk space", errno.EDQUOT: "free some of your disk quota",
            errno.EFBIG: "raise the file-size limit (ulimit -f) or use smaller sizes",
            errno.EACCES: "check the folder's permissions", errno.EPERM: "check the folder's permissions",
            errno.EROFS: "give an --out on a writable disk"}.get(err.errno, "check the folder and the disk")
    where = err.filename or out
    return f"cannot write {os.fspath(where)!r} ({err.strerror or err}); {todo}; {kept(run, out)}"


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
    from minimolkv import memory
    from minimolkv.data import check_fits
    from minimolkv.files import format_bytes
    size, ram = os.path.getsize(spec.name) if os.path.isfile(spec.name) else 0, memory.ram_bytes()
    if ram and DATA_BYTES_PER_BYTE * size > ram:                     # before reading a byte of it
        fail(args, f"--data {spec.name}: a {format_bytes(size)} file needs about "
                   f"{format_bytes(DATA_BYTES_PER_BYTE * size)} of memory to read and tokenize but this machine "
                   f"has {format_bytes(ram)} of RAM; use a smaller text file")
    try:
        dataset = spec.load()
    except (FileNotFoundError, ValueError, UnicodeDecodeError) as err:
        fail(args, f"--data {spec.name}: {err}")
    except MemoryError:                                  # a huge file under a memory limit
        fail(args, f"--data {spec.name}: out of memory while reading and tokenizing it"
                   + (f" ({size / 2**30:.1f} GiB file)" if size else "") + "; use a smaller text file")
    try:
        check_fits(dataset, context_len)
    except ValueError as err:
        fail(args, str(err))
    return dataset


def data_spec(args):
    """The DataSpec of the options; --tokenizer with synthetic data (ids already) and --vocab
    with the byte tokenizer (always 256 ids) mean nothing and are refused."""
    from minimolkv import train
    text = args.data != "synthetic"
    for option, pointless in (("tokenizer", not text), ("vocab", text and args.tokenizer == "byte")):
        if pointless and option in args.given:
            fail(args, f"--{option} means nothing " + ("for --data synthetic (its tokens are ids already)"
                                                       if option == "tokenizer" else
                                                       "with --tokenizer byte (always 256 ids)") + "; drop it")
    if text and args.tokenizer == "bpe" and args.vocab < 256:
        fail(args, f"--vocab {args.vocab}: a BPE vocabulary holds the 256 byte ids and its merges; give "
                   "--vocab >= 256 (or --tokenizer byte)")
    # (the synthetic task's own seed stays 0: --seed sets the initialisation and the batch
    # order only, as in compare, so runs of different seeds train on the same task)
    try:
        return train.DataSpec(name=args.data, tokenizer=args.tokenizer, vocab_size=largest_vocab(args))
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

    if args.resume is not None:
        extra = sorted(args.given - {"resume", "steps", "out", "overwrite"})
        if extra:
            fail(args, f"--resume continues the run as it was saved: drop --{extra[0].replace('_', '-')} "
                       "(only --steps, --out and --overwrite go with --resume)")
        if args.overwrite and same_folder(args.out or args.resume, args.resume):
            fail(args, "--overwrite means nothing when the run continues in its own folder (it replaces the "
                       "run in another --out); drop it")
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
        run.data = dataclasses.replace(run.data, digest=dataset.digest())     # (older runs have none)
    else:
        settings = settings_from_args(args)                      # bad options fail before any work
        largest = config_from_args(args, args.parser, vocab_size=largest_vocab(args))
        check_memory(args, largest, settings.batch_size, settings.dtype)
        spec = data_spec(args)
        out = args.out or default_out(largest, args.data)
        check_out(args, out)
        print(f"Loading data: {args.data} ...", flush=True)
        dataset = load_data(args, spec, largest.context_len)
        spec = dataclasses.replace(spec, digest=dataset.digest())        # resuming checks the data is the same
        config = config_from_args(args, args.parser, vocab_size=dataset.tokenizer.vocab_size)
        run = train.new_run(config, settings, spec, dataset)
    if args.overwrite and not (args.resume and same_folder(out, args.resume)):
        run.on_first_save = lambda: clear_old_run(out)        # the old run stays whole until then
    print(dataset.description)
    print(format_counts(run.config))
    print(f"Training {run.settings.steps} steps of {run.settings.batch_size} x "
          f"{run.config.context_len} tokens; checkpoints in {out}/", flush=True)
    progress = Progress(sys.stdout)                              # one moving line in a terminal
    try:
        train.train(run, dataset, out_dir=out, log=progress.keep, status=progress.update)
    except train.TrainingDiverged as err:
        progress.close()
        unchanged = f" The run already in {out!r} is unchanged." if run.on_first_save is not None else ""
        print(f"{PROG} train: error: {err}{unchanged}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        progress.close()
        print(interrupted(run, out), file=sys.stderr)
        return 130
    except OSError as err:                                       # a full disk, a file-size limit, ...
        print(f"{PROG} train: error: {save_failed(run, out, err)}", file=sys.stderr)
        return 2
    try:
        return report(run, dataset, out)
    except OSError as err:                                       # the plot or the tables: the run is saved
        print(f"{PROG} train: error: {save_failed(run, out, err)}", file=sys.stderr)
        return 2


def report(run, dataset, out):
    """After training: the loss curve, the final numbers and a sample."""
    from minimolkv import train
    from minimolkv.tools import plots

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
    on_disk = None if run.on_first_save is not None else checkpoint.holds_run(out)   # (else: the old run's)
    if isinstance(on_disk, int) and (last is None or (os.path.abspath(last["folder"]), last["step"])
                                     != (os.path.abspath(out), on_disk)):
        last = {"folder": out, "step": on_disk, "steps": steps}        # this run's save, just committed
    if last is None:
        return (f"interrupted at step {run.step}, before the first checkpoint (due at step "
                f"{min(run.settings.eval_every, steps)}); {kept(run, out)}")
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
    if args.top_k is not None and (args.temperature == 0 or args.top_k > run.config.vocab_size):
        fail(args, f"--top-k {args.top_k} means nothing " + (
            "with --temperature 0 (greedy: always the most likely)" if args.temperature == 0 else
            f"for this model's {run.config.vocab_size} token ids") + "; drop it or give a smaller one")
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
