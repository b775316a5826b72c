"""Functions on secret arrays, numpy-style: selection, division and elementary
functions, permutations and sorting.

Each wraps a protocol of :mod:`concilium.ops` and states what it reveals
(nothing, unless a ``Reveals:`` line says otherwise). Integers and fixed point
mix as in :class:`~concilium.data.secret_array.SecretArray`; public values may
stand in for secret ones where it makes sense.
"""

from __future__ import annotations

from typing import Any

from concilium.data.secret_array import SecretArray
from concilium.errors import InputError
from concilium.ops import select

__all__ = ["maximum", "minimum", "relu", "sign", "where"]


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
