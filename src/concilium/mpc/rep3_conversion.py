"""Share conversions for ``rep3``: the local halves of A2B and B2A.

These are the protocol-specific parts of the conversions in
:mod:`concilium.ops.conversion`; the circuits (adders, comparison trees) are
written once in :mod:`concilium.ops` over ``and_``.

**Boolean pair** (ABY3, Mohassel and Rindal CCS 2018, Section 5.3, "bit
decomposition" with two summands). An arithmetic sharing ``x = x_0 + x_1 +
x_2`` becomes two *boolean* sharings ``U`` and ``V`` with ``U + V = x`` (or
``U - V = x``): party ``o`` holds ``x_o`` and ``x_(o+1)`` and XOR-shares their sum
as an input; ``x_(o+2)``, held by the other two parties, is already a valid
boolean sharing when placed in share component ``o + 2``. A bit permutation
may be applied to both words in the clear first (it is XOR-linear, so this is
the same as applying it to every share).

**Bit injection** (boolean bit to arithmetic 0/1). With ``b = b_0 ^ b_1 ^ b_2``,
party ``o`` computes ``t = b_o ^ b_(o+1)`` and shares it arithmetically;
``b_(o+2)`` is already an arithmetic sharing in its component; then
``b = t + b_(o+2) - 2 t b_(o+2)``: one input round and one multiplication.

**Balance.** Arrays of 12288 elements or more are cut into three slices and
party ``o`` plays the sharing role on slice ``o`` (:func:`concilium.mpc.rounds.slice_bounds`),
so every party sends the same: 8/3 bytes per element for a boolean pair, and
8/3 + 8 for a bit injection (8 and 16 for party 0 on smaller arrays). Every
party sends its input share before receiving any, so it stays one round.

Reveals: nothing; the only messages are input sharings masked by a stream the
receiver does not hold, and a multiplication's reshare.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from concilium.mpc.backend import Shares, value_shape
from concilium.mpc.randomness import Purpose
from concilium.mpc.replicated import ReplicatedParty
from concilium.mpc.rounds import slice_bounds
from concilium.ring.arithmetic import RING_DTYPE, RingArray

__all__ = ["bit_inject", "boolean_pair"]

_ONE = np.uint64(1)
Words = Callable[[RingArray], RingArray]


def _share_from_owners(backend: ReplicatedParty, flat: RingArray,
                       own: Callable[[RingArray, RingArray], RingArray],
                       outside: Words, boolean: bool) -> tuple[RingArray, RingArray]:
    """Per slice with owner ``o``: a sharing of ``own(x_o, x_(o+1))`` input by ``o``,
    and the sharing whose component ``o + 2`` is ``outside(x_(o+2))``, the rest zero."""
    size = flat.shape[1]
    tag = backend.next_tag()
    first = np.zeros_like(flat)
    second = np.zeros_like(flat)
    combine = np.bitwise_xor if boolean else np.subtract
    pending: list[tuple[int, int]] = []
    for owner, (start, stop) in enumerate(slice_bounds(size, 3)):
        part = slice(start, stop)
        role = (backend.index - owner) % 3
        if role == 0:  # owner: x_(o+1)' from the next key, sends x_o' = value - x_(o+1)'
            backend.randomness.next(tag, Purpose.INPUT).fill(first[1, part])
            combine(own(flat[0, part], flat[1, part]), first[1, part], out=first[0, part])
            backend.send(backend.peer(-1), tag, first[0, part])
        elif role == 1:  # x_(o+1)' from the previous key, x_(o+2)' = 0; x_(o+2) in slot 1
            backend.randomness.previous(tag, Purpose.INPUT).fill(first[0, part])
            second[1, part] = outside(flat[1, part])
        else:  # receives x_o' into slot 1 below; x_(o+2) is its slot 0
            pending.append((start, stop))
            second[0, part] = outside(flat[0, part])
    for start, stop in pending:  # every party has sent before anyone waits: one round
        first[1, start:stop] = backend.receive_ring(backend.peer(1), tag, (stop - start,))
    return first, second


def boolean_pair(backend: ReplicatedParty, x: Shares, transform: Words | None,
                 difference: bool) -> tuple[Shares, Shares]:
    """Boolean sharings ``(T(u), T(v))`` with ``u + v = x`` (``u - v = x`` if
    ``difference``), ``T`` the optional bit permutation."""
    shape = value_shape(x)
    flat = np.require(x, dtype=RING_DTYPE, requirements="C").reshape(2, -1)
    apply: Words = transform or (lambda words: words)
    first, second = _share_from_owners(
        backend, flat, lambda mine, following: apply(mine + following),
        lambda last: apply(np.negative(last) if difference else last.copy()), boolean=True)
    return first.reshape((2, *shape)), second.reshape((2, *shape))


def bit_inject(backend: ReplicatedParty, bits: Shares) -> Shares:
    """Arithmetic 0/1 sharings of bit 0 of the boolean sharing ``bits``."""
    shape = value_shape(bits)
    flat = np.require(bits, dtype=RING_DTYPE, requirements="C").reshape(2, -1)
    t, c = _share_from_owners(backend, flat, lambda mine, following: (mine ^ following) & _ONE,
                              lambda last: last & _ONE, boolean=False)
    product = backend.mul(t, c)
    return (t + c - (product << _ONE)).reshape((2, *shape))
