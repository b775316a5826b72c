"""``exp``, ``log`` and ``sigmoid`` in fixed point (16 fraction bits).

**exp** (base-2 range reduction, as in Aly and Smart, "Benchmarking Privacy
Preserving Scientific Operations", ACNS 2019, Section 4): clamp ``x`` to
``[-10.39, 21.48]`` (above, the result would exceed the codec's range
``2^31``; below, it is under 2 units in the last place and the result is 0),
set ``y = x log2(e) + 15`` with 24 fraction bits, decompose it into bits,
and split it into the integer ``n + 15`` (six bits, injected into the ring)
and the fraction ``r``. Then
``2^(n+15) = prod_i (1 + b_i (2^(2^i) - 1))`` (three multiplication levels),
``2^r`` is a degree-6 polynomial (Chebyshev interpolation, error below
``3e-9``) with 26 fraction bits, split in two parts so that both products with
``2^(n+15)`` stay below ``2^62``.

**log** (``x > 0``): normalize ``x = v 2^(k-16)`` with ``v`` in ``[1, 2)``
(:func:`~concilium.ops.fixed_point.one_hot_exponent`); the six bits of ``k``
are XOR-parities of the one-hot word (local) and are injected into the ring;
``log2 v`` is a degree-8 polynomial in ``v - 1`` (error below ``6e-8``);
``ln x = ln 2 (k - 16 + log2 v)``.

**sigmoid**: ``s = 1 / (1 + exp(-|x|))`` with a Newton reciprocal on the known
range ``[1, 2]`` (no normalization), then ``sigmoid(x) = s`` or ``1 - s`` by
the sign of ``x``.

Polynomials are evaluated from the powers ``t, t^2, ..., t^d`` computed in
``ceil(log2 d)`` multiplication levels and one public linear combination.
Reveals: nothing.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from numpy.polynomial import Chebyshev, Polynomial

from concilium.mpc.backend import Backend, Shares, value_shape
from concilium.ops.bitwise import parity, reverse_words
from concilium.ops.compare import logical_not
from concilium.ops.conversion import bit_decompose, msb, to_arithmetic
from concilium.ops.fixed_point import (
    WORKING_BITS,
    fixed_constant,
    mul_trunc,
    one_hot_exponent,
    ring,
    trunc,
)
from concilium.ops.select import absolute

__all__ = ["exp", "log", "polynomial", "sigmoid"]

_FRACTION = 24  # fraction bits of y = x log2(e) in exp
_LOW, _HIGH = -10.39, 21.48
# bit i of k is the parity of the one-hot word masked to positions with index bit i
_INDEX_BIT_MASKS = tuple(np.uint64(sum(1 << p for p in range(64) if p >> i & 1))
                         for i in range(6))


def _fit(function: Callable[[np.ndarray], np.ndarray], degree: int) -> np.ndarray:
    """Power-basis coefficients of the Chebyshev interpolant on [0, 1]."""
    series = Chebyshev.interpolate(function, degree, domain=[0, 1])
    return np.asarray(series.convert(kind=Polynomial, domain=[0, 1], window=[0, 1]).coef)


_EXP2 = _fit(lambda t: 2.0**t, 6)
_LOG2 = _fit(lambda t: np.log2(1.0 + t), 8)


def _powers(backend: Backend, t: Shares, degree: int, bits: int) -> list[Shares]:
    """``[t, t^2, ..., t^degree]`` in ``ceil(log2 degree)`` multiplication levels."""
    powers = [t]
    while len(powers) < degree:
        top = powers[-1]
        count = min(len(powers), degree - len(powers))
        stacked = np.stack(powers[:count], axis=1)
        products = mul_trunc(backend, stacked, top[:, None], bits)
        powers += [products[:, j] for j in range(count)]
    return powers


def polynomial(backend: Backend, t: Shares, coefficients: np.ndarray, bits: int) -> Shares:
    """``sum_j c_j t^j`` with ``t`` and the result at ``bits`` fraction bits.
    Reveals: nothing."""
    powers = _powers(backend, t, len(coefficients) - 1, bits)
    total = np.zeros_like(t)
    for power, c in zip(powers, coefficients[1:], strict=True):
        total += backend.mul_public(power, fixed_constant(float(c), bits))
    return backend.add_public(trunc(backend, total, bits),
                              fixed_constant(float(coefficients[0]), bits))


def _clamp(backend: Backend, x: Shares, low: float, high: float,
           bits: int) -> tuple[Shares, Shares]:
    """``min(max(x, low), high)`` and the 0/1 ``[x < low]``: both comparisons in one
    batch, one multiplication."""
    low_ring, high_ring = fixed_constant(low, bits), fixed_constant(high, bits)
    below_above = backend.bit_inject(msb(backend, np.stack(
        [backend.add_public(x, -low_ring), backend.add_public(backend.neg(x), high_ring)],
        axis=1)))
    gaps = np.stack([backend.add_public(backend.neg(x), low_ring),
                     backend.add_public(backend.neg(x), high_ring)], axis=1)
    moves = backend.mul(below_above, gaps)
    return x + moves[:, 0] + moves[:, 1], below_above[:, 0]


def exp(backend: Backend, x: Shares, bits: int) -> Shares:
    """``e^x``, saturating outside ``[-10.39, 21.48]``. Reveals: nothing."""
    if bits != 16:
        raise NotImplementedError("exp is implemented for f = 16")
    shape = value_shape(x)
    flat, below = _clamp(backend, x.reshape(x.shape[0], -1), _LOW, _HIGH, bits)
    # |x| < 2^5 after clamping, so a 40-bit constant keeps the product below 2^62
    log2e = fixed_constant(math.log2(math.e), 40)
    y = trunc(backend, backend.mul_public(flat, log2e), 16 + 40 - _FRACTION)
    y = backend.add_public(y, ring(15 << _FRACTION))  # in [0, 46 * 2^24)
    words = bit_decompose(backend, y)
    integer = backend.bit_inject(np.stack(
        [words >> np.uint64(_FRACTION + i) for i in range(6)], axis=1))
    weights = ring([1 << (_FRACTION + i) for i in range(6)])
    fraction = backend.sub(y, np.einsum("cjn,j->cn", integer, weights, dtype=np.uint64))
    t = backend.mul_public(fraction, ring(1 << (WORKING_BITS - _FRACTION)))
    mantissa = polynomial(backend, t, _EXP2, WORKING_BITS)  # 2^r in [1, 2)
    # 2^(n+15) * mantissa would reach 2^72: split the mantissa at bit 10
    high = trunc(backend, mantissa, WORKING_BITS - 16)
    low = backend.sub(mantissa, backend.mul_public(high, ring(1 << (WORKING_BITS - 16))))
    factors = [backend.add_public(backend.mul_public(integer[:, i], ring((1 << (1 << i)) - 1)),
                                  ring(1)) for i in range(6)]
    pairs = backend.mul(np.stack(factors[0::2], axis=1), np.stack(factors[1::2], axis=1))
    four = backend.mul(pairs[:, 0], pairs[:, 1])
    power = backend.mul(four, pairs[:, 2])  # 2^(n + 15) <= 2^45
    both = backend.mul(power[:, None], np.stack([high, low], axis=1))
    low_part = trunc(backend, both[:, 1], WORKING_BITS - 16)
    result = trunc(backend, backend.add(both[:, 0], low_part), 15)
    result = backend.mul(result, logical_not(backend, below))  # below 2 units: 0
    return result.reshape((x.shape[0], *shape))


def log(backend: Backend, x: Shares, bits: int) -> Shares:
    """Natural logarithm for ``x > 0`` (unspecified for ``x <= 0``). Reveals: nothing."""
    if bits != 16:
        raise NotImplementedError("log is implemented for f = 16")
    fw = WORKING_BITS
    shape = value_shape(x)
    flat = x.reshape(x.shape[0], -1)
    one_hot = one_hot_exponent(backend, flat)
    factor = to_arithmetic(backend, reverse_words(one_hot) >> np.uint64(16))  # 2^(47-k)
    k_bits = backend.bit_inject(np.stack([parity(one_hot & mask)
                                          for mask in _INDEX_BIT_MASKS], axis=1))
    k = np.einsum("cjn,j->cn", k_bits, ring([1 << i for i in range(6)]), dtype=np.uint64)
    v = trunc(backend, backend.mul(flat, factor), 47 - fw)  # v in [1, 2)
    log2_v = polynomial(backend, backend.add_public(v, fixed_constant(-1.0, fw)), _LOG2, fw)
    log2_x = backend.add(log2_v, backend.mul_public(backend.add_public(k, ring(-16)),
                                                    ring(1 << fw)))
    result = trunc(backend, backend.mul_public(log2_x, fixed_constant(math.log(2), 20)),
                   fw + 20 - 16)
    return result.reshape((x.shape[0], *shape))


def sigmoid(backend: Backend, x: Shares, bits: int) -> Shares:
    """``1 / (1 + e^-x)``. Reveals: nothing."""
    if bits != 16:
        raise NotImplementedError("sigmoid is implemented for f = 16")
    fw = WORKING_BITS
    shape = value_shape(x)
    flat = x.reshape(x.shape[0], -1)
    magnitude, negative = absolute(backend, flat)
    s = exp(backend, backend.neg(magnitude), bits)  # in (0, 1]
    # u = (1 + s) / 2 in (1/2, 1] at fw bits; 1 / (1 + s) = w / 2
    u = backend.mul_public(backend.add_public(s, ring(1 << bits)), ring(1 << (fw - bits - 1)))
    w = backend.add_public(backend.mul_public(u, ring(-2)), fixed_constant(2.9142, fw))
    two = fixed_constant(2.0, fw)
    for _ in range(3):
        error = backend.add_public(backend.neg(mul_trunc(backend, u, w, fw)), two)
        w = mul_trunc(backend, w, error, fw)
    positive_side = trunc(backend, w, fw + 1 - bits)
    flipped = backend.add_public(backend.mul_public(positive_side, ring(-2)), ring(1 << bits))
    result = backend.add(positive_side, backend.mul(negative, flipped))
    return result.reshape((x.shape[0], *shape))

