"""Fixed-point truncation for ``rep3``: the fast and the reliable protocol.

Both divide a shared ``z`` by ``2^d`` with unbiased (stochastic) rounding:
the result is ``floor(z / 2^d)`` or that plus one, with expectation
``z / 2^d``. They differ in what can go wrong.

Roles rotate with the operation's tag (``role = (index - tag) mod 3``: A, B,
C), so the extra work of the busiest role is spread over the parties.
Party A's next key is shared with B, B's next with C, C's next with A.

**Fast** (ABY3, Mohassel and Rindal CCS 2018, Section 5.1.1, share
truncation after SecureML, Mohassel and Zhang S&P 2017). The parties turn
``z`` into a two-party additive sharing ``z = P + Q`` (A holds ``P``; B and C
both hold ``Q``), shift each part locally as a signed integer, and rebuild a
replicated sharing. One round, one ring element per party per element, fused
with the multiplication.

*Failure probability*: the local shifts are off by ``2^(64-d)`` exactly when
``P + Q`` wraps around as signed 64-bit integers. ``P`` is uniform, so this
happens with probability ``|z| / 2^64`` per element (e.g. ``2^-22`` for a
product of two fixed-point values of magnitude 32 at ``f = 16``). Use it
only where that is acceptable, such as intermediate values that are summed
with many others and checked.

**Reliable** (probabilistic truncation of Escudero, Ghosh, Keller, Rachuri and
Scholl, "Improved Primitives for MPC over Mixed Arithmetic-Binary Circuits",
CRYPTO 2020, Section 5.1, with the masks ``r``, ``r_msb`` and
``(r mod 2^63) >> d`` supplied by party C as a semi-honest helper that never
sees the opened value, as in the three-party helper protocols of
SecureNN, Wagh, Gupta and Chandran PETS 2019). A and B open
``c = z + 2^62 + r`` to each other (``r`` uniform, known only to C), and
compute ``z >> d = (c mod 2^63) >> d - (r mod 2^63) >> d + 2^(63-d) (c_msb xor
r_msb) - 2^(62-d)`` with an error of at most one unit. *Failure probability*:
zero for every ``|z| < 2^62``. Two rounds; 16 bytes per element for A and B,
32 for C (16 when truncating an existing sharing).

Reveals: nothing. ``c`` is opened to A and B only and is uniformly random to
them (``r`` is uniform and unknown to both); C sees only values masked by
randomness it does not know.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from concilium.mpc.backend import Shares, Truncation, value_shape
from concilium.ring.arithmetic import RING_DTYPE, RingArray

if TYPE_CHECKING:
    from concilium.mpc.rep3 import Rep3

__all__ = ["fast_truncate", "product_truncate", "reliable_truncate"]

Product = Callable[[RingArray, RingArray], RingArray]

_ROLE_A, _ROLE_B, _ROLE_C = 0, 1, 2
_LOW63 = np.uint64((1 << 63) - 1)
_BIAS = np.uint64(1 << 62)
_ONE = np.uint64(1)


def _role(backend: Rep3, tag: int) -> int:
    return (backend.index - tag) % 3


def _shift_signed(values: RingArray, bits: int) -> RingArray:
    """Arithmetic (sign-preserving) right shift of ring elements read as int64."""
    return np.right_shift(values.view(np.int64), bits).view(RING_DTYPE)


def _role_product(role: int, x: Shares, y: Shares, product: Product) -> RingArray:
    """This role's part of ``x * y`` as a three-party additive sharing.

    A holds (a, b), B holds (b, c), C holds (c, a); the nine cross terms split
    as A: (a+b)(a'+b'), B: c(b'+c') + b c', C: a c' + c a'.
    """
    if role == _ROLE_A:
        return product(x[0] + x[1], y[0] + y[1])
    if role == _ROLE_B:
        out = product(x[1], y[0] + y[1])
        out += product(x[0], y[1])
        return out
    out = product(x[1], y[0])
    out += product(x[0], y[1])
    return out


def product_truncate(backend: Rep3, x: Shares, y: Shares, product: Product, bits: int,
                     mode: Truncation, tag: int) -> Shares:
    """``trunc(product(x, y), bits)`` for elementwise or matrix products."""
    role = _role(backend, tag)
    part = np.require(_role_product(role, x, y, product), requirements="C")
    if mode == "fast":
        randomness = backend.randomness
        mask = randomness.previous.integers(part.shape)
        part += mask
        randomness.next.fill(mask)
        part -= mask
        return _fast_finish(backend, role, part, None, bits, tag)
    return _reliable_finish(backend, role, part, True, bits, tag)


def fast_truncate(backend: Rep3, x: Shares, bits: int, tag: int) -> Shares:
    """Truncate an existing sharing: ``P = x_a + x_b + rho`` at A, ``Q = x_c - rho`` at
    B and C, with ``rho`` from the common key so ``P`` is uniform."""
    role = _role(backend, tag)
    rho = backend.randomness.common.integers(value_shape(x))
    if role == _ROLE_A:
        return _fast_finish(backend, role, x[0] + x[1] + rho, None, bits, tag)
    q = (x[1] if role == _ROLE_B else x[0]) - rho
    return _fast_finish(backend, role, None, q, bits, tag)


def _fast_finish(backend: Rep3, role: int, part: RingArray | None, q: RingArray | None,
                 bits: int, tag: int) -> Shares:
    """Steps, given A's ``P`` and either ``Q`` or the 3-out-of-3 parts of B and C:

    1. A: ``t_a = (P >> d) - r`` with ``r`` from the A-B key; send ``t_a`` to C.
    2. B and C: swap their parts (if any) to form ``Q``; ``t_c = (Q >> d) + 1``.
    3. Shares: A ``(t_a, r)``, B ``(r, t_c)``, C ``(t_c, t_a)``.
    """
    randomness = backend.randomness
    if role == _ROLE_A:
        assert part is not None
        out = np.empty((2, *part.shape), dtype=RING_DTYPE)
        randomness.next.fill(out[1, ...])
        np.subtract(_shift_signed(part, bits), out[1, ...], out=out[0, ...])
        backend.send(backend.peer(-1), tag, out[0, ...])
        return out
    if q is None:
        assert part is not None
        other = backend.peer(1) if role == _ROLE_B else backend.peer(-1)
        backend.send(other, tag, part)
        q = part + backend.receive_ring(other, tag, part.shape)
    out = np.empty((2, *q.shape), dtype=RING_DTYPE)
    shifted = _shift_signed(q, bits)
    shifted += _ONE
    if role == _ROLE_B:
        randomness.previous.fill(out[0, ...])
        out[1, ...] = shifted
    else:
        out[0, ...] = shifted
        out[1, ...] = backend.receive_ring(backend.peer(1), tag, q.shape)
    return out


def reliable_truncate(backend: Rep3, x: Shares, bits: int, tag: int) -> Shares:
    """Truncate an existing sharing: A contributes ``x_a``, B ``x_b + x_c``."""
    role = _role(backend, tag)
    part = {_ROLE_A: x[0], _ROLE_B: x[0] + x[1], _ROLE_C: x[0]}[role]
    return _reliable_finish(backend, role, np.require(part, requirements="C"), False, bits, tag)


def _reliable_finish(backend: Rep3, role: int, part: RingArray, dealer_has_part: bool,
                     bits: int, tag: int) -> Shares:
    """Steps (``z`` = sum of the parts of A, B and, if ``dealer_has_part``, C):

    1. C draws ``r_a`` (C-A key), ``r_b`` (B-C key), ``s`` (private) and sets
       ``r = r_a + r_b + s``; it shares ``u = (r mod 2^63) >> d`` and ``m = r >> 63``
       between A and B (A's share of ``u`` and B's share of ``m`` from the keys, the
       other shares sent). A sends ``part + r_a`` to B, B sends ``part + r_b`` to A,
       C sends ``part + s`` to both.
    2. A and B each compute ``c = z + 2^62 + r`` and their share of
       ``R = (c mod 2^63) >> d - u + 2^(63-d) (c_msb + (1 - 2 c_msb) m) - 2^(62-d)``.
    3. A and B draw ``rho_1``, ``rho_2`` (A-B key); A sends ``R_a - rho_1`` and B
       ``R_b - rho_2`` to C. Shares: A ``(R_a - rho_1, rho_1 + rho_2)``,
       B ``(rho_1 + rho_2, R_b - rho_2)``, C ``(R_b - rho_2, R_a - rho_1)``.
    """
    randomness = backend.randomness
    shape = part.shape
    if role == _ROLE_C:
        return _dealer(backend, part, dealer_has_part, bits, tag)
    if role == _ROLE_A:
        key_with_c, key_with_b, other = randomness.previous, randomness.next, backend.peer(1)
    else:
        key_with_c, key_with_b, other = randomness.next, randomness.previous, backend.peer(-1)
    c = key_with_c.integers(shape)                     # r_a (A) or r_b (B)
    c += part
    backend.send(other, tag, c)
    own_mask_share = key_with_c.integers(shape)        # A: share of u; B: share of m
    c = c + backend.receive_ring(other, tag, shape)
    rows = 2 if dealer_has_part else 1
    from_dealer = backend.receive_ring(backend.peer(-1 if role == _ROLE_A else 1), tag,
                                       (rows, *shape))
    if dealer_has_part:
        c += from_dealer[0]
    c += _BIAS
    c_msb = c >> np.uint64(63)
    sign = _ONE - (c_msb << _ONE)                      # 1 - 2 c_msb (mod 2^64)
    high = np.uint64(63 - bits)
    if role == _ROLE_A:
        u_share, m_share = own_mask_share, from_dealer[rows - 1]
        result = (c & _LOW63) >> np.uint64(bits)
        result -= u_share
        result += (c_msb + sign * m_share) << high
        result -= np.uint64(1 << (62 - bits))
    else:
        u_share, m_share = from_dealer[rows - 1], own_mask_share
        result = (sign * m_share) << high
        result -= u_share
    first, second = key_with_b.integers(shape), key_with_b.integers(shape)
    out = np.empty((2, *shape), dtype=RING_DTYPE)
    if role == _ROLE_A:
        np.subtract(result, first, out=out[0, ...])
        np.add(first, second, out=out[1, ...])
        backend.send(backend.peer(-1), tag, out[0, ...])
    else:
        np.add(first, second, out=out[0, ...])
        np.subtract(result, second, out=out[1, ...])
        backend.send(backend.peer(1), tag, out[1, ...])
    return out


def _dealer(backend: Rep3, part: RingArray, dealer_has_part: bool, bits: int,
            tag: int) -> Shares:
    """Role C of :func:`_reliable_finish` (``part`` gives the shape even when unused)."""
    randomness = backend.randomness
    shape = part.shape
    rows = 2 if dealer_has_part else 1
    r = randomness.next.integers(shape)                # r_a, C-A key
    r += randomness.previous.integers(shape)           # r_b, B-C key
    to_a = np.empty((rows, *shape), dtype=RING_DTYPE)
    to_b = np.empty((rows, *shape), dtype=RING_DTYPE)
    if dealer_has_part:
        s = randomness.private.integers(shape)
        r += s
        np.add(part, s, out=to_a[0, ...])
        to_b[0, ...] = to_a[0, ...]
    u = (r & _LOW63) >> np.uint64(bits)
    m = r >> np.uint64(63)
    np.subtract(u, randomness.next.integers(shape), out=to_b[rows - 1, ...])
    np.subtract(m, randomness.previous.integers(shape), out=to_a[rows - 1, ...])
    backend.send(backend.peer(1), tag, to_a)
    backend.send(backend.peer(-1), tag, to_b)
    out = np.empty((2, *shape), dtype=RING_DTYPE)
    out[0, ...] = backend.receive_ring(backend.peer(-1), tag, shape)
    out[1, ...] = backend.receive_ring(backend.peer(1), tag, shape)
    return out
