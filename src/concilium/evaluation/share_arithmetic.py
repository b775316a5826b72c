"""The arithmetic the metrics share: checking their inputs, and divisions, products and
roundings of secret values at a stated precision (the error budget is in
:mod:`concilium.evaluation.metrics`). Every function works on secret shares and
opens nothing.

Reveals: nothing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from concilium.data import SecretArray
from concilium.data.secret_array import Rounding
from concilium.errors import ConfigurationError, InputError, ShapeMismatch
from concilium.ops.count_division import divide_by_count, fits
from concilium.ring.arithmetic import RING_DTYPE

__all__ = ["EXTRA_BITS", "check_rows", "column_dot", "greater_than_grid", "mean_over_rows",
           "one_hot", "quotient", "rounding", "secret_column", "settle", "square",
           "wanted_names"]

#: Fraction bits kept beyond f in quotients, rounded off at the end.
EXTRA_BITS = 8


# -- validation ------------------------------------------------------------------------
def wanted_names(names: Sequence[str], valid: tuple[str, ...], task: str) -> list[str]:
    """The requested metric names, in order and without repeats."""
    if isinstance(names, str):
        raise ConfigurationError(f"pass a sequence of metric names, such as [{names!r}], "
                                 "not a single string")
    unknown = [name for name in names if name not in valid]
    if unknown:
        raise ConfigurationError(f"unknown {task} metric(s) {', '.join(map(repr, unknown))}; "
                                 f"valid metrics are: {', '.join(valid)}")
    return list(dict.fromkeys(names))


def secret_column(values: object, what: str, length: int | None = None, *,
            integer: bool = False) -> SecretArray:
    if not isinstance(values, SecretArray):
        raise InputError(f"{what} must be a SecretArray (secret-shared), got "
                         f"{type(values).__name__}")
    if values.ndim != 1:
        raise ShapeMismatch(f"{what} must be one-dimensional, got shape {values.shape}")
    if length is not None and values.shape[0] != length:
        raise ShapeMismatch(f"{what} has {values.shape[0]} rows, the labels {length}")
    if integer and values.is_fixed:
        raise InputError(f"{what} must be secret integers (class indices), not fixed point")
    if values.shape[0] == 0:
        raise InputError(f"{what} is empty: metrics need at least one row")
    return values


def check_rows(rows: int) -> None:
    if rows >= 2**30:
        raise ConfigurationError(f"{rows} rows: metrics take fewer than 2^30 rows")


# -- arithmetic helpers ------------------------------------------------------------------
def quotient(numerator: SecretArray, count: SecretArray, *, count_bound: int,
              quotient_bound: float, extra: int = EXTRA_BITS) -> SecretArray:
    """``numerator / count`` with ``f + extra`` fraction bits (0 where ``count = 0``),
    for a secret integer ``0 <= count <= count_bound`` and ``|numerator / count| <=
    quotient_bound``; ``numerator`` may be wider than the fixed-point range.

    Fewer extra bits are kept if the sizes need it. About 43 rounds whatever the
    shape (:func:`~concilium.ops.count_division.divide_by_count`). Reveals: nothing.
    """
    session = numerator.session
    f = session.codec.fractional_bits
    have = numerator.fractional_bits
    count_bits = max(1, int(count_bound).bit_length())
    magnitude = max(0, math.ceil(math.log2(quotient_bound))) if quotient_bound > 0 else 0
    for bits in range(f + extra, max(have, f) - 1, -1):
        scale = bits - have
        fraction = min(scale, 15)
        shift = scale - fraction  # applied before the division (numerator times 2^shift)
        quotient_bits = magnitude + have + shift + 1
        if fits(count_bits, quotient_bits, fraction) and (
                magnitude + count_bits + have + shift <= 62):
            break
    else:
        raise ConfigurationError(
            f"a quotient of up to {quotient_bound:g} over counts up to {count_bound} does not "
            "fit the division protocol; use fewer rows or smaller values")
    backend = session.backend
    shares = numerator.shares
    if shift:
        shares = backend.mul_public(shares, np.asarray(1 << shift, dtype=RING_DTYPE))
    result = divide_by_count(backend, shares, count.shares, count_bits=count_bits,
                             quotient_bits=quotient_bits, fraction_bits=fraction)
    return SecretArray(session, result, bits)


def rounding(value: SecretArray) -> Rounding:
    """The exact floor in an ``"exact"`` session, else the reliable truncation: the
    fast one fails too often at the magnitudes of squared errors and wide sums."""
    return "exact" if value.session.truncation == "exact" else "reliable"


def square(value: SecretArray) -> SecretArray:
    return value.multiply(value, truncation=rounding(value))


def settle(value: SecretArray) -> SecretArray:
    """``value`` rounded to the session's ``f`` fraction bits (one truncation)."""
    session = value.session
    f = session.codec.fractional_bits
    if value.fractional_bits <= f:
        return value.as_fixed()
    shifted = value.truncate(value.fractional_bits - f, truncation=rounding(value))
    return SecretArray(session, shifted.shares, f)


def mean_over_rows(totals: SecretArray, rows: int, bound: float) -> SecretArray:
    """``totals / rows`` for a public row count (``|mean| <= bound``), f bits."""
    count = totals.session.constant(np.full(totals.shape, rows, dtype=np.int64))
    return settle(quotient(totals, count, count_bound=rows, quotient_bound=bound))


def column_dot(a: SecretArray, b: SecretArray) -> SecretArray:
    """``sum_i a_i b_i`` of two columns as one matrix product (one reshare)."""
    length = a.shape[0]
    return (a.reshape(1, length) @ b.reshape(length, 1)).reshape(())


def greater_than_grid(x: SecretArray, thresholds: np.ndarray | float) -> SecretArray:
    """Secret 0/1 ``x > threshold`` exactly as for the stored value: ``x 2^b`` is an
    integer, so ``x > t`` if and only if ``x 2^b > floor(t 2^b)``."""
    scale = float(2**x.fractional_bits)
    grid = np.floor(np.asarray(thresholds, dtype=np.float64) * scale) / scale
    return x > (grid if grid.ndim else float(grid))


def one_hot(labels: SecretArray, classes: int) -> SecretArray:
    """``(n, classes)`` secret 0/1 ``labels == c``: n * classes equality tests in one
    batch."""
    return labels.reshape(labels.shape[0], 1) == np.arange(classes).reshape(1, classes)
