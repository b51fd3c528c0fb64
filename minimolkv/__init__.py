"""minimolkv — MoLE and MoLKV expert layers in NumPy, every gradient by hand.

Modules (one concept each):
    ops        primitives as forward/backward pairs
    gradcheck  numerical gradient checks and their per-tensor report
    mole       the Mixture of Lookup Experts block
    molkv      the Mixture of Lookup Key-Value Experts block
    lut        lookup tables in memory and on disk
"""

__version__ = "0.1.0"
