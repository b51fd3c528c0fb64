"""Append-only buffers for the decoding caches: O(1) work per new token.

A decoding cache grows by one position per token. np.concatenate([cache, new])
would copy the whole cache every step, O(t) for token t, which at a few
hundred tokens costs more than the attention itself. Real inference engines
preallocate instead; so do we, the way a Python list grows:

    buffer  an array with room for `capacity` positions along `axis`;
            positions [0, length) are filled, the rest is free
    append  writes the new position at `length`; when the buffer is full it
            is replaced by one twice as large (one copy, then free appends
            again: amortised O(1) per token)

With `keep` (MoLKV's window) only the last `keep` positions are ever read:
then a full buffer of at least 2·keep positions moves those to its front
instead of growing, so memory stays bounded by the window.

    filled(buffer, length, axis, keep)  -> the view of what may be read

The buffers are written in place: a decode state is meant to be stepped
forward once. To branch (try two next tokens from the same state), copy the
state's buffers first; views taken earlier may change when a window moves.
"""

import numpy as np


def append(buffer, length, new, axis, keep=None):
    """buffer (..., capacity on `axis`, ...) with `length` positions filled, or None
    at the first token; new: one position (size 1 on `axis`) -> (buffer, length + 1)."""
    if buffer is None:
        shape = list(new.shape)
        shape[axis] = 16                                      # room for 16 tokens to start with
        buffer, length = np.empty(shape, dtype=new.dtype), 0
    capacity = buffer.shape[axis]
    if length == capacity:                                    # full
        if keep is not None and capacity >= 2 * keep:         # only the last keep - 1 are still needed
            last = np.take(buffer, range(capacity - keep + 1, capacity), axis=axis)   # keep - 1 along axis
            length = keep - 1
            _region(buffer, axis, 0, length)[...] = last      # move them to the front
        else:                                                 # twice the room, one copy
            bigger = list(buffer.shape)
            bigger[axis] = 2 * capacity
            grown = np.empty(bigger, dtype=buffer.dtype)
            _region(grown, axis, 0, length)[...] = buffer
            buffer = grown
    _region(buffer, axis, length, length + 1)[...] = new      # the new position, in place
    return buffer, length + 1


def filled(buffer, length, axis, keep=None):
    """The readable positions of a buffer: [length - keep, length) with keep, else [0, length). A view."""
    start = 0 if keep is None else max(0, length - keep)
    return _region(buffer, axis, start, length)


def _region(buffer, axis, start, stop):
    """buffer[..., start:stop, ...] with the slice on `axis` (a view)."""
    index = [slice(None)] * buffer.ndim
    index[axis] = slice(start, stop)
    return buffer[tuple(index)]
