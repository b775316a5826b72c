"""Exact division of wide integers: restoring long division on secret shares.

The fixed-point division of :mod:`concilium.ops.fixed_point` takes operands in
the codec's range (``|x| < 2^31``). Aggregates over many rows do not fit it: a
sum of a money column over ten million rows reaches ``2^46``. Their quotients
do fit, though (an average lies within the column's bounds), and the number of
quotient bits is public (from the schema's bounds). Restoring binary long
division (Knuth, TAOCP vol. 2, 4.3.1) computes them exactly, one secure
comparison per quotient bit, on remainders that never exceed ``2 d``:

1. ``a = |n|`` and the sign of ``n`` (one comparison);
2. ``r = floor(a / 2^Q)`` (an exact truncation; ``r < d`` because the quotient
   has fewer than ``Q`` integer bits), and the ``Q`` low bits of ``a`` (one A2B
   conversion and one bit injection);
3. for each low bit, highest first, then for each of the ``F`` fraction bits (a
   0 bit): ``r = 2 r + bit``; ``t = r - d``; the quotient bit is ``[t >= 0]`` (one
   comparison); ``r = t + [t < 0] d`` (one multiplication);
4. ``q = sum of quotient bits 2^k`` with the sign of ``n`` (truncation toward zero).

It computes ``trunc(n 2^F / d)`` for ``|n| < 2^62`` and ``0 <= d < 2^61``, when the
true quotient has fewer than ``Q`` integer bits (the caller states ``Q`` from
public bounds; a quotient beyond it comes out wrong, so the bound must hold). A
zero divisor gives 0. Cost: ``Q + F + 3`` comparisons and as many
multiplications, in sequence.

Reveals: nothing.
"""

from __future__ import annotations

import numpy as np

from concilium.errors import ConfigurationError
from concilium.mpc.backend import Backend, Shares
from concilium.ops.compare import broadcast_pair, equal, less_than_zero, logical_not
from concilium.ops.conversion import bit_decompose
from concilium.ops.select import absolute
from concilium.ops.truncation import exact_truncate
from concilium.ring.arithmetic import RING_DTYPE

__all__ = ["long_divide"]

_ONE = np.asarray(1, dtype=RING_DTYPE)


def _power(exponent: int) -> np.ndarray:
    return np.asarray(1 << exponent, dtype=np.uint64)


def long_divide(backend: Backend, numerator: Shares, denominator: Shares, *,
                quotient_bits: int, fraction_bits: int = 0) -> Shares:
    """``trunc(numerator * 2^fraction_bits / denominator)`` for ring integers (a zero
    denominator gives 0). ``quotient_bits``: a public bound on the quotient's
    integer bits, ``|numerator / denominator| < 2^quotient_bits``.

    Reveals: nothing.
    """
    if not 0 < quotient_bits <= 61 or fraction_bits < 0 or (
            quotient_bits + fraction_bits > 62):
        raise ConfigurationError("long division takes 1..61 quotient bits and at most 62 "
                                 "quotient and fraction bits")
    numerator, denominator = broadcast_pair(numerator, denominator)
    # a zero divisor becomes 1 (the caller masks such cells as undefined)
    zero = equal(backend, denominator, backend.share_public(np.zeros((), dtype=RING_DTYPE)))
    divisor = backend.add(denominator, zero)
    magnitude, negative = absolute(backend, numerator)
    remainder = exact_truncate(backend, magnitude, quotient_bits)
    low = backend.sub(magnitude, backend.mul_public(remainder, _power(quotient_bits)))
    words = bit_decompose(backend, low)
    shifts = np.arange(quotient_bits - 1, -1, -1, dtype=RING_DTYPE).reshape(
        (quotient_bits,) + (1,) * (words.ndim - 1))
    bits = backend.bit_inject(np.stack([words] * quotient_bits, axis=1) >> shifts & _ONE)
    quotient = backend.mul_public(remainder, np.zeros((), dtype=RING_DTYPE))
    total = quotient_bits + fraction_bits
    for step in range(total):
        remainder = backend.mul_public(remainder, np.asarray(2, dtype=RING_DTYPE))
        if step < quotient_bits:
            remainder = backend.add(remainder, bits[:, step])
        trial = backend.sub(remainder, divisor)
        below = less_than_zero(backend, trial)
        remainder = backend.add(trial, backend.mul(below, divisor))
        quotient = backend.add(quotient, backend.mul_public(logical_not(backend, below),
                                                            _power(total - 1 - step)))
    signed = backend.sub(quotient, backend.mul_public(backend.mul(negative, quotient),
                                                      np.asarray(2, dtype=RING_DTYPE)))
    return backend.mul(signed, logical_not(backend, zero))
