"""Shared test set-up.

Lessons and anything that trains run in fast mode under pytest, so the whole
suite stays within two minutes on a 2-core machine.
"""

import os
import tempfile

os.environ.setdefault("MINIMOLKV_FAST", "1")
# The tiny matmuls here run fastest on one BLAS thread; with several, OpenBLAS
# threads spin against each other (3-4x slower on a busy 2-core machine).
# Set before anything imports numpy; kernels started by the lesson tests inherit it.
for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")
os.environ.setdefault("MPLBACKEND", "Agg")
# The BPE encodings (data._encoded) are cached in a folder of this test session, not in
# ~/.cache: the tests neither depend on nor leave what an earlier run or version left there.
os.environ.setdefault("MINIMOLKV_CACHE", tempfile.mkdtemp(prefix="minimolkv-test-cache-"))
