"""Output expressions over aggregates: ``SELECT`` items, ``HAVING``, ``CASE``,
evaluated per group on secret shares, with SQL's NULL carried as a secret
"is defined" flag."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from sqlglot import exp

from concilium.data import functions as fn
from concilium.data.secret_array import SecretArray, divide
from concilium.data.session import Session
from concilium.errors import UnsupportedQuery
from concilium.query.sql import aggregate_key

__all__ = ["GROUP_SQL", "Value", "both", "evaluate"]

Value = Any  # SecretArray, or a public numpy array / Python scalar
GROUP_SQL = "sql:"  # prefix of group-key values looked up by expression text


def evaluate(node: exp.Expr, values: Mapping[str, SecretArray],
              defined: Mapping[str, Any], groups: Mapping[str, Any],
              session: Session) -> tuple[Value, Any]:
    """An output expression per group, and its definedness (public True, or a secret
    0/1 array): SQL's NULL propagates through arithmetic."""
    key = GROUP_SQL + node.sql(dialect="duckdb")
    if key in groups:
        return groups[key], True
    if isinstance(node, exp.AggFunc | exp.WithinGroup | exp.Filter):
        inner = node.this if isinstance(node, exp.WithinGroup | exp.Filter) else node
        text = aggregate_key(inner)
        return values[text], defined[text]
    if isinstance(node, exp.Paren):
        return evaluate(node.this, values, defined, groups, session)
    if isinstance(node, exp.Column):
        return groups[node.name.lower()], True
    if isinstance(node, exp.Literal):
        if node.is_string:
            return node.this, True
        number = float(node.this)
        return (int(number) if number.is_integer() and "." not in node.this else number), True
    if isinstance(node, exp.Boolean):
        return int(node.this), True
    if isinstance(node, exp.Neg):
        value, ok = evaluate(node.this, values, defined, groups, session)
        return -value, ok
    if isinstance(node, exp.Not):
        value, ok = evaluate(node.this, values, defined, groups, session)
        return 1 - value, ok
    if isinstance(node, exp.Case):
        return _case(node, values, defined, groups, session)
    binary = _BINARY.get(type(node))
    if binary is None:
        raise UnsupportedQuery(f"this expression is not supported over aggregates: "
                               f"{node.sql(dialect='duckdb')[:80]}",
                               construct=node.sql(dialect="duckdb"))
    left, left_ok = evaluate(node.this, values, defined, groups, session)
    right, right_ok = evaluate(node.expression, values, defined, groups, session)
    return binary(left, right), both(left_ok, right_ok)


def both(a: Any, b: Any) -> Any:
    if a is True:
        return b
    if b is True:
        return a
    return a * b


def _case(node: exp.Case, values: Mapping[str, SecretArray], defined: Mapping[str, Any],
          groups: Mapping[str, Any], session: Session) -> tuple[Value, Any]:
    default = node.args.get("default")
    if default is None:
        raise UnsupportedQuery("CASE over aggregates needs an ELSE branch",
                               construct=node.sql(dialect="duckdb"))
    result, ok = evaluate(default, values, defined, groups, session)
    for branch in reversed(node.args["ifs"]):
        condition, _ = evaluate(branch.this, values, defined, groups, session)
        chosen, chosen_ok = evaluate(branch.args["true"], values, defined, groups, session)
        if not isinstance(condition, SecretArray):
            result = np.where(np.asarray(condition, dtype=bool), chosen, result)
        else:
            result = fn.where(condition, chosen, result)
        ok = both(ok, chosen_ok)
    return result, ok


_BINARY: dict[type[exp.Expr], Any] = {
    exp.Add: lambda a, b: a + b,
    exp.Sub: lambda a, b: a - b,
    exp.Mul: lambda a, b: a * b,
    exp.Div: lambda a, b: divide(a, b) if isinstance(b, SecretArray) else a / b,
    exp.GT: lambda a, b: a > b,
    exp.GTE: lambda a, b: a >= b,
    exp.LT: lambda a, b: a < b,
    exp.LTE: lambda a, b: a <= b,
    exp.EQ: lambda a, b: a == b,
    exp.NEQ: lambda a, b: a != b,
    exp.And: lambda a, b: a * b,
    exp.Or: lambda a, b: a + b - a * b,
}
