"""minimolkv — MoLE and MoLKV expert layers in NumPy, every gradient by hand.

Read in this order (docs/design.md has the whole map and the pinned math):
    validate   input validation, under `if check:` at each public entry (validate_run: model, runs)
    ops        primitives as forward/backward pairs (linear, rmsnorm, gelu, softmax, per-expert
               matmuls, the expert hidden layer, score_offset);  kvbuffer: decoding caches
    attention, ffn, moe, mole, molkv, ctxattn
               the blocks, one interface: forward/backward, build_lut, forward_lut, decode_step
    model      Config, init, forward, backward (blocks called by name), build_luts
    generate   decoding with the KV caches;  lut, params: tables on disk, parameter accounting
    tokenizer, corpora, data, optim, run, train, checkpoint, memory, files   training, runs on disk
    gradcheck, gradcheck_layers   the numerical gradient checks and their report
    tools/     command line, benchmark, comparison (experiment E1), plots
"""

__version__ = "0.2.0"
