"""Share conversions for ``rep3``: the local halves of A2B and B2A.

These are the protocol-specific parts of the conversions in
:mod:`concilium.ops.conversion`; the circuits (adders, comparison trees) are
written once in :mod:`concilium.ops` over ``and_``.

**Boolean pair** (ABY3, Mohassel and Rindal CCS 2018, Section 5.3, "bit
decomposition" with two summands). An arithmetic sharing ``x = x_0 + x_1 +
x_2`` becomes two *boolean* sharings ``U`` and ``V`` with ``U + V = x`` (or
``U - V = x``): party 0 holds ``x_0`` and ``x_1`` and XOR-shares ``x_0 + x_1``
as an input (one round, 8 bytes per element, party 0 only); ``x_2`` is held by
parties 1 and 2 and is already a valid boolean sharing when placed in share
component 2. A bit permutation may be applied to both words in the clear
first (it is XOR-linear, so this is the same as applying it to every share).

**Bit injection** (boolean bit to arithmetic 0/1). With ``b = b_0 ^ b_1 ^ b_2``,
party 0 computes ``t = b_0 ^ b_1`` and shares it arithmetically; ``b_2`` is
already an arithmetic sharing in component 2; then ``b = t + b_2 - 2 t b_2``:
one input round and one multiplication, 16 bytes for party 0 and 8 for the
others per bit.

Reveals: nothing; the only messages are an input sharing (uniform to its
receiver) and a multiplication's reshare.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from concilium.mpc.backend import Shares, value_shape
from concilium.ring.arithmetic import RING_DTYPE, RingArray

if TYPE_CHECKING:
    from concilium.mpc.rep3 import Rep3

__all__ = ["bit_inject", "boolean_pair"]

_ONE = np.uint64(1)


def _component_two(backend: Rep3, flat: RingArray, word: RingArray) -> Shares:
    """A sharing whose component 2 is ``word`` (known to parties 1 and 2) and the
    others zero."""
    out = np.zeros_like(flat)
    if backend.index == 1:
        out[1] = word
    elif backend.index == 2:
        out[0] = word
    return out


def _own_component_two(backend: Rep3, flat: RingArray) -> RingArray | None:
    """This party's copy of share component 2 (None on party 0)."""
    if backend.index == 1:
        return flat[1]
    if backend.index == 2:
        return flat[0]
    return None


def boolean_pair(backend: Rep3, x: Shares, transform: Callable[[RingArray], RingArray] | None,
                 difference: bool) -> tuple[Shares, Shares]:
    """Boolean sharings ``(T(u), T(v))`` with ``u + v = x`` (``u - v = x`` if
    ``difference``), ``T`` the optional bit permutation."""
    shape = value_shape(x)
    flat = np.require(x, requirements="C").reshape(2, -1)
    apply = transform or (lambda words: words)
    owner = backend.compute_parties[0]
    mine = apply(flat[0] + flat[1]) if backend.index == 0 else None
    first = backend.input(owner, mine, boolean=True).reshape(2, -1)
    last = _own_component_two(backend, flat)
    word = np.empty(0, dtype=RING_DTYPE)
    if last is not None:
        word = apply(np.negative(last) if difference else last.copy())
    second = _component_two(backend, flat, word)
    return first.reshape((2, *shape)), second.reshape((2, *shape))


def bit_inject(backend: Rep3, bits: Shares) -> Shares:
    """Arithmetic 0/1 sharings of bit 0 of the boolean sharing ``bits``."""
    shape = value_shape(bits)
    flat = np.require(bits, requirements="C").reshape(2, -1)
    owner = backend.compute_parties[0]
    mine = ((flat[0] ^ flat[1]) & _ONE) if backend.index == 0 else None
    t = backend.input(owner, mine).reshape(2, -1)
    last = _own_component_two(backend, flat)
    word = (last & _ONE) if last is not None else np.empty(0, dtype=RING_DTYPE)
    c = _component_two(backend, flat, word)
    product = backend.mul(t, c)
    out = t + c - (product << _ONE)
    return out.reshape((2, *shape))
