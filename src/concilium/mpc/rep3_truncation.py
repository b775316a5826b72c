"""Fixed-point truncation for ``rep3``: the fast and the reliable protocol.

Both divide a shared ``z`` by ``2^d`` with unbiased (stochastic) rounding:
the result is ``floor(z / 2^d)`` or that plus one, with expectation
``z / 2^d``. They differ in what can go wrong.

The roles A, B and C differ in work, so arrays of 12288 elements or more are
cut into three slices and every party plays each role on one slice
(:mod:`concilium.mpc.rounds`): all parties do the same work in one operation.
A holds shares ``(a, b)``, B ``(b, c)``, C ``(c, a)``; A's next key is shared
with B, B's next with C, C's next with A.

**Fast** (ABY3, Mohassel and Rindal CCS 2018, Section 5.1.1: share truncation
after SecureML, Mohassel and Zhang S&P 2017). The parties turn ``z`` into a
two-party additive sharing ``z = P + Q`` (A holds ``P``; B and C both hold
``Q``), shift each part locally as a signed integer, and rebuild a replicated
sharing. One round, one ring element per party per element, fused with the
multiplication.

*Failure probability*: the local shifts are off by ``2^(64-d)`` exactly when
``P + Q`` wraps around as signed 64-bit integers. ``P`` is uniform, so this
happens with probability ``|z| / 2^64`` per element (e.g. ``2^-22`` for a
product of magnitude 1024 at ``f = 16``). Use it only where that is
acceptable.

**Reliable** (probabilistic truncation of Escudero, Ghosh, Keller, Rachuri and
Scholl, "Improved Primitives for MPC over Mixed Arithmetic-Binary Circuits",
CRYPTO 2020, Section 5.1, with the masks ``r``, ``r_msb`` and
``(r mod 2^63) >> d`` supplied by party C as a semi-honest helper that never
sees the opened value, in the style of the three-party helper protocols of
SecureNN, Wagh, Gupta and Chandran PETS 2019). A and B open
``c = z + 2^62 + r`` to each other (``r`` uniform, known only to C) and compute
``z >> d = (c mod 2^63) >> d - (r mod 2^63) >> d + 2^(63-d) (c_msb xor r_msb)
- 2^(62-d)``, off by at most one unit. *Failure probability*: zero for every
``|z| < 2^62``. Two rounds; 16 bytes per element for A and B, 32 for C (16
when truncating an existing sharing); with the roles rotated over three
slices, about 21 bytes per element for every party.

Reveals: nothing. ``c`` is opened to A and B only and is uniformly random to
them (``r`` is uniform and unknown to both); C sees only values masked by
randomness it does not know.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from concilium.mpc.backend import Shares, Truncation, matmul_shape, share_matmul
from concilium.mpc.randomness import Purpose
from concilium.mpc.replicated import ReplicatedParty
from concilium.mpc.rounds import SliceContext, SliceTask, run_slices, slice_bounds, tags_needed
from concilium.ring.arithmetic import RING_DTYPE, RingArray
from concilium.ring.blocks import BLOCK_ELEMENTS, blocks

__all__ = [
    "TAGS_USED",
    "ProductPart",
    "elementwise_part",
    "fast_truncate",
    "matrix_part",
    "product_truncate",
    "reliable_truncate",
]

ROLE_A, ROLE_B, ROLE_C = 0, 1, 2
ROLES = 3
#: Consecutive plan tags a truncation reserves, by mode (one and two rounds).
TAGS_USED = {"fast": tags_needed(1, ROLES), "reliable": tags_needed(2, ROLES)}
_LOW63 = np.uint64((1 << 63) - 1)
_BIAS = np.uint64(1 << 62)
_ONE = np.uint64(1)
_SIGN_SHIFT = np.uint64(63)


class ProductPart(Protocol):
    """A role's part of a product as a three-party additive sharing, by blocks.

    A holds (a, b), B holds (b, c), C holds (c, a); the nine cross terms split
    as A: (a+b)(a'+b'), B: c(b'+c') + b c', C: a c' + c a'.
    """

    size: int

    def compute(self, role: int, out: RingArray, block: slice) -> None: ...


class _ElementwisePart:
    def __init__(self, a: RingArray, b: RingArray) -> None:
        self.a, self.b, self.size = a, b, a.shape[1]

    def compute(self, role: int, out: RingArray, block: slice) -> None:
        a0, a1, b0, b1 = self.a[0, block], self.a[1, block], self.b[0, block], self.b[1, block]
        if role == ROLE_A:
            np.add(b0, b1, out=out)
            out *= a0 + a1
        elif role == ROLE_B:
            np.add(b0, b1, out=out)
            out *= a1
            out += a0 * b1
        else:
            np.multiply(a1, b0, out=out)
            out += a0 * b1


class _MatrixPart:
    def __init__(self, x: Shares, y: Shares, x_ndim: int, y_ndim: int) -> None:
        self.x, self.y, self.x_ndim, self.y_ndim = x, y, x_ndim, y_ndim
        self._full: RingArray | None = None
        shape = matmul_shape(tuple(x.shape[1:]), tuple(y.shape[1:]))
        self.size = int(np.prod(shape, dtype=np.int64))

    def _product(self, left: RingArray, right: RingArray) -> RingArray:
        return share_matmul(left, right, self.x_ndim, self.y_ndim)[0]

    def compute(self, role: int, out: RingArray, block: slice) -> None:
        if self._full is None:
            x, y = self.x, self.y
            if role == ROLE_A:
                full = self._product((x[0] + x[1])[None], (y[0] + y[1])[None])
            elif role == ROLE_B:
                full = self._product(x[1:2], (y[0] + y[1])[None]) + self._product(x[0:1],
                                                                                  y[1:2])
            else:
                full = self._product(x[1:2], y[0:1]) + self._product(x[0:1], y[1:2])
            self._full = np.require(full, requirements="C").reshape(-1)
        out[...] = self._full[block]


def elementwise_part(a: RingArray, b: RingArray) -> ProductPart:
    """The parts of ``a * b`` for flat (2, n) operands."""
    return _ElementwisePart(a, b)


def matrix_part(x: Shares, y: Shares, x_ndim: int, y_ndim: int) -> ProductPart:
    """The parts of ``x @ y`` (numpy matmul semantics on the value axes)."""
    return _MatrixPart(x, y, x_ndim, y_ndim)


def _contexts(backend: ReplicatedParty, count: int, tag: int) -> list[SliceContext]:
    """One context per slice; slice ``k`` gives this party role ``(index - tag - k) mod 3``."""
    bounds = slice_bounds(count, ROLES)
    return [
        SliceContext(backend, (backend.index - tag - k) % ROLES, start, stop, k, len(bounds), tag)
        for k, (start, stop) in enumerate(bounds)
    ]


def _shift_into(values: RingArray, bits: int, out: RingArray) -> None:
    """Arithmetic (sign-preserving) right shift of ring elements read as int64."""
    np.right_shift(values.view(np.int64), bits, out=out.view(np.int64))


def _global(context: SliceContext, block: slice) -> slice:
    return slice(context.start + block.start, context.start + block.stop)


def product_truncate(backend: ReplicatedParty, part: ProductPart, bits: int, mode: Truncation,
                     tag: int) -> Shares:
    """``trunc(x * y, bits)`` (or ``x @ y``) in the given mode; flat (2, n) result."""
    out = np.empty((2, part.size), dtype=RING_DTYPE)
    tasks: list[SliceTask] = []
    for context in _contexts(backend, part.size, tag):
        view = out[:, context.start:context.stop]
        if mode == "fast":
            tasks.append(_fast_product(context, part, bits, view))
        else:
            tasks.append(_reliable(context, part, True, bits, view))
    run_slices(backend, tasks)
    return out


def fast_truncate(backend: ReplicatedParty, x: Shares, bits: int, tag: int) -> Shares:
    """Truncate an existing flat sharing with the fast protocol."""
    out = np.empty_like(x)
    tasks = [_fast_existing(context, x, bits, out[:, context.start:context.stop])
             for context in _contexts(backend, x.shape[1], tag)]
    run_slices(backend, tasks)
    return out


def reliable_truncate(backend: ReplicatedParty, x: Shares, bits: int, tag: int) -> Shares:
    """Truncate an existing flat sharing with the reliable protocol."""
    out = np.empty_like(x)
    part = _SharingPart(x)
    tasks = [_reliable(context, part, False, bits, out[:, context.start:context.stop])
             for context in _contexts(backend, x.shape[1], tag)]
    run_slices(backend, tasks)
    return out


def _fast_product(context: SliceContext, part: ProductPart, bits: int,
                  out: RingArray) -> SliceTask:
    """Steps (each party first forms its masked part ``z_i`` of the product):

    1. A: ``t_a = (z_A >> d) - r`` with ``r`` from the A-B key; send ``t_a`` to C.
       B and C swap ``z_B`` and ``z_C``; each sets ``t_c = ((z_B + z_C) >> d) + 1``.
    2. Shares: A ``(t_a, r)``, B ``(r, t_c)``, C ``(t_c, t_a)``.
    """
    backend, role, n = context.backend, context.role, context.size
    randomness, tag = backend.randomness, context.stream_tag
    previous = randomness.previous(tag, Purpose.ZERO_SHARE)
    following = randomness.next(tag, Purpose.ZERO_SHARE)
    scratch = np.empty((2, min(n, BLOCK_ELEMENTS)), dtype=RING_DTYPE)
    if role == ROLE_A:
        r_stream = randomness.next(tag, Purpose.MASK)
        for block in blocks(n):
            k = block.stop - block.start
            z, u = scratch[0, :k], scratch[1, :k]
            part.compute(role, z, _global(context, block))
            previous.fill(u)
            z += u
            following.fill(u)
            z -= u
            r_stream.fill(out[1, block])
            _shift_into(z, bits, out[0, block])
            out[0, block] -= out[1, block]
        context.send(backend.peer(-1), 0, 0, out[0])
        return
    z = np.empty(n, dtype=RING_DTYPE)
    for block in blocks(n):
        u = scratch[0, : block.stop - block.start]
        part.compute(role, z[block], _global(context, block))
        previous.fill(u)
        z[block] += u
        following.fill(u)
        z[block] -= u
    other = backend.peer(1) if role == ROLE_B else backend.peer(-1)
    context.send(other, 0, 0, z)
    if role == ROLE_B:
        [received] = yield [context.expect(other, 0, 0)]
        randomness.previous(tag, Purpose.MASK).fill(out[0])
        target = out[1]
    else:
        received, t_a = yield [context.expect(other, 0, 0),
                               context.expect(backend.peer(1), 0, 0)]
        out[1] = t_a
        target = out[0]
    for block in blocks(n):
        np.add(z[block], received[block], out=target[block])
        _shift_into(target[block], bits, target[block])
        target[block] += _ONE


def _fast_existing(context: SliceContext, x: Shares, bits: int, out: RingArray) -> SliceTask:
    """Fast truncation of an existing sharing: ``P = x_a + x_b + rho`` at A and
    ``Q = x_c - rho`` at B and C, with ``rho`` from the common key so ``P`` is uniform;
    then as in :func:`_fast_product`."""
    backend, role = context.backend, context.role
    lo, hi = context.start, context.stop
    rho = backend.randomness.common(context.stream_tag).integers(context.size)
    if role == ROLE_A:
        backend.randomness.next(context.stream_tag, Purpose.MASK).fill(out[1])
        _shift_into(x[0, lo:hi] + x[1, lo:hi] + rho, bits, out[0])
        out[0] -= out[1]
        context.send(backend.peer(-1), 0, 0, out[0])
        return
    shifted = out[1] if role == ROLE_B else out[0]
    _shift_into(x[1 if role == ROLE_B else 0, lo:hi] - rho, bits, shifted)
    shifted += _ONE
    if role == ROLE_B:
        backend.randomness.previous(context.stream_tag, Purpose.MASK).fill(out[0])
    else:
        [t_a] = yield [context.expect(backend.peer(1), 0, 0)]
        out[1] = t_a


class _SharingPart:
    """Parts of an existing sharing: A ``x_a``, B ``x_b + x_c``, C nothing."""

    def __init__(self, x: Shares) -> None:
        self.x, self.size = x, x.shape[1]

    def compute(self, role: int, out: RingArray, block: slice) -> None:
        if role == ROLE_B:
            np.add(self.x[0, block], self.x[1, block], out=out)
        else:
            out[...] = self.x[0, block]


def _reliable(context: SliceContext, part: ProductPart, dealer_has_part: bool, bits: int,
              out: RingArray) -> SliceTask:
    """Steps (``z`` = sum of the parts of A, B and, if ``dealer_has_part``, C):

    1. C draws ``r_a`` (C-A key), ``r_b`` (B-C key) and ``s`` (private), sets
       ``r = r_a + r_b + s`` and sends ``w = part + s`` to A and B (if it has a part).
       It shares ``u = (r mod 2^63) >> d`` and ``m = r >> 63`` between A and B: A's
       share of ``u`` and B's share of ``m`` come from the keys, C sends the other
       shares. A sends ``part + r_a`` to B; B sends ``part + r_b`` to A.
    2. A and B each compute ``c = z + 2^62 + r`` and their share of
       ``R = c >> d + (1 - 2 c_msb) m << (63 - d) - u - 2^(62-d)`` (logical shift; this
       equals ``(c mod 2^63) >> d - (r mod 2^63) >> d + 2^(63-d) (c_msb xor r_msb)
       - 2^(62-d)``).
    3. A draws ``sigma_a`` (C-A key) and sends ``R_a - sigma_a`` to B; B draws
       ``sigma_b`` (B-C key) and sends ``R_b - sigma_b`` to A. With
       ``t = (R_a - sigma_a) + (R_b - sigma_b)`` the shares are A ``(sigma_a, t)``,
       B ``(t, sigma_b)``, C ``(sigma_b, sigma_a)``; C receives nothing.
    """
    if context.role == ROLE_C:
        _dealer(context, part, dealer_has_part, bits, out)
        return
    backend, n, tag = context.backend, context.size, context.stream_tag
    is_a = context.role == ROLE_A
    with_c = backend.randomness.previous if is_a else backend.randomness.next
    other, dealer = (backend.peer(1), backend.peer(-1)) if is_a else (backend.peer(-1),
                                                                      backend.peer(1))
    mine = np.empty(n, dtype=RING_DTYPE)
    mask_stream = with_c(tag, Purpose.MASK)
    scratch = np.empty((4, min(n, BLOCK_ELEMENTS)), dtype=RING_DTYPE)
    for block in blocks(n):
        drawn = scratch[0, : block.stop - block.start]
        part.compute(context.role, mine[block], _global(context, block))
        mask_stream.fill(drawn)
        mine[block] += drawn
        if is_a:
            mine[block] += _BIAS
    context.send(other, 0, 0, mine)
    requests = [context.expect(other, 0, 0)]
    if dealer_has_part:
        requests.append(context.expect(dealer, 0, 0))
    requests.append(context.expect(dealer, 0, 1 if dealer_has_part else 0))
    received = yield requests
    from_other, dealer_shares = received[0], received[-1]
    from_dealer = received[1] if dealer_has_part else None
    sigma, total = (out[0], out[1]) if is_a else (out[1], out[0])
    half = np.empty(n, dtype=RING_DTYPE)
    own_share = with_c(tag, Purpose.DEALER_HIGH if is_a else Purpose.DEALER_SIGN)
    sigma_stream = with_c(tag, Purpose.RESHARE_FIRST)
    high = np.uint64(63 - bits)
    offset = np.uint64(1 << (62 - bits))
    for block in blocks(n):
        k = block.stop - block.start
        c, negate, drawn, result = (scratch[i, :k] for i in range(4))
        np.add(mine[block], from_other[block], out=c)            # c = z + 2^62 + r
        if from_dealer is not None:
            c += from_dealer[block]
        np.right_shift(c, _SIGN_SHIFT, out=negate)
        np.negative(negate, out=negate)                           # all ones iff c_msb
        own_share.fill(drawn)
        m_share = dealer_shares[block] if is_a else drawn
        np.left_shift(m_share, high, out=result)                  # m << (63 - d)
        result ^= negate
        result -= negate                                          # (1 - 2 c_msb) m << ..
        result -= drawn if is_a else dealer_shares[block]         # - u share
        if is_a:
            c >>= np.uint64(bits)
            result += c
            result -= offset
        sigma_stream.fill(sigma[block])
        np.subtract(result, sigma[block], out=half[block])
    context.send(other, 1, 0, half)
    [from_other_half] = yield [context.expect(other, 1, 0)]
    np.add(half, from_other_half, out=total)


def _dealer(context: SliceContext, part: ProductPart, dealer_has_part: bool, bits: int,
            out: RingArray) -> None:
    """Role C of :func:`_reliable`."""
    backend, n, tag = context.backend, context.size, context.stream_tag
    randomness = backend.randomness
    to_a, to_b = backend.peer(1), backend.peer(-1)
    r_a = randomness.next(tag, Purpose.MASK)
    r_b = randomness.previous(tag, Purpose.MASK)
    u_a = randomness.next(tag, Purpose.DEALER_HIGH)
    m_b = randomness.previous(tag, Purpose.DEALER_SIGN)
    w = np.empty(n, dtype=RING_DTYPE) if dealer_has_part else None
    share_for_a = np.empty(n, dtype=RING_DTYPE)
    share_for_b = np.empty(n, dtype=RING_DTYPE)
    scratch = np.empty((3, min(n, BLOCK_ELEMENTS)), dtype=RING_DTYPE)
    for block in blocks(n):
        k = block.stop - block.start
        r, drawn, value = (scratch[i, :k] for i in range(3))
        r_a.fill(r)
        r_b.fill(drawn)
        r += drawn
        if w is not None:
            randomness.private.fill(drawn)
            r += drawn
            part.compute(ROLE_C, w[block], _global(context, block))
            w[block] += drawn
        np.bitwise_and(r, _LOW63, out=value)
        value >>= np.uint64(bits)
        u_a.fill(drawn)
        np.subtract(value, drawn, out=share_for_b[block])
        np.right_shift(r, _SIGN_SHIFT, out=value)
        m_b.fill(drawn)
        np.subtract(value, drawn, out=share_for_a[block])
    index = 0
    if w is not None:
        context.send(to_a, 0, 0, w)
        context.send(to_b, 0, 0, w)
        index = 1
    context.send(to_a, 0, index, share_for_a)
    context.send(to_b, 0, index, share_for_b)
    randomness.previous(tag, Purpose.RESHARE_FIRST).fill(out[0])   # sigma_b
    randomness.next(tag, Purpose.RESHARE_FIRST).fill(out[1])       # sigma_a
