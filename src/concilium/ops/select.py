"""Selection on secret conditions: ``where``, ``abs``, ``sign``, ``relu``, and
min/max/argmin/argmax along an axis with a log-depth tournament.

Conditions are arithmetic 0/1 sharings (as returned by
:mod:`concilium.ops.compare`); selecting costs one multiplication
(``b + c * (a - b)``). Fixed-point scaling is the caller's business: a 0/1
integer times a fixed-point value needs no truncation.

Reveals: nothing.
"""

from __future__ import annotations

import numpy as np

from concilium.errors import InputError
from concilium.mpc.backend import Backend, Shares, value_shape
from concilium.ops.compare import broadcast_pair, less_than, less_than_zero, logical_not
from concilium.ops.conversion import msb
from concilium.ring.arithmetic import RING_DTYPE

__all__ = ["absolute", "extreme", "relu", "sign", "where"]

_ONE = np.asarray(1, dtype=RING_DTYPE)


def where(backend: Backend, condition: Shares, a: Shares, b: Shares) -> Shares:
    """``a`` where ``condition`` is 1, else ``b`` (broadcasting): one multiplication.

    Reveals: nothing.
    """
    a, b = broadcast_pair(a, b)
    return backend.add(b, backend.mul(condition, backend.sub(a, b)))


def absolute(backend: Backend, x: Shares) -> tuple[Shares, Shares]:
    """``(|x|, [x < 0])``: ``x * (1 - 2 [x < 0])``. ``|-2^63|`` wraps to ``-2^63``.

    Reveals: nothing.
    """
    negative = less_than_zero(backend, x)
    factor = backend.add_public(backend.mul_public(negative, np.asarray(-2).astype(RING_DTYPE)),
                                _ONE)
    return backend.mul(x, factor), negative


def sign(backend: Backend, x: Shares) -> Shares:
    """``-1``, ``0`` or ``1`` (``sign(-2^63)`` is 0: ``-x`` wraps to ``x``).

    Reveals: nothing.
    """
    bits = backend.bit_inject(msb(backend, np.stack([x, backend.neg(x)], axis=1)))
    return backend.sub(bits[:, 1], bits[:, 0])


def relu(backend: Backend, x: Shares) -> Shares:
    """``max(x, 0)``: ``x * (1 - [x < 0])``.

    Reveals: nothing.
    """
    return backend.mul(x, logical_not(backend, less_than_zero(backend, x)))


def extreme(backend: Backend, x: Shares, axis: int, *, largest: bool,
            full_range: bool) -> tuple[Shares, Shares]:
    """The minimum (or maximum) along value axis ``axis`` and its first index, by a
    tournament of ``ceil(log2 n)`` levels; each level compares adjacent pairs and
    selects value and index with one multiplication, so ties keep the earlier
    element, as numpy does.

    Reveals: nothing (the tournament's shape depends only on the public length).
    """
    values = np.moveaxis(x, axis % (x.ndim - 1) + 1, -1)
    count = values.shape[-1]
    if count == 0:
        raise InputError("the minimum or maximum of an empty axis is undefined")
    public_index = np.broadcast_to(np.arange(count, dtype=RING_DTYPE), value_shape(values))
    index = backend.share_public(np.ascontiguousarray(public_index))
    while values.shape[-1] > 1:
        length = values.shape[-1]
        pairs = length // 2
        a, b = values[..., 0:2 * pairs:2], values[..., 1:2 * pairs:2]
        ia, ib = index[..., 0:2 * pairs:2], index[..., 1:2 * pairs:2]
        take_b = less_than(backend, a, b, full_range=full_range) if largest else less_than(
            backend, b, a, full_range=full_range)
        delta = np.stack([backend.sub(b, a), backend.sub(ib, ia)], axis=1)
        chosen = backend.add(np.stack([a, ia], axis=1), backend.mul(take_b[:, None], delta))
        if length % 2:  # the odd one out goes on to the next level, last
            values = np.concatenate([chosen[:, 0], values[..., -1:]], axis=-1)
            index = np.concatenate([chosen[:, 1], index[..., -1:]], axis=-1)
        else:
            values, index = chosen[:, 0], chosen[:, 1]
    return values[..., 0], index[..., 0]
