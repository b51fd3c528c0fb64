"""kvbuffer.py: appends land where np.concatenate would put them, in bounded memory with a window."""

import numpy as np
import pytest

from minimolkv import kvbuffer, molkv
from minimolkv.gradcheck_layers import molkv_params


@pytest.mark.parametrize("keep", [None, 1, 3, 20])
@pytest.mark.parametrize("axis", [1, 2])
def test_appends_equal_concatenation_and_a_window_bounds_memory(axis, keep):
    rng = np.random.default_rng(0)
    shape = [2, 3, 4]
    shape[axis] = 1
    buffer, length, reference = None, 0, None
    for step in range(100):
        new = rng.standard_normal(shape)
        buffer, length = kvbuffer.append(buffer, length, new, axis=axis, keep=keep)
        reference = new if reference is None else np.concatenate([reference, new], axis=axis)
        want = reference if keep is None else np.take(reference, range(max(0, step + 1 - keep), step + 1), axis=axis)
        np.testing.assert_array_equal(kvbuffer.filled(buffer, length, axis=axis, keep=keep), want)
    capacity = buffer.shape[axis]
    assert capacity >= 100 if keep is None else capacity <= max(16, 4 * keep)


def test_long_windowed_decoding_equals_forward_lut():
    """Past the buffer's first capacity (16) the window moves the kept tokens to the front."""
    rng = np.random.default_rng(1)
    B, T, D, F, N, Dk, V = 2, 45, 6, 4, 3, 4, 13
    params = molkv_params(rng, D, F, N, Dk, "recency")
    emb, h = rng.standard_normal((V, D)), rng.standard_normal((B, T, D))
    ids = rng.integers(0, V, size=(B, T))
    luts = molkv.build_lut(params, emb)
    for window in (None, 3, 10):
        y_full = molkv.forward_lut(params, h, ids, luts, window=window, variant="recency")
        state, ys = None, []
        for t in range(T):
            y_t, state = molkv.decode_step(params, h[:, t], ids[:, t], luts, state, window=window,
                                           variant="recency")
            ys.append(y_t)
        np.testing.assert_allclose(np.stack(ys, axis=1), y_full, rtol=1e-12, atol=1e-13)
        if window is not None:
            assert state.k_buffer.shape[1] <= max(16, 4 * window)      # bounded by the window, not T
