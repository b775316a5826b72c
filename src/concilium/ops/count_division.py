"""Division of wide values by counts: ``n / d`` for a ring integer ``n`` beyond the
fixed-point range and an integer count ``0 <= d < 2^K`` (public ``K``).

Averages, variances and covariances of many rows divide sums that reach 2^46
by counts; the quotient is small (within the column's bounds), the numerator
is not. The fixed-point division (:mod:`concilium.ops.fixed_point`) needs its
numerator below 2^47 in the ring; exact long division
(:mod:`concilium.ops.long_division`) takes one comparison per quotient bit. This
division normalizes the count by its secret exponent, as in the reciprocal of
Catrina and Saxena, "Secure Computation With Fixed-Point Numbers" (FC 2010),
and scales the numerator by the *same* power of two, which keeps the product
within the ring because the quotient is bounded:

1. ``k = floor(log2 d)`` as a one-hot boolean word (bit decomposition and a
   prefix OR); the five bits ``e_i`` of ``e = K - 1 - k`` and ``z = [d > 0]`` are
   parities of masked one-hot bits (local), injected into the ring, and
   ``P = z prod_i (1 + e_i (2^(2^i) - 1)) = 2^(K - 1 - k)`` (0 for ``d = 0``) takes
   three multiplication levels: six injected bits instead of ``K``;
2. ``u = d P`` in ``[2^(K-1), 2^K)`` (the count normalized to ``[1/2, 1)``) and
   ``t = n 2^F P / 2^K = n 2^F / 2^(k + 1)`` (``|t| < 2^(Q + F)`` since
   ``|n| < 2^Q d``), in one multiplication round: as ``trunc(n P, K - F)`` when
   ``|n P| < 2^(Q + K)`` fits the ring, else with ``n = h 2^K + l`` (an exact
   truncation) as ``h P 2^F + trunc(l P, K - F)``;
3. ``w = 1 / u`` at 30 fraction bits (a linear start and three Newton steps);
4. ``q = t w / 2^30`` (``w`` split in two halves so that each product stays
   below 2^62), which is ``n 2^F / d`` within a relative 2^-22;
5. one correction: the remainder ``r = n 2^F - q d`` is exact (mod 2^64) and
   small, and ``q + trunc(r P, K) w / 2^30`` leaves only the truncations' few
   units.

Error: a few units in the last place of ``q``. A zero count gives 0 (the caller
masks it). Cost: about 43 rounds whatever the numbers of bits, against one
comparison per quotient bit for long division.

Reveals: nothing.
"""

from __future__ import annotations

import numpy as np

from concilium.errors import ConfigurationError
from concilium.mpc.backend import Backend, Shares
from concilium.ops.bitwise import parity
from concilium.ops.compare import broadcast_pair
from concilium.ops.fixed_point import fixed_constant, one_hot_exponent, ring
from concilium.ops.truncation import exact_truncate
from concilium.ring.arithmetic import RING_DTYPE

__all__ = ["divide_by_count", "fits"]

_BITS = 30  # the reciprocal's fraction bits (products of two stay below 2^61)
_SPLIT = 15  # w = w_high 2^15 + w_low


def fits(count_bits: int, quotient_bits: int, fraction_bits: int = 0) -> bool:
    """Whether :func:`divide_by_count` takes these sizes (else use long division).

    Reveals: nothing (public sizes only)."""
    return (1 <= count_bits <= 31
            and quotient_bits + fraction_bits + (_BITS + 1 - _SPLIT) + 1 <= 61
            and fraction_bits <= _BITS - _SPLIT)


def _reciprocal(backend: Backend, u: Shares) -> Shares:
    """``1/u`` for ``u`` in ``[1/2, 1)`` at 30 fraction bits: a linear start and three
    Newton steps ``w (2 - u w)``."""
    w = backend.add_public(backend.mul_public(u, ring(-2)),
                           fixed_constant(2.9142, _BITS))
    two = fixed_constant(2.0, _BITS)
    for _ in range(3):
        error = backend.add_public(backend.neg(backend.mul_trunc(u, w, _BITS)), two)
        w = backend.mul_trunc(w, error, _BITS)
    return w


def _power(exponent: int) -> np.ndarray:
    return np.asarray(1 << exponent, dtype=RING_DTYPE)


def divide_by_count(backend: Backend, numerator: Shares, count: Shares, *, count_bits: int,
                    quotient_bits: int, fraction_bits: int = 0) -> Shares:
    """``numerator * 2^fraction_bits / count`` (steps above), for ``0 <= count <
    2^count_bits`` and ``|numerator / count| < 2^quotient_bits`` (both public bounds
    the caller guarantees; see :func:`fits`).

    Reveals: nothing.
    """
    if not fits(count_bits, quotient_bits, fraction_bits):
        raise ConfigurationError(f"divide_by_count takes at most 61 bits: {count_bits} count "
                                 f"bits, {quotient_bits} quotient bits, {fraction_bits} "
                                 "fraction bits")
    numerator, count = broadcast_pair(numerator, count)
    shape = numerator.shape
    n = numerator.reshape(shape[0], -1)
    d = count.reshape(shape[0], -1)
    big_k, fw = count_bits, _BITS
    power = _normalizing_power(backend, one_hot_exponent(backend, d), big_k)  # step 1
    fraction = fraction_bits
    if quotient_bits + big_k <= 61:  # step 2: n P fits the ring
        both = backend.mul(np.stack([d, n], axis=1), np.stack([power, power], axis=1))
        u = both[:, 0]
        t = _shift(backend, both[:, 1], big_k - fraction)
    else:  # n = high 2^K + low, 0 <= low < 2^K: high P and low P both fit
        high_n = exact_truncate(backend, n, big_k)
        low_n = backend.sub(n, backend.mul_public(high_n, _power(big_k)))
        products = backend.mul(np.stack([d, high_n, low_n], axis=1),
                               np.stack([power, power, power], axis=1))
        u = products[:, 0]
        t = backend.add(backend.mul_public(products[:, 1], _power(fraction)),
                        _shift(backend, products[:, 2], big_k - fraction))
    if big_k > fw:
        u = backend.trunc(u, big_k - fw)
    elif big_k < fw:
        u = backend.mul_public(u, _power(fw - big_k))
    w = _reciprocal(backend, u)  # step 3
    result = _times(backend, t, w)  # step 4
    scaled = backend.mul_public(n, _power(fraction)) if fraction else n
    result = backend.add(result, _correction(backend, scaled, d, power, w, result, big_k))
    return result.reshape(shape)


def _position_bits(one_hot: Shares, positions: list[int]) -> Shares:
    """Boolean ``[k in positions]`` for the set bit ``k`` of a one-hot word: the
    parity of the word masked to ``positions`` (XOR-linear, local)."""
    return parity(one_hot & np.uint64(sum(1 << p for p in positions)))


def _normalizing_power(backend: Backend, one_hot: Shares, big_k: int) -> Shares:
    """``P = 2^(K - 1 - k)`` for the one-hot exponent ``k < K`` (0 for the zero word)."""
    covered = range(big_k)
    exponent_bits = [_position_bits(one_hot, [p for p in covered if (big_k - 1 - p) >> i & 1])
                     for i in range((big_k - 1).bit_length())]
    nonzero = _position_bits(one_hot, list(covered))
    bits = backend.bit_inject(np.stack([nonzero, *exponent_bits], axis=1))
    factors = [bits[:, 0]] + [
        backend.add_public(backend.mul_public(bits[:, 1 + i], ring((1 << (1 << i)) - 1)),
                           ring(1)) for i in range(len(exponent_bits))]
    while len(factors) > 1:  # a product tree: ceil(log2(6)) = 3 levels
        half = len(factors) // 2
        pairs = backend.mul(np.stack(factors[:half], axis=1),
                            np.stack(factors[half:2 * half], axis=1))
        factors = [pairs[:, j] for j in range(half)] + factors[2 * half:]
    return factors[0]


def _shift(backend: Backend, x: Shares, amount: int) -> Shares:
    """``x / 2^amount`` (a truncation), or ``x 2^-amount`` for a negative amount."""
    if amount > 0:
        return backend.trunc(x, amount)
    return backend.mul_public(x, _power(-amount)) if amount else x


def _times(backend: Backend, t: Shares, w: Shares) -> Shares:
    """``t w / 2^30``, with ``w`` split in halves so that both products fit."""
    high = backend.trunc(w, _SPLIT)
    low_part = backend.sub(w, backend.mul_public(high, _power(_SPLIT)))
    products = backend.mul(np.stack([t, t], axis=1), np.stack([high, low_part], axis=1))
    total = backend.add(products[:, 0], backend.trunc(products[:, 1], _SPLIT))
    return backend.trunc(total, _BITS - _SPLIT)


def _correction(backend: Backend, n: Shares, d: Shares, power: Shares, w: Shares,
                q: Shares, big_k: int) -> Shares:
    """``(n - q d) / d`` with the same normalization: the remainder is small, so the
    reciprocal's relative error applies to it alone (mod 2^64, ``n`` and ``q d`` may
    wrap: the remainder is exact all the same)."""
    remainder = backend.sub(n, backend.mul(q, d))
    scaled = backend.trunc(backend.mul(remainder, power), big_k)  # r / 2^(k + 1)
    return _times(backend, scaled, w)
