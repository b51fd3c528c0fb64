"""Step through one MoLKV block in a debugger, on weights that have learned something.

    python examples/step_through_molkv.py           # runs through, prints the shapes it met
    python examples/step_through_molkv.py --pdb     # stops just before molkv.forward, in pdb
    python examples/step_through_molkv.py --pdb --steps 5   # trains only 5 steps (the tests do)

Freshly initialised weights make every attention weight about equal, which
teaches little in a debugger. So the script first trains the default MoLKV
model, variant "recency" (its weights fall off with distance, so they are far
from uniform), for a short while on Shakespeare (about 15 s; cached in a
temporary folder for the next time), takes the hidden state h and the embeddings e that
reach layer 0's MoLKV block for one line of verse, and then calls
molkv.forward and molkv.backward on them: the calls to step into.

docs/debugging.md says where to break, what to watch, and how to step over
NumPy's internals (with --pdb the debugger already skips numpy and
minimolkv.validate*, so `s` only stops in the math). tests/test_debugging.py
drives that walkthrough through pdb, so the document and the code cannot drift apart.
"""

import argparse
import os
import tempfile

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")   # small matrices: one BLAS thread is fastest

import numpy as np  # noqa: E402

from minimolkv import checkpoint, memory, model, molkv, train  # noqa: E402

LINE = "To be, or not to be, that is the question:"


def trained_model(steps=300):
    """The default MoLKV model, variant recency, after `steps` steps on Shakespeare (kept in a
    temporary folder per number of steps)."""
    cache = os.path.join(tempfile.gettempdir(), f"minimolkv-example-molkv-{steps}")
    try:
        run = checkpoint.load(cache)
        if run.step == steps:
            return run
    except (FileNotFoundError, ValueError):
        pass
    spec = train.DataSpec("shakespeare")
    dataset = spec.load()
    config = model.Config(vocab_size=dataset.tokenizer.vocab_size, variant="recency")   # otherwise the defaults
    run = train.new_run(config, train.Settings(steps=steps, eval_every=steps), spec, dataset)
    print(f"training {steps} steps of the default MoLKV model (variant recency) on Shakespeare, once ...")
    return train.train(run, dataset, out_dir=cache, log_every=100)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pdb", action="store_true", help="stop in pdb just before molkv.forward")
    parser.add_argument("--steps", type=int, default=300, help="training steps before (default 300)")
    args = parser.parse_args(argv)
    memory.keep_freed_memory()                                                # no page-fault storms (memory.py)
    run = trained_model(args.steps)
    params, config, tok = run.params, run.config, run.tokenizer
    ids = tok.encode(LINE)[None]                                              # (1,T) one line of verse
    _, _, cache = model.forward(params, config, ids)                          # the whole model, once
    xhat, rstd, w = cache.layers[0].ln2_cache                                       # h = rmsnorm(x, ln2) of layer 0
    h = xhat * w                                                              # (1,T,D) what the query reads
    e = params["tok_emb"][ids]                                                # (1,T,D) what the experts read
    block = model.layer_params(params, config.n_layers)[0]["molkv"]           # norm, query, up, down_k, down_v
    dy = np.random.default_rng(0).standard_normal(h.shape).astype(h.dtype)    # an upstream gradient

    if args.pdb:
        import pdb
        print("\nStopped before molkv.forward. Try:  s  (into forward),  n  (line by line),  "
              "p e.shape  ... docs/debugging.md has the tour.")
        pdb.Pdb(skip=["numpy.*", "minimolkv.validate*"]).set_trace()
    y, cache = molkv.forward(block, h, e, window=config.window, variant=config.variant)   # (1,T,D)
    dh, de, grads = molkv.backward(dy, cache)                                            # (1,T,D) x2, grads

    P = cache.attend.P[0]                                                     # (T,T,N) attention weights
    tokens = [tok.decode([i]) for i in ids[0]]
    t = len(tokens) - 1
    own = P[t, t].sum()
    print(f"h {h.shape}, e {e.shape} -> y {y.shape}; P {cache.attend.P.shape}")
    print(f"the last token {tokens[t]!r} gives its own experts weight {own:.2f}; its three heaviest "
          "(position, expert) pairs: " + ", ".join(
              f"{tokens[j]!r}/expert {n} {P[t, j, n]:.2f}"
              for j, n in zip(*np.unravel_index(np.argsort(P[t].ravel())[::-1][:3], P[t].shape))))
    print("gradients:", {k: g.shape for k, g in grads.items()})


if __name__ == "__main__":
    main()
