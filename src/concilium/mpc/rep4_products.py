"""Products for ``rep4``: the 16 cross terms of ``x * y`` as six joint sharings.

Fantastic Four (Dalskov, Escudero and Nof, USENIX Security 2021, Section 4):
with ``x = x_0 + x_1 + x_2 + x_3`` and party ``k`` holding every share but
``x_k``, each cross term ``x_i y_j`` is known to the two parties that hold both
``x_i`` and ``x_j``. They are grouped so that every term is shared once:

1. ``A_k = x_i y_i + x_i y_j + x_j y_i`` with ``i = k+2, j = k+3`` is known to
   parties ``k`` and ``k+1``: party ``k`` sends it jointly (backup ``k+1``) to
   receiver ``k+3``.
2. ``O_0 = x_1 y_3 + x_3 y_1`` is known to parties 0 and 2, ``O_1 = x_0 y_2 +
   x_2 y_0`` to parties 1 and 3; on the first half of the elements 0 and 1 send
   them (receivers 3 and 2), on the second half 2 and 3 do (receivers 1 and 0),
   so that every party sends 1.5 elements per product.
3. One round of :func:`~concilium.mpc.rep4_exchange.joint_round_into`: the
   six joint sharings, checked in the same round, added into the result.

Two implementations of the same protocol (the same masks drawn in the same
order, the same messages, the same MACs, so they interoperate party by party,
which ``tests/test_rep4.py`` checks): :func:`products`, numpy over cache-sized
blocks, which also serves matrix products (terms from local matrix products);
and :func:`elementwise_products`, for ``mul`` and ``and_``, which computes a
block's three terms, its mask additions and its messages in one compiled pass
(:mod:`numba`, ``nogil``): the numpy steps stream each block through ten
temporaries, the kernel reads the operands once. ``bench/engine.py --protocol
rep4`` measures the pair.

Reveals: nothing (every message is masked; see :mod:`~concilium.mpc.rep4_exchange`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from concilium.mpc.randomness import Purpose
from concilium.mpc.rep4_exchange import (
    DIGEST_WORDS,
    LazyJoint,
    Rep4Party,
    Transfer,
    exchange,
    joint_round_into,
    mac_key,
    message_mac,
    others,
    slot,
)
from concilium.mpc.rounds import slice_bounds
from concilium.ring.arithmetic import RING_DTYPE, RingArray
from concilium.ring.blocks import blocks

#: Elements per block: the 64 Ki of ``ring.blocks`` measured best here (16 Ki to 512 Ki
#: tried with ``bench/engine.py --protocol rep4``): smaller blocks cost more Python
#: per element than they save in cache misses.
BLOCK_ELEMENTS = 1 << 16

__all__ = ["Product", "TermKey", "elementwise_products", "own_terms", "product_joints",
           "products", "term"]

Product = Callable[[RingArray, RingArray], RingArray]
TermKey = tuple[str, int]
#: (sender, backup, receiver, start, stop, term) of each joint sharing, in round order.
JointPlan = tuple[int, int, int, int, int, TermKey]


def own_terms(me: int) -> dict[TermKey, tuple[tuple[int, int], bool]]:
    """The product terms party ``me`` knows: ``A_me`` (it sends it), ``A_(me-1)`` (it
    vouches for it) and its opposite pair's term; each as (share indices, square)."""
    terms = {("A", k): (((k + 2) % 4, (k + 3) % 4), True) for k in (me, (me - 1) % 4)}
    terms[("O", me % 2)] = ((1, 3), False) if me % 2 == 0 else ((0, 2), False)
    return terms


def product_joints(size: int) -> list[JointPlan]:
    """The six joint sharings of each half of ``size`` products, in round order."""
    plan = []
    for variant, (lo, hi) in enumerate(slice_bounds(size, 2)):
        table = [(k, (k + 1) % 4, (k + 3) % 4, ("A", k)) for k in range(4)]
        table += ([(0, 2, 3, ("O", 0)), (1, 3, 2, ("O", 1))] if variant == 0 else
                  [(2, 0, 1, ("O", 0)), (3, 1, 0, ("O", 1))])
        plan += [(sender, backup, receiver, lo, hi, key)
                 for sender, backup, receiver, key in table]
    return plan


def term(x: RingArray, y: RingArray, me: int, pair: tuple[int, int], square: bool,
         product: Product, add: Product) -> RingArray:
    """``x_i y_i + x_i y_j + x_j y_i`` (square) or ``x_i y_j + x_j y_i`` from this party's
    components, ``(i, j) = pair``."""
    i, j = pair
    xi, xj, yi, yj = x[slot(me, i)], x[slot(me, j)], y[slot(me, i)], y[slot(me, j)]
    if square:
        return add(product(xi, add(yi, yj)), product(xj, yi)).reshape(-1)
    return add(product(xi, yj), product(xj, yi)).reshape(-1)


def products(party: Rep4Party, terms: Callable[[TermKey, int, int], RingArray], size: int,
             label: str, *, boolean: bool) -> RingArray:
    """The sharing of ``size`` products, given this party's terms block by block
    (``terms(key, lo, hi)``, keys of :func:`own_terms`): one checked round."""
    own = own_terms(party.index)

    def value(key: TermKey) -> Callable[[int, int], RingArray] | None:
        return (lambda start, stop: terms(key, start, stop)) if key in own else None

    joints = [LazyJoint(sender, backup, receiver, lo, hi, value(key))
              for sender, backup, receiver, lo, hi, key in product_joints(size)]
    out = np.zeros((3, size), dtype=RING_DTYPE)
    joint_round_into(party, party.next_tag(), joints, out, label, boolean=boolean)
    return out


def blockwise_terms(a: RingArray, b: RingArray, me: int, boolean: bool
                    ) -> Callable[[TermKey, int, int], RingArray]:
    """This party's elementwise product terms, computed for one block at a time."""
    own = own_terms(me)
    product = np.bitwise_and if boolean else np.multiply
    add = np.bitwise_xor if boolean else np.add

    def blockwise(key: TermKey, lo: int, hi: int) -> RingArray:
        pair, square = own[key]
        return term(a[:, lo:hi], b[:, lo:hi], me, pair, square, product, add)
    return blockwise


def elementwise_products(party: Rep4Party, a: RingArray, b: RingArray, label: str, *,
                         boolean: bool) -> RingArray:
    """``a * b`` (``a & b`` if ``boolean``) for (3, n) C-contiguous components: the
    protocol of :func:`products` with each block's work in one compiled pass. The
    messages this party sends are written straight into their frames; the ones it
    vouches for live one block at a time, long enough for their GMAC."""
    me, size = party.index, a.shape[1]
    tag = party.next_tag()
    own = own_terms(me)
    keys = list(own)
    pairs = [(slot(me, i), slot(me, j)) for (i, j), _ in own.values()]
    plan = product_joints(size)
    frames, sent = _frames(me, plan)
    streams = {g: party.keys.stream(others(g), tag, Purpose.JOINT_MASK)
               for g in range(4) if g != me}
    out = np.empty((3, size), dtype=RING_DTYPE)
    masks = np.empty((7, BLOCK_ELEMENTS), dtype=RING_DTYPE)
    masks[6] = 0  # the missing second outsider mask
    vouched = np.empty((3, BLOCK_ELEMENTS), dtype=RING_DTYPE)
    macs: dict[int, Any] = {}
    kernel = _kernel(boolean)
    for start, stop in slice_bounds(size, 2):
        members = [k for k, joint in enumerate(plan) if joint[3:5] == (start, stop)]
        rows, route = _half_layout(me, [plan[k] for k in members], keys)
        messages: list[tuple[int, RingArray | None]] = [(0, None)] * 3
        for k in members:
            sender, backup, _, _, _, key = plan[k]
            if key in own:
                t = keys.index(key)
                messages[t] = (k, sent.get(k))
                if me == backup:
                    macs[k] = message_mac(mac_key(party, sender, tag), k)
        for block in blocks(stop - start, BLOCK_ELEMENTS):
            lo, hi = start + block.start, start + block.stop
            count = hi - lo
            for row, k in enumerate(members):
                if plan[k][2] != me:
                    streams[plan[k][2]].fill(masks[row, :count])
            targets = [vouched[t, :count] if whole is None else whole[block]
                       for t, (_, whole) in enumerate(messages)]
            kernel(*[side[c, lo:hi] for i, j in pairs for side in (a, b) for c in (i, j)],
                   *[masks[row, :count] for row in rows], *targets, *out[:, lo:hi], route)
            for t, (k, _) in enumerate(messages):
                if k in macs:
                    macs[k].authenticate_additional_data(targets[t].view(np.uint8))
    for mac in macs.values():
        mac.finalize()
    transfers = [Transfer(sender, backup, receiver, hi - lo, sent.get(k))
                 for k, (sender, backup, receiver, lo, hi, _) in enumerate(plan)]
    received = exchange(party, tag, transfers, label,
                        {k: bytes(mac.tag) for k, mac in macs.items()}, frames)
    combine = np.bitwise_xor if boolean else np.add
    for (sender, backup, receiver, lo, hi, _), arrived in zip(plan, received, strict=True):
        if arrived is not None:
            target = out[slot(me, 6 - sender - backup - receiver), lo:hi]
            combine(target, arrived, out=target)
    return out


def _frames(me: int, plan: list[JointPlan]) -> tuple[dict[int, RingArray], dict[int, RingArray]]:
    """This party's outgoing frames, one per receiver (what it sends there in round
    order, then room for its digest if it vouches for something there), and each
    joint it sends as a view into its frame."""
    lengths: dict[int, int] = {}
    places: dict[int, tuple[int, int, int]] = {}
    for k, (sender, backup, receiver, lo, hi, _) in enumerate(plan):
        if sender == me:
            offset = lengths.get(receiver, 0)
            places[k] = (receiver, offset, offset + hi - lo)
            lengths[receiver] = offset + hi - lo
        elif backup == me:
            lengths.setdefault(receiver, 0)
    vouches = {receiver for _, backup, receiver, _, _, _ in plan if backup == me}
    frames = {receiver: np.empty(length + (DIGEST_WORDS if receiver in vouches else 0),
                                 dtype=RING_DTYPE) for receiver, length in lengths.items()}
    return frames, {k: frames[r][lo:hi] for k, (r, lo, hi) in places.items()}


def _half_layout(me: int, joints: list[JointPlan], keys: list[TermKey]
                 ) -> tuple[list[int], np.uint64]:
    """The kernel's inputs for one half: the mask rows (of the joints of this party's
    three terms, in term order, then of the one or two joints it is the outsider of,
    row 6, all zeros, for a missing second) and ``route``: all ones if the third
    term's message goes into component 0 (its mask into 2), zero if the other way.

    The routing is derived here from the plan and checked against the one the kernel
    computes, so a change of plan fails here instead of computing something else."""
    layout = np.zeros((3, 8), dtype=np.int64)
    term_rows = [0, 0, 0]
    extra: list[int] = []
    for row, (sender, backup, receiver, _, _, key) in enumerate(joints):
        outsider = 6 - sender - backup - receiver
        if key in keys and me in (sender, backup):
            t = keys.index(key)
            term_rows[t] = row
            layout[slot(me, receiver), t] = layout[slot(me, outsider), 3 + t] = 1
        elif me == outsider:
            layout[slot(me, receiver), 6 + len(extra)] = 1
            extra.append(row)
    first = bool(layout[0, 5])
    expected = np.zeros((3, 8), dtype=np.int64)
    expected[[2, 1, 2 if first else 0, 1, 0, 0 if first else 2], [0, 1, 2, 3, 4, 5]] = 1
    expected[0, 6], expected[1, 7] = len(extra) >= 1, len(extra) >= 2
    if len(extra) not in (1, 2) or not np.array_equal(layout, expected):
        raise AssertionError(f"the product plan routes party {me}'s shares in a way the "
                             f"kernel does not compute: {layout.tolist()}")
    rows = term_rows + extra + [6] * (2 - len(extra))
    return rows, ~np.uint64(0) if first else np.uint64(0)


def _kernel(boolean: bool) -> Any:
    """The compiled block pass, built on first use and cached on disk by numba."""
    global _KERNELS
    if not _KERNELS:
        _KERNELS = _compile()
    return _KERNELS[boolean]


_KERNELS: dict[bool, Any] = {}


def _compile() -> dict[bool, Any]:
    """Per element of a block: the three terms ``t`` (``x_i (y_i + y_j) + x_j y_i``
    for ``A``, ``x_i y_j + x_j y_i`` for ``O``; AND and XOR over GF(2)^64), their
    messages ``g = t - k`` (``k`` the term's mask), and the three output components:
    0 gets ``g1``, the first outsider mask ``e0`` and the third term's message or
    mask (``route``), 1 gets ``g0``, ``k1`` and ``e1``, 2 gets ``k0`` and the other
    of the third term's pair (:func:`_half_layout` checks this against the plan).
    Operands, masks, messages and outputs are one-dimensional rows; the loop has
    no branches, so it vectorizes."""
    import numba

    @numba.njit(cache=True, nogil=True)
    def ring(xi0, xj0, yi0, yj0, xi1, xj1, yi1, yj1, xi2, xj2, yi2, yj2,
             k0, k1, k2, e0, e1, g0, g1, g2, o0, o1, o2, route):
        other = ~route
        for f in range(xi0.size):
            m0 = xi0[f] * (yi0[f] + yj0[f]) + xj0[f] * yi0[f] - k0[f]
            m1 = xi1[f] * (yi1[f] + yj1[f]) + xj1[f] * yi1[f] - k1[f]
            m2 = xi2[f] * yj2[f] + xj2[f] * yi2[f] - k2[f]
            g0[f], g1[f], g2[f] = m0, m1, m2
            o0[f] = m1 + e0[f] + (route & m2) + (other & k2[f])
            o1[f] = m0 + k1[f] + e1[f]
            o2[f] = k0[f] + (route & k2[f]) + (other & m2)

    @numba.njit(cache=True, nogil=True)
    def words(xi0, xj0, yi0, yj0, xi1, xj1, yi1, yj1, xi2, xj2, yi2, yj2,
              k0, k1, k2, e0, e1, g0, g1, g2, o0, o1, o2, route):
        other = ~route
        for f in range(xi0.size):
            m0 = (xi0[f] & (yi0[f] ^ yj0[f])) ^ (xj0[f] & yi0[f]) ^ k0[f]
            m1 = (xi1[f] & (yi1[f] ^ yj1[f])) ^ (xj1[f] & yi1[f]) ^ k1[f]
            m2 = (xi2[f] & yj2[f]) ^ (xj2[f] & yi2[f]) ^ k2[f]
            g0[f], g1[f], g2[f] = m0, m1, m2
            o0[f] = m1 ^ e0[f] ^ (route & m2) ^ (other & k2[f])
            o1[f] = m0 ^ k1[f] ^ e1[f]
            o2[f] = k0[f] ^ (route & k2[f]) ^ (other & m2)

    return {False: ring, True: words}
