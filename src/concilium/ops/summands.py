"""An arithmetic sharing as two boolean-shared summands, for any number of summands.

A backend gives either two summands directly (:meth:`Backend.boolean_pair`:
``rep3``, two-party ``additive``) or one per party
(:meth:`Backend.boolean_summands`: ``additive`` with ``n > 2`` parties). Many
summands are reduced to two by layers of carry-save adders (Wallace, "A
Suggestion for a Fast Multiplier", 1964): three words ``a, b, c`` become ``s = a
^ b ^ c`` and the carry ``maj(a, b, c) << 1``, with ``maj(a, b, c) = ((a ^ b) &
(a ^ c)) ^ a`` (one AND of words per three summands, all of a layer in one
round). ``n`` summands take ``ceil(log_1.5(n / 2))`` layers: one for three
parties, two for four, three for five.

The difference form (``u - v = x``, for equality tests) needs no negation of a
boolean word: the summands of ``x - 1`` reduce to ``s + c = x - 1``, and ``u =
s``, ``v = ~c = -c - 1`` give ``u - v = s + c + 1 = x``.

Reveals: nothing.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from concilium.mpc.backend import Backend, Shares
from concilium.ring.arithmetic import RING_DTYPE, RingArray

__all__ = ["boolean_pair", "reduce_summands"]

_ONE = np.uint64(1)
_ONES = np.uint64(0xFFFFFFFFFFFFFFFF)


def reduce_summands(backend: Backend, summands: list[Shares]) -> tuple[Shares, Shares]:
    """Two boolean sharings whose sum mod 2^64 is the sum of ``summands`` (at least
    two), by layers of carry-save adders.

    Reveals: nothing.
    """
    words = list(summands)
    while len(words) > 2:
        groups = len(words) // 3
        a = np.stack(words[0:3 * groups:3])
        b = np.stack(words[1:3 * groups:3])
        c = np.stack(words[2:3 * groups:3])
        majority = backend.and_(a ^ b, a ^ c) ^ a
        rest = words[3 * groups:]
        words = [a[g] ^ b[g] ^ c[g] for g in range(groups)]
        words += [majority[g] << _ONE for g in range(groups)] + rest
    return words[0], words[1]


def boolean_pair(backend: Backend, x: Shares,
                 transform: Callable[[RingArray], RingArray] | None = None, *,
                 difference: bool = False) -> tuple[Shares, Shares]:
    """Boolean sharings ``(T(u), T(v))`` with ``u + v = x`` mod 2^64 (``u - v = x``
    with ``difference``), as :meth:`Backend.boolean_pair` states, for any backend.

    Reveals: nothing.
    """
    base = backend.add_public(x, np.asarray(_ONES)) if difference else x  # x - 1
    summands = backend.boolean_summands(base)
    if summands is None:
        return backend.boolean_pair(x, transform, difference=difference)
    u, v = reduce_summands(backend, summands)
    if difference:
        v = backend.xor_public(v, np.asarray(_ONES))
    if transform is None:
        return u, v
    return _apply(transform, u), _apply(transform, v)


def _apply(transform: Callable[[RingArray], RingArray], words: Shares) -> Shares:
    flat = np.require(words, dtype=RING_DTYPE, requirements="C").reshape(-1)
    return np.asarray(transform(flat), dtype=RING_DTYPE).reshape(words.shape)
