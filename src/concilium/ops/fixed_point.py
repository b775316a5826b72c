"""Division, reciprocal, square root and inverse square root in fixed point.

Inputs and outputs are fixed-point sharings with ``bits`` fraction bits (the
codec's ``f``, 16 by default) in the codec's range (``|x| < 2^31``). Inside,
every truncation is the reliable one (fast truncation fails with probability
up to 1/4 at the magnitudes used here), and mantissas carry ``WORKING_BITS``
= 26 fraction bits.

**Normalization** (Catrina and Saxena, "Secure Computation with Fixed-Point
Numbers", FC 2010, Section 3.4, with the bit-level steps of Aly and Smart,
"Benchmarking Privacy Preserving Scientific Operations", ACNS 2019):

1. decompose ``|x|`` into bits (:func:`~concilium.ops.conversion.bit_decompose`);
2. OR every bit into all lower ones (6 AND levels): the word ``y`` with ones
   from bit ``k = floor(log2 |x|)`` down;
3. ``e = y ^ (y >> 1)`` is one-hot at ``k``; local bit permutations of ``e`` give
   one-hot words of the scale factors needed (``2^(47-k)``, ``2^(23-k/2)``, ...),
   which are converted to arithmetic sharings with
   :func:`~concilium.ops.conversion.to_arithmetic` (roots), or built from bits of
   ``k`` injected into the ring (division).

**Reciprocal and division** then run Newton's iteration ``w <- w (2 - u w)`` on
the mantissa ``u`` in ``[1/2, 1)`` from the linear start ``2.9142 - 2u``
(relative error 0.086 before, below ``2^-26`` after three iterations), and
scale the result back by ``2^(-k)`` with three block factors
``2^(15 - k mod 16)`` (seven bits of ``k``, local functions of the one-hot word,
injected into the ring; two multiplication levels), so that no intermediate
product exceeds ``2^62``. Division by zero returns 0
(nothing can be raised without revealing that a divisor was zero).

**Square root and inverse square root** normalize to ``u`` in ``[1/4, 1)``
with an even exponent, start from a quadratic fit (relative error 0.03) and
run three Newton steps ``y <- y (3 - u y^2) / 2``; ``sqrt(u) = u / sqrt(u)``.

Measured errors over the whole range are in ``docs/ops-library.md`` (made by
``docs/error_table.py``). Reveals: nothing (the B2A conversions open only
uniformly masked words).
"""

from __future__ import annotations

import numpy as np
from numpy.polynomial import Chebyshev, Polynomial

from concilium.mpc.backend import Backend, Shares, Truncation, value_shape
from concilium.ops.bitwise import compress_even, parity, reverse_words
from concilium.ops.compare import broadcast_pair, less_than_zero
from concilium.ops.conversion import bit_decompose, to_arithmetic
from concilium.ring.arithmetic import RING_DTYPE, RingArray

__all__ = ["WORKING_BITS", "divide", "inverse_sqrt", "reciprocal", "sqrt"]

WORKING_BITS = 26
_RELIABLE: Truncation = "reliable"
#: The exponent k < 48 falls in one of three blocks of 16, so a block factor
#: ``2^(15 - k mod 16)`` stays below 2^16 and its products below 2^62.
_BLOCK, _BLOCK_COUNT = 16, 3
_EVEN = np.uint64(0x5555555555555555)


def ring(values: object) -> RingArray:
    """Signed integers (Python or numpy) as ring elements."""
    return np.asarray(values, dtype=np.int64).astype(RING_DTYPE)


def fixed_constant(value: float, bits: int) -> RingArray:
    """A public real as a ring element with ``bits`` fraction bits."""
    return ring(round(value * 2**bits))


def trunc(backend: Backend, x: Shares, bits: int) -> Shares:
    return backend.trunc(x, bits, _RELIABLE)


def mul_trunc(backend: Backend, x: Shares, y: Shares, bits: int) -> Shares:
    return backend.mul_trunc(x, y, bits, _RELIABLE)


def one_hot_exponent(backend: Backend, x: Shares) -> Shares:
    """Boolean one-hot word with bit ``floor(log2 x)`` set, for ``0 < x < 2^63``
    (the zero word for ``x = 0``). Reveals: nothing."""
    y = bit_decompose(backend, x)
    for level in range(6):
        shifted = y >> np.uint64(1 << level)
        y = y ^ shifted ^ backend.and_(y, shifted)  # y | shifted
    return y ^ (y >> np.uint64(1))


def _position_bits(one_hot: Shares, positions: list[int]) -> Shares:
    """Boolean ``[k in positions]`` for the position ``k`` of a one-hot word: the
    parity of the word masked to ``positions`` (XOR-linear, local)."""
    mask = np.uint64(sum(1 << p for p in positions))
    return parity(one_hot & mask)


def _block_factors(backend: Backend, one_hot: Shares) -> Shares:
    """Arithmetic ``G_j = 2^(15 - k mod 16)`` when ``16 j <= k < 16 j + 16``, else 0,
    for the three blocks of ``k < 48``, stacked on axis 1.

    The seven bits needed (block membership, and the four bits of ``15 - k mod 16``)
    are local functions of the one-hot word; they are injected into the ring and
    ``2^(15 - k mod 16) = prod_i (1 + d_i (2^(2^i) - 1))`` takes two multiplication
    levels, then one more selects the block.
    """
    covered = range(_BLOCK * _BLOCK_COUNT)
    membership = [_position_bits(one_hot, [p for p in covered if p // _BLOCK == j])
                  for j in range(_BLOCK_COUNT)]
    offset = [_position_bits(one_hot, [p for p in covered if not (p >> i) & 1])
              for i in range(4)]
    bits = backend.bit_inject(np.stack(membership + offset, axis=1))
    factors = [backend.add_public(backend.mul_public(bits[:, _BLOCK_COUNT + i],
                                                     ring((1 << (1 << i)) - 1)), ring(1))
               for i in range(4)]
    pairs = backend.mul(np.stack(factors[0::2], axis=1), np.stack(factors[1::2], axis=1))
    power = backend.mul(pairs[:, 0], pairs[:, 1])  # 2^(15 - k mod 16)
    return backend.mul(bits[:, :_BLOCK_COUNT], power[:, None])


def _newton_reciprocal(backend: Backend, u: Shares) -> Shares:
    """``1/u`` for ``u`` in ``[1/2, 1]`` at WORKING_BITS: three Newton steps."""
    fw = WORKING_BITS
    w = backend.add_public(backend.mul_public(u, ring(-2)), fixed_constant(2.9142, fw))
    two = fixed_constant(2.0, fw)
    for _ in range(3):
        error = backend.add_public(backend.neg(mul_trunc(backend, u, w, fw)), two)
        w = mul_trunc(backend, w, error, fw)
    return w


def _staged_truncation(backend: Backend, products: Shares, amounts: tuple[int, ...]) -> Shares:
    """``sum_j trunc(products[:, j], amounts[j])`` for increasing ``amounts``: truncate
    all blocks by the first amount, the later ones further by the differences, so
    each block's result is within one unit."""
    total = np.zeros_like(products[:, 0])
    done = 0
    for amount in amounts:
        if amount > done:
            products = trunc(backend, products, amount - done)
            done = amount
        total += products[:, 0]
        products = products[:, 1:]
    return total


def _scaled_numerator(backend: Backend, numerator: Shares, factors: Shares) -> Shares:
    """``numerator * 2^(15 - k)`` from the block factors: ``G_j / 2^(16 j)`` (exact for
    k < 16, else within one unit); ``|numerator| < 2^47`` keeps products below 2^62."""
    products = backend.mul(numerator[:, None], factors)
    return _staged_truncation(backend, products, tuple(_BLOCK * j for j in range(_BLOCK_COUNT)))


def _normalize_divisor(backend: Backend, magnitude: Shares) -> tuple[Shares, Shares]:
    """The block factors of ``magnitude``'s exponent and ``1/u`` at WORKING_BITS for
    its mantissa ``u`` in ``[1/2, 1)``."""
    fw = WORKING_BITS
    factors = _block_factors(backend, one_hot_exponent(backend, magnitude))
    # normalized divisor u in [1/2, 1): magnitude * 2^(47-k) / 2^48
    scale = np.zeros_like(magnitude)
    for j in range(_BLOCK_COUNT):  # 2^(47 - k) = G_j 2^(32 - 16 j)
        scale += backend.mul_public(factors[:, j], ring(1 << (32 - _BLOCK * j)))
    u = trunc(backend, backend.mul(magnitude, scale), 48 - fw)
    return factors, _newton_reciprocal(backend, u)


def _divide_magnitude(backend: Backend, numerator: Shares, magnitude: Shares) -> Shares:
    """``numerator / magnitude`` for ``magnitude >= 0``, 16 fraction bits each."""
    fw = WORKING_BITS
    factors, w = _normalize_divisor(backend, magnitude)
    y = _scaled_numerator(backend, numerator, factors)  # a / b = y / u / 2^16
    # y * w would reach 2^74: split w = w_high 2^13 + w_low, both products < 2^62
    w_high = trunc(backend, w, 13)
    w_low = backend.sub(w, backend.mul_public(w_high, ring(1 << 13)))
    low = trunc(backend, backend.mul(y, w_low), 13)
    return trunc(backend, backend.add(backend.mul(y, w_high), low), fw - 13)


def _reciprocal_magnitude(backend: Backend, magnitude: Shares) -> Shares:
    """``1 / magnitude`` for ``magnitude >= 0``: ``2^16 / x = w 2^(31 - k - fw)``, and
    ``w G_j < 2^40`` is truncated by ``high_j - 5`` bits, one unit at most."""
    factors, w = _normalize_divisor(backend, magnitude)
    products = backend.mul(w[:, None], factors)
    amounts = tuple(WORKING_BITS - 16 + _BLOCK * j for j in range(_BLOCK_COUNT))
    return _staged_truncation(backend, products, amounts)


def _check_bits(bits: int) -> None:
    if bits != 16:
        raise NotImplementedError("division and roots are implemented for f = 16")


def divide(backend: Backend, numerator: Shares, denominator: Shares, bits: int) -> Shares:
    """``numerator / denominator`` in fixed point (0 where the denominator is 0).

    Reveals: nothing.
    """
    _check_bits(bits)
    numerator, denominator = broadcast_pair(numerator, denominator)
    shape = value_shape(denominator)
    a = numerator.reshape(numerator.shape[0], -1)
    b = denominator.reshape(denominator.shape[0], -1)
    negative = less_than_zero(backend, b)
    flip = backend.add_public(backend.mul_public(negative, ring(-2)), ring(1))
    both = backend.mul(np.stack([b, a], axis=1), flip[:, None])  # |b| and a * sign(b)
    result = _divide_magnitude(backend, both[:, 1], both[:, 0])
    return result.reshape((result.shape[0], *shape))


def reciprocal(backend: Backend, x: Shares, bits: int) -> Shares:
    """``1 / x`` in fixed point (0 for x = 0). Reveals: nothing."""
    _check_bits(bits)
    shape = value_shape(x)
    flat = x.reshape(x.shape[0], -1)
    negative = less_than_zero(backend, flat)
    flip = backend.add_public(backend.mul_public(negative, ring(-2)), ring(1))
    magnitude = backend.mul(flat, flip)
    result = _reciprocal_magnitude(backend, magnitude)
    return backend.mul(result, flip).reshape((x.shape[0], *shape))


_INVERSE_SQRT_START = Chebyshev.interpolate(
    lambda u: 1 / np.sqrt(u), 2, domain=[0.25, 1]).convert(
        kind=Polynomial, domain=[0.25, 1], window=[0.25, 1]).coef


def _root_factors(backend: Backend, x: Shares, inverse: bool) -> Shares:
    """Arithmetic ``H = 2^(46 - 2m)`` and ``J = 2^(23 - m)`` (inverse) or ``2^m``
    (square root), ``m = floor(k / 2)``, stacked on axis 1."""
    one_hot = one_hot_exponent(backend, x)
    pair = (one_hot ^ (one_hot >> np.uint64(1))) & _EVEN  # bit 2m
    half = compress_even(pair)  # bit m
    h = reverse_words(pair) >> np.uint64(17)
    j = (reverse_words(half) >> np.uint64(40)) if inverse else half
    return to_arithmetic(backend, np.stack([h, j], axis=1))


def _inverse_sqrt_mantissa(backend: Backend, u: Shares) -> Shares:
    """``1/sqrt(u)`` for ``u`` in ``[1/4, 1)`` at WORKING_BITS."""
    fw = WORKING_BITS
    c0, c1, c2 = (fixed_constant(float(c), fw) for c in _INVERSE_SQRT_START)
    square = mul_trunc(backend, u, u, fw)
    y = backend.add_public(
        trunc(backend, backend.mul_public(u, c1) + backend.mul_public(square, c2), fw), c0)
    three = fixed_constant(3.0, fw)
    for _ in range(3):
        y2 = mul_trunc(backend, y, y, fw)
        t = backend.add_public(backend.neg(mul_trunc(backend, u, y2, fw)), three)
        y = mul_trunc(backend, y, t, fw + 1)
    return y


def _root(backend: Backend, x: Shares, bits: int, inverse: bool) -> Shares:
    _check_bits(bits)
    fw = WORKING_BITS
    shape = value_shape(x)
    flat = x.reshape(x.shape[0], -1)
    factors = _root_factors(backend, flat, inverse)
    u = trunc(backend, backend.mul(flat, factors[:, 0]), 48 - fw)  # u in [1/4, 1)
    s = _inverse_sqrt_mantissa(backend, u)
    if inverse:  # 1/sqrt(x) * 2^16 = s * 2^(23 - m) / 2^fw
        result = trunc(backend, backend.mul(s, factors[:, 1]), fw)
    else:  # sqrt(x) * 2^16 = (u s) * 2^m / 2^(fw - 9)
        root_u = mul_trunc(backend, u, s, fw)
        result = trunc(backend, backend.mul(root_u, factors[:, 1]), fw - 9)
    return result.reshape((x.shape[0], *shape))


def sqrt(backend: Backend, x: Shares, bits: int) -> Shares:
    """``sqrt(x)`` for ``x >= 0`` (negative inputs give an unspecified value).
    Reveals: nothing."""
    return _root(backend, x, bits, inverse=False)


def inverse_sqrt(backend: Backend, x: Shares, bits: int) -> Shares:
    """``1 / sqrt(x)`` for ``x > 0`` (0 for x = 0). Reveals: nothing."""
    return _root(backend, x, bits, inverse=True)
