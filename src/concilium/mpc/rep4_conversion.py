"""Share conversions for ``rep4``: the protocol halves of A2B and B2A.

The circuits (adders, comparison trees) are in :mod:`concilium.ops`; here are
the two steps that depend on the sharing. Both use the pair split of
:mod:`concilium.mpc.rep4_truncation`: on a slice with role offset ``t``,
parties ``t`` and ``t+1`` know ``u = x_(t+2) + x_(t+3)`` and parties ``t+2`` and ``t+3``
know ``v = x_t + x_(t+1)``; each pair shares what it computes jointly (one
sender, one backup that vouches for it, checked in the same round), as
MP-SPDZ's ``Rep4::split`` does. Roles rotate over four slices (and with the
tag), so the parties share the work.

**Boolean pair**: the first pair shares ``T(u)`` and the second ``T(v)`` (``T(-v)``
for the difference form) as XOR sharings of words: one round, 16 bytes per
element in all.

**Bit injection**: the first pair shares ``(b_(t+2) xor b_(t+3)) and 1`` and the
second ``(b_t xor b_(t+1)) and 1`` arithmetically; then ``b = p + q - 2 p q``: one
round of joint sharings and one multiplication, 64 bytes per bit in all.

Reveals: nothing; every message is a joint sharing, masked.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from concilium.mpc.backend import Shares, value_shape
from concilium.mpc.rep4_exchange import Joint, Rep4Party, joint_sharings, slot
from concilium.mpc.rounds import slice_bounds
from concilium.ring.arithmetic import RING_DTYPE, RingArray

__all__ = ["bit_inject", "boolean_pair"]

_ONE = np.uint64(1)
Words = Callable[[RingArray], RingArray]


def _pair_sharings(party: Rep4Party, flat: RingArray, first_value: Words,
                   second_value: Words, label: str, boolean: bool
                   ) -> tuple[RingArray, RingArray]:
    """Per slice: a joint sharing of ``first_value`` of the first pair's two shares
    and of ``second_value`` of the second pair's; both as flat (3, n) arrays."""
    me, size = party.index, flat.shape[1]
    tag = party.next_tag()
    slices = [((k + tag) % 4, lo, hi) for k, (lo, hi) in enumerate(slice_bounds(size, 4))]
    joints = []
    for t, lo, hi in slices:
        in_first = (me - t) % 4 < 2
        low = (t + 2) % 4 if in_first else t
        a, b = flat[slot(me, low), lo:hi], flat[slot(me, (low + 1) % 4), lo:hi]
        value = first_value(a, b) if in_first else second_value(a, b)  # type: ignore[call-arg]
        joints.append(Joint(t, (t + 1) % 4, (t + 3) % 4, hi - lo, value if in_first else None))
        joints.append(Joint((t + 2) % 4, (t + 3) % 4, (t + 1) % 4, hi - lo,
                            None if in_first else value))
    sharings = joint_sharings(party, tag, joints, label, boolean=boolean)
    first = np.zeros((3, size), dtype=RING_DTYPE)
    second = np.zeros((3, size), dtype=RING_DTYPE)
    for k, (_, lo, hi) in enumerate(slices):
        sharings[2 * k].add_into(first[:, lo:hi], boolean=boolean)
        sharings[2 * k + 1].add_into(second[:, lo:hi], boolean=boolean)
    return first, second


def boolean_pair(party: Rep4Party, x: Shares, transform: Words | None,
                 difference: bool) -> tuple[Shares, Shares]:
    """Boolean sharings ``(T(u), T(v))`` with ``u + v = x`` (``u - v = x`` if
    ``difference``)."""
    shape = value_shape(x)
    flat = np.require(x, dtype=RING_DTYPE, requirements="C").reshape(3, -1)
    apply: Words = transform or (lambda words: words)
    first, second = _pair_sharings(
        party, flat, lambda a, b: apply(a + b),  # type: ignore[misc, arg-type]
        lambda a, b: apply(np.negative(a + b) if difference else a + b),  # type: ignore[misc, arg-type]
        "boolean pair", boolean=True)
    return first.reshape((3, *shape)), second.reshape((3, *shape))


def bit_inject(party: Rep4Party, bits: Shares) -> Shares:
    """Arithmetic 0/1 sharings of bit 0 of the boolean sharing ``bits``."""
    shape = value_shape(bits)
    flat = np.require(bits, dtype=RING_DTYPE, requirements="C").reshape(3, -1)
    low = lambda a, b: (a ^ b) & _ONE  # noqa: E731
    p, q = _pair_sharings(party, flat, low, low, "bit injection",  # type: ignore[arg-type]
                          boolean=False)
    product = party.mul(p, q)
    return (p + q - (product << _ONE)).reshape((3, *shape))
