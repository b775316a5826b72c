"""Secure comparisons returning arithmetic 0/1 sharings (usable in arithmetic).

All comparisons reduce to the sign of a difference (:func:`~concilium.ops.conversion.msb`)
or a zero test (:func:`~concilium.ops.conversion.is_zero`), then inject the
bit into the ring. Costs per element (rep3, busiest party; see
``docs/ops-library.md``):

| comparison | rounds | bytes, under 12288 elements: party 0 / others | bytes, balanced |
|---|---|---|---|
| ``less_than`` (bounded) | 9 | 49 / 33 | 38.3 |
| ``less_than`` (full range) | 11 | 115 / 83 | 91.1 |
| ``equal`` | 8 | 34 / 18 | 23.3 |

From 12288 elements on (3 x 4096) the one-round inputs of the conversions
rotate over three slices, so every party sends the same ("balanced").

**Range.** With ``full_range=False`` (fixed point) the difference ``x - y``
must lie in ``[-2^63, 2^63)``; fixed-point values within the codec's range
(``|x| < 2^31``, ring values below ``2^47``) always satisfy this. With
``full_range=True`` (integers) the result is exact for any two signed 64-bit
values: the sign of ``x - y`` is corrected for overflow from the signs of
``x`` and ``y`` (three sign extractions in one batch and one bit AND).

Reveals: nothing.
"""

from __future__ import annotations

import numpy as np

from concilium.mpc.backend import Backend, Shares, align, broadcast_shape, value_shape
from concilium.ops.conversion import and_bits, is_zero, msb
from concilium.ring.arithmetic import RING_DTYPE

__all__ = [
    "between",
    "broadcast_pair",
    "equal",
    "greater_equal",
    "greater_than",
    "less_equal",
    "less_than",
    "less_than_bits",
    "less_than_zero",
    "logical_not",
    "not_equal",
]

_ONE = np.uint64(1)


def broadcast_pair(x: Shares, y: Shares) -> tuple[Shares, Shares]:
    """Both sharings broadcast to their common value shape (contiguous copies).
    Local. Reveals: nothing."""
    shape = broadcast_shape(value_shape(x), value_shape(y))

    def full(shares: Shares) -> Shares:
        aligned = align(shares, len(shape))
        return np.ascontiguousarray(np.broadcast_to(aligned, (shares.shape[0], *shape)))

    return full(x), full(y)


def logical_not(backend: Backend, bit: Shares) -> Shares:
    """``1 - bit`` for an arithmetic 0/1 sharing. Local. Reveals: nothing."""
    return backend.add_public(backend.neg(bit), np.asarray(1, dtype=RING_DTYPE))


def less_than_zero(backend: Backend, x: Shares) -> Shares:
    """``[x < 0]`` for signed ``x``.

    Reveals: nothing.
    """
    return backend.bit_inject(msb(backend, x))


def less_than_bits(backend: Backend, x: Shares, y: Shares, full_range: bool) -> Shares:
    """Boolean ``[x < y]`` in bit 0 of each word. Reveals: nothing."""
    x, y = broadcast_pair(x, y)
    difference = backend.sub(x, y)
    if not full_range:
        return msb(backend, difference)
    signs = msb(backend, np.stack([difference, x, y], axis=1))
    sign_d, sign_x, sign_y = signs[:, 0], signs[:, 1], signs[:, 2]
    # x < y  <=>  sign(x - y) unless x - y overflowed, i.e. unless the signs of x
    # and y differ and the difference has the other sign than x
    overflow = and_bits(backend, sign_x ^ sign_y, sign_d ^ sign_x)
    return sign_d ^ overflow


def less_than(backend: Backend, x: Shares, y: Shares, *, full_range: bool = False) -> Shares:
    """``[x < y]`` (signed), broadcasting.

    Reveals: nothing.
    """
    return backend.bit_inject(less_than_bits(backend, x, y, full_range))


def greater_than(backend: Backend, x: Shares, y: Shares, *, full_range: bool = False) -> Shares:
    """``[x > y]``. Reveals: nothing."""
    return less_than(backend, y, x, full_range=full_range)


def less_equal(backend: Backend, x: Shares, y: Shares, *, full_range: bool = False) -> Shares:
    """``[x <= y]``. Reveals: nothing."""
    return logical_not(backend, less_than(backend, y, x, full_range=full_range))


def greater_equal(backend: Backend, x: Shares, y: Shares, *, full_range: bool = False) -> Shares:
    """``[x >= y]``. Reveals: nothing."""
    return logical_not(backend, less_than(backend, x, y, full_range=full_range))


def equal(backend: Backend, x: Shares, y: Shares) -> Shares:
    """``[x == y]``, exact for all 64-bit values.

    Reveals: nothing.
    """
    x, y = broadcast_pair(x, y)
    return backend.bit_inject(is_zero(backend, backend.sub(x, y)))


def not_equal(backend: Backend, x: Shares, y: Shares) -> Shares:
    """``[x != y]``. Reveals: nothing."""
    return logical_not(backend, equal(backend, x, y))


def between(backend: Backend, x: Shares, low: Shares, high: Shares, *,
            full_range: bool = False) -> Shares:
    """``[low <= x <= high]`` (inclusive): both comparisons in one batch.

    Reveals: nothing.
    """
    shape = broadcast_shape(value_shape(x), value_shape(low), value_shape(high))
    components = x.shape[0]

    def full(shares: Shares) -> Shares:
        return np.broadcast_to(align(shares, len(shape)), (components, *shape))

    left = np.stack([full(x), full(high)], axis=1)
    right = np.stack([full(low), full(x)], axis=1)
    outside = less_than_bits(backend, left, right, full_range)  # x < low, high < x
    flipped = backend.xor_public(outside, np.asarray(_ONE))
    inside = and_bits(backend, flipped[:, 0], flipped[:, 1])
    return backend.bit_inject(inside)
