"""Fixed-point truncation for ``rep4``: the fast and the reliable protocol.

Both rest on one split of a sharing between two *pairs*: with ``t`` the role
offset of a slice, parties ``t`` and ``t+1`` both hold ``x_(t+2)`` and
``x_(t+3)``, parties ``t+2`` and ``t+3`` both hold ``x_t`` and ``x_(t+1)``. So
``x = u + v`` with ``u`` known to the first pair and ``v`` to the second, and a
value one pair computes from its part can be shared jointly (sender and
backup from that pair, checked in the same round; see
:mod:`concilium.mpc.rep4_exchange`). Arrays of 16384 elements or more are cut
into four slices with the roles rotated, so every party does the same work.

**Fast** (the pair version of the share truncation of SecureML, Mohassel and
Zhang S&P 2017, as ABY3 Section 5.1.1 uses it, and as ORQ's 4PC
``div_const_a`` does it): ``u' = u + rho``, ``v' = v - rho`` with ``rho`` from the common
key, so ``u'`` is uniform; the pairs shift their part as signed integers
(``v`` side adds one for unbiased rounding) and share the results jointly.
One round, 16 bytes per element in all. *Failure probability*: ``|x| / 2^64``
per element, exactly as ``rep3``'s fast truncation (the two parts wrap).

**Reliable** (probabilistic truncation of Escudero, Ghosh, Keller, Rachuri
and Scholl, CRYPTO 2020, Section 5.1, with the mask made by the first pair
as MP-SPDZ's ``Rep4::trunc_pr`` does: ``r = F(K_(t+2)) + F(K_(t+3))`` is a sharing
for free, known as a whole to that pair only):

1. Open ``c = x + 2^62 + r`` to the second pair (each gets its missing share
   jointly from the first pair); the first pair shares ``(r mod 2^63) >> d`` and
   ``r >> 63`` jointly. One round.
2. The second pair, whose opened ``c`` has been checked, shares
   ``(c mod 2^63) >> d`` and ``c >> 63`` jointly. One round.
3. ``b = c_msb xor r_msb = c_msb + r_msb - 2 c_msb r_msb``: one multiplication.
   The result is ``(c mod 2^63) >> d - (r mod 2^63) >> d + 2^(63-d) b - 2^(62-d)``.

*Failure probability*: zero for every ``|x| < 2^62``; the rounding is
unbiased (``r`` is uniform). Three rounds, 96 bytes per element in all.

Reveals: ``c`` to the second pair only, and it is uniformly random to each of
them (each misses one of the two keys that make ``r``); every other message is a
joint sharing, masked.
"""

from __future__ import annotations

import numpy as np

from concilium.mpc.backend import Shares
from concilium.mpc.randomness import Purpose
from concilium.mpc.rep4_exchange import Joint, Rep4Party, Transfer, joint_round, others, slot
from concilium.mpc.rounds import slice_bounds
from concilium.ring.arithmetic import RING_DTYPE, RingArray
from concilium.ring.prg import Prg

__all__ = ["fast_truncate", "reliable_truncate"]

_LOW63 = np.uint64((1 << 63) - 1)
_BIAS = np.uint64(1 << 62)
_ONE = np.uint64(1)
_SIGN = np.uint64(63)


def _slices(party: Rep4Party, size: int, tag: int) -> list[tuple[int, int, int]]:
    """(role offset t, start, stop) per slice; the offset also turns with the tag."""
    return [((k + tag) % 4, lo, hi) for k, (lo, hi) in enumerate(slice_bounds(size, 4))]


def _part(x: Shares, me: int, t: int, lo: int, hi: int) -> RingArray:
    """``u = x_(t+2) + x_(t+3)`` at parties t, t+1; ``v = x_t + x_(t+1)`` at t+2, t+3."""
    first = (t + 2) % 4 if (me - t) % 4 < 2 else t
    return x[slot(me, first), lo:hi] + x[slot(me, (first + 1) % 4), lo:hi]


def _shift(values: RingArray, bits: int) -> RingArray:
    return np.right_shift(values.view(np.int64), bits).view(RING_DTYPE)


def fast_truncate(party: Rep4Party, x: Shares, bits: int) -> Shares:
    """Fast truncation of a flat (3, n) sharing; see the module docstring."""
    me, size = party.index, x.shape[1]
    tag = party.next_tag()
    rho = party.keys.stream([0, 1, 2, 3], tag, Purpose.COMMON).integers(size)
    joints = []
    for t, lo, hi in _slices(party, size, tag):
        in_first = (me - t) % 4 < 2
        part = _part(x, me, t, lo, hi)
        if in_first:
            value = _shift(part + rho[lo:hi], bits)
        else:
            value = _shift(part - rho[lo:hi], bits) + _ONE
        joints.append(Joint(t, (t + 1) % 4, (t + 3) % 4, hi - lo,
                            value if in_first else None))
        joints.append(Joint((t + 2) % 4, (t + 3) % 4, (t + 1) % 4, hi - lo,
                            None if in_first else value))
    sharings, _ = joint_round(party, tag, joints, (), "fast truncation")
    out = np.zeros_like(x)
    for k, (_, lo, hi) in enumerate(_slices(party, size, tag)):
        sharings[2 * k].add_into(out[:, lo:hi])
        sharings[2 * k + 1].add_into(out[:, lo:hi])
    return out


def reliable_truncate(party: Rep4Party, x: Shares, bits: int) -> Shares:
    """Reliable truncation of a flat (3, n) sharing; see the module docstring."""
    me, size = party.index, x.shape[1]
    tag = party.next_tag(2)
    slices = _slices(party, size, tag)
    shifted = party.add_public(x, np.asarray(_BIAS))
    joints, transfers, opened_halves = [], [], []
    streams: dict[int, Prg] = {}
    for t, lo, hi in slices:
        in_first = (me - t) % 4 < 2
        mask = np.zeros((3, hi - lo), dtype=RING_DTYPE)  # r: x_(t+2), x_(t+3) from their keys
        for share in ((t + 2) % 4, (t + 3) % 4):
            if share != me:  # one stream per key, drawn in slice order by its holders
                if share not in streams:
                    streams[share] = party.keys.stream(others(share), tag, Purpose.MASK)
                streams[share].fill(mask[slot(me, share)])
        c = shifted[:, lo:hi] + mask
        r = mask[slot(me, (t + 2) % 4)] + mask[slot(me, (t + 3) % 4)] if in_first else None
        low = ((r & _LOW63) >> np.uint64(bits)) if r is not None else None
        high = (r >> _SIGN) if r is not None else None
        joints.append(Joint(t, (t + 1) % 4, (t + 2) % 4, hi - lo, low))
        joints.append(Joint((t + 1) % 4, t, (t + 3) % 4, hi - lo, high))
        for receiver, sender, backup in (((t + 2) % 4, t, (t + 1) % 4),
                                         ((t + 3) % 4, (t + 1) % 4, t)):
            value = c[slot(me, receiver)] if me in (sender, backup) else None
            transfers.append(Transfer(sender, backup, receiver, hi - lo, value))
        opened_halves.append(c)
    masks_shared, received = joint_round(party, tag, joints, transfers,
                                         "reliable truncation: opening to a pair")
    second = []
    for k, (t, lo, hi) in enumerate(slices):
        in_second = (me - t) % 4 >= 2
        value = low = high = None
        if in_second:  # c, checked: this party's three components and the missing share
            missing = received[2 * k] if me == (t + 2) % 4 else received[2 * k + 1]
            value = opened_halves[k].sum(axis=0, dtype=RING_DTYPE) + missing
            low = (value & _LOW63) >> np.uint64(bits)
            high = value >> _SIGN
        second.append(Joint((t + 2) % 4, (t + 3) % 4, t, hi - lo, low))
        second.append(Joint((t + 3) % 4, (t + 2) % 4, (t + 1) % 4, hi - lo, high))
    from_second, _ = joint_round(party, tag + 1, second, (),
                                 "reliable truncation: the pair's opened bits")
    c_msb, r_msb, c_low, r_low = (np.zeros_like(x) for _ in range(4))
    for k, (_, lo, hi) in enumerate(slices):
        from_second[2 * k + 1].add_into(c_msb[:, lo:hi])
        masks_shared[2 * k + 1].add_into(r_msb[:, lo:hi])
        from_second[2 * k].add_into(c_low[:, lo:hi])
        masks_shared[2 * k].add_into(r_low[:, lo:hi])
    both = party.mul(c_msb, r_msb)
    either = c_msb + r_msb - (both << _ONE)
    result = c_low - r_low + (either << np.uint64(63 - bits))
    return party.add_public(result, np.asarray(-(1 << (62 - bits)) % (1 << 64),
                                               dtype=RING_DTYPE))
