"""Functions on secret arrays, numpy-style: selection, division and elementary
functions, permutations and sorting.

Each wraps a protocol of :mod:`concilium.ops` and states what it reveals
(nothing, unless a ``Reveals:`` line says otherwise). Integers and fixed point
mix as in :class:`~concilium.data.secret_array.SecretArray`; public values may
stand in for secret ones where it makes sense.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from concilium.data.secret_array import SecretArray, divide
from concilium.errors import InputError
from concilium.mpc.backend import Shares
from concilium.ops import compare, elementary, fixed_point, select
from concilium.ops import sort as sorting

__all__ = [
    "between",
    "divide",
    "exp",
    "inverse_sqrt",
    "log",
    "maximum",
    "minimum",
    "rank",
    "reciprocal",
    "relu",
    "segmented_sum",
    "sigmoid",
    "sign",
    "sort",
    "shuffle",
    "sqrt",
    "where",
]


def _require_secret(*values: Any) -> SecretArray:
    for value in values:
        if isinstance(value, SecretArray):
            return value
    raise InputError("at least one operand must be a SecretArray; use numpy for public values")


def where(condition: SecretArray, a: Any, b: Any) -> Any:
    """``a`` where the secret 0/1 ``condition`` is 1, else ``b`` (broadcasting).

    ``a`` and ``b`` may be secret or public; one multiplication (none if both are
    public). Reveals: nothing.
    """
    if not isinstance(condition, SecretArray) or condition.is_fixed:
        raise InputError("where() needs a secret 0/1 integer condition, such as x < y")
    return b + condition * (a - b)


def between(x: SecretArray, low: Any, high: Any) -> SecretArray:
    """``low <= x <= high`` as a secret 0/1 integer array; both bounds in one batch of
    comparisons. Reveals: nothing."""
    if not isinstance(x, SecretArray):
        raise InputError("between() needs a secret array to test")
    left, low_shares, bits = x._aligned(low)
    _, high_shares, high_bits = x._aligned(high)
    if high_bits != bits:  # bring both bounds and x to one scale
        return (x >= low) * (x <= high)
    result = compare.between(x.session.backend, left, low_shares, high_shares,
                             full_range=bits == 0)
    return SecretArray(x.session, result, 0)


def minimum(a: Any, b: Any) -> SecretArray:
    """Elementwise minimum: one comparison and one selection. Reveals: nothing."""
    secret = _require_secret(a, b)
    smaller = (a < b) if secret is a else (b > a)
    return where(smaller, a, b)


def maximum(a: Any, b: Any) -> SecretArray:
    """Elementwise maximum: one comparison and one selection. Reveals: nothing."""
    secret = _require_secret(a, b)
    larger = (a > b) if secret is a else (b < a)
    return where(larger, a, b)


def sign(x: SecretArray) -> SecretArray:
    """``-1``, ``0`` or ``1`` as a secret integer array (two sign extractions in one
    batch). Reveals: nothing."""
    return SecretArray(x.session, select.sign(x.session.backend, x.shares), 0)


def relu(x: SecretArray) -> SecretArray:
    """``max(x, 0)``: one sign extraction and one multiplication. Reveals: nothing."""
    return SecretArray(x.session, select.relu(x.session.backend, x.shares), x.fractional_bits)


# -- division and elementary functions (fixed point; see docs/ops-library.md) -------
def _fixed(x: SecretArray) -> SecretArray:
    if not isinstance(x, SecretArray):
        raise InputError("expected a SecretArray; use numpy for public values")
    fixed = x.as_fixed()
    if fixed.fractional_bits != x.session.codec.fractional_bits:
        raise InputError("this function needs values with the session's fraction bits")
    return fixed


def _apply(function: Any, x: SecretArray) -> SecretArray:
    fixed = _fixed(x)
    shares: Shares = function(fixed.session.backend, fixed.shares, fixed.fractional_bits)
    return SecretArray(fixed.session, shares, fixed.fractional_bits)


def reciprocal(x: SecretArray) -> SecretArray:
    """``1 / x`` (0 for x = 0). Reveals: nothing."""
    return _apply(fixed_point.reciprocal, x)


def sqrt(x: SecretArray) -> SecretArray:
    """Square root of ``x >= 0``. Reveals: nothing."""
    return _apply(fixed_point.sqrt, x)


def inverse_sqrt(x: SecretArray) -> SecretArray:
    """``1 / sqrt(x)`` for ``x > 0`` (0 for x = 0). Reveals: nothing."""
    return _apply(fixed_point.inverse_sqrt, x)


def exp(x: SecretArray) -> SecretArray:
    """``e^x``; 0 below -10.39, saturating at ``e^21.48``. Reveals: nothing."""
    return _apply(elementary.exp, x)


def log(x: SecretArray) -> SecretArray:
    """Natural logarithm of ``x > 0``. Reveals: nothing."""
    return _apply(elementary.log, x)


def sigmoid(x: SecretArray) -> SecretArray:
    """Logistic function ``1 / (1 + e^-x)``. Reveals: nothing."""
    return _apply(elementary.sigmoid, x)


# -- permutations and sorting --------------------------------------------------------
def _columns(arrays: Sequence[SecretArray]) -> SecretArray:
    if not arrays:
        raise InputError("pass at least one column")
    first = arrays[0]
    for array in arrays:
        if not isinstance(array, SecretArray):
            raise InputError("columns must be SecretArrays")
        first._same_session(array)
        if array.ndim != 1 or array.shape != first.shape:
            raise InputError(f"columns must be one-dimensional with one common length, got "
                             f"shapes {[a.shape for a in arrays]}")
    return first


def shuffle(*columns: SecretArray) -> list[SecretArray]:
    """The rows of ``columns`` in a secret random order (the same for every column).

    Reveals: nothing.
    """
    first = _columns(columns)
    shuffled, _ = sorting.shuffle(first.session.backend, [c.shares for c in columns])
    return [SecretArray(first.session, shares, c.fractional_bits)
            for shares, c in zip(shuffled, columns, strict=True)]


def _keys(keys: SecretArray | Sequence[SecretArray], descending: bool | Sequence[bool]
          ) -> list[sorting.SortKey]:
    columns = [keys] if isinstance(keys, SecretArray) else list(keys)
    orders = [descending] * len(columns) if isinstance(descending, bool) else list(descending)
    if len(orders) != len(columns):
        raise InputError("give one descending flag per key column")
    return [sorting.SortKey(c.shares, full_range=not c.is_fixed, descending=bool(d))
            for c, d in zip(columns, orders, strict=True)]


def sort(keys: SecretArray | Sequence[SecretArray], payload: Sequence[SecretArray] = (), *,
         descending: bool | Sequence[bool] = False) -> tuple[list[SecretArray],
                                                             list[SecretArray]]:
    """Stable sort of rows by one or more key columns, carrying payload columns.

    Returns ``(sorted_keys, sorted_payload)``.

    Reveals: the outcomes of comparisons between secretly shuffled, distinct
    rows, which are independent of the data (see :mod:`concilium.ops.sort`).
    """
    key_list = [keys] if isinstance(keys, SecretArray) else list(keys)
    first = _columns([*key_list, *payload])
    outcome = sorting.sort(first.session.backend, _keys(key_list, descending),
                           [p.shares for p in payload])
    wrap = [SecretArray(first.session, s, c.fractional_bits)
            for s, c in zip(outcome.keys + outcome.payload, [*key_list, *payload], strict=True)]
    return wrap[:len(key_list)], wrap[len(key_list):]


def rank(keys: SecretArray | Sequence[SecretArray], *,
         descending: bool | Sequence[bool] = False) -> SecretArray:
    """Each row's 0-based position in the stable sort (ties by row order), in the
    original row order. Reveals: what :func:`sort` reveals."""
    key_list = [keys] if isinstance(keys, SecretArray) else list(keys)
    first = _columns(key_list)
    shares = sorting.rank(first.session.backend, _keys(key_list, descending))
    return SecretArray(first.session, shares, 0)


def segmented_sum(group_keys: SecretArray, *values: SecretArray
                  ) -> tuple[list[SecretArray], SecretArray]:
    """Running sums of each value column within runs of equal ``group_keys`` (rows
    sorted by group), and the 0/1 flag of each run's last row, where the running
    sum is the group's total. Reveals: nothing."""
    first = _columns([group_keys, *values])
    sums, last = sorting.segmented_sum(first.session.backend, group_keys.shares,
                                       np.stack([v.shares for v in values], axis=1))
    return ([SecretArray(first.session, sums[:, j], v.fractional_bits)
             for j, v in enumerate(values)], SecretArray(first.session, last, 0))
