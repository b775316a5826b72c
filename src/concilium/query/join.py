"""Joins of two tables on a secret key (vertical data: different owners' tables).

Supported: ``FROM a [INNER | LEFT] JOIN b ON a.k = b.k`` where one side's key
is declared ``unique`` in its schema (for ``LEFT JOIN``, the right side's), so
that every row of the other side matches at most one row: the common
lookup join (customers and accounts, patients and prescriptions), and no row
multiplication that would reveal match counts. ``WHERE`` conditions that
each involve one table (joined by ``AND``) run locally at that table's owners;
``SELECT``/``HAVING`` combine ``COUNT(*)``, ``COUNT``, ``SUM``, ``AVG``, ``MIN``
and ``MAX`` of expressions over one table each.

Protocol (a sort-based join, as in the join and group-by operators of
Jonsson, Kreitz and Uddin, "Secure Multi-Party Sorting and Applications",
2011, and of the secure database systems that followed):

1. Every owner shares *all* rows of its table: the key, a 0/1 flag (the key
   is not NULL and the row passes its table's ``WHERE``), and the aggregate
   arguments with their not-NULL flags.
2. The rows of both tables are sorted together by ``2 * key + side`` (unique
   side first), so each row of the other side follows the unique row with its
   key, if any (:mod:`concilium.ops.sort`: shuffle, then opened comparisons of
   distinct, shuffled rows).
3. A segmented scan (:func:`concilium.ops.sort.segmented_scan`) copies each
   unique row's columns forward to the rows after it; a row matches when its
   key equals the copied key (a secure equality).
4. Aggregates are dot products of the match flags with the values, and
   tournaments for ``MIN``/``MAX``.

Reveals: the number of rows of each table (the sizes of the shared columns),
what the sort reveals (nothing about the data), and the query's result.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import duckdb
import numpy as np
import pyarrow.compute as pc
import sqlglot
from sqlglot import exp

from concilium.data.dataset import Dataset
from concilium.data.schema import ColumnType
from concilium.data.secret_array import SecretArray
from concilium.data.session import Session
from concilium.errors import QueryError, UnsupportedQuery
from concilium.ops import sort as sorting
from concilium.query.catalog import TableEntry
from concilium.query.local import run_local, share_rows
from concilium.query.sql import AGGREGATES, KEY_AGGREGATES, Aggregate, Query, key_refusal

__all__ = ["KEY_LIMIT", "JoinPlan", "Side", "has_join", "local_side_rows", "plan_join",
           "run_join"]

KEY_LIMIT = 2**61  # |key| below this, so that 2 * key + side fits a signed word
_JOIN_AGGREGATES = {"count", "sum", "avg", "min", "max"}
_INT_SENTINEL = 2**62
_FIXED_SENTINEL = float(2**31 - 1)


@dataclass(frozen=True)
class Side:
    """One table of the join, as its owners see it."""

    table: str
    alias: str
    entry: TableEntry
    key: str
    where: exp.Expr | None
    arguments: tuple[str, ...]  # local SQL of each aggregate argument on this side
    fixed: tuple[bool, ...]

    def local_sql(self) -> str:
        passes = "1" if self.where is None else (
            f"CASE WHEN ({self.where.sql(dialect='duckdb')}) THEN 1 ELSE 0 END")
        columns = [f'CAST("{self.key}" AS BIGINT) AS k', f"{passes} AS w",
                   f'CASE WHEN "{self.key}" IS NOT NULL THEN 1 ELSE 0 END AS kn']
        columns += [f"CAST(({text}) AS {'DOUBLE' if fixed else 'BIGINT'}) AS a{i}"
                    for i, (text, fixed) in enumerate(zip(self.arguments, self.fixed,
                                                          strict=True))]
        return f"SELECT {', '.join(columns)}\nFROM data"


@dataclass(frozen=True)
class JoinPlan:
    """How a join query runs."""

    query: Query
    kind: str  # "inner" or "left"
    unique: Side
    many: Side
    argument_side: dict[str, tuple[str, int]]  # aggregate argument -> (side, index)
    groups: tuple[tuple[Any, ...], ...] = ((),)


def has_join(sql: str) -> bool:
    try:
        tree = sqlglot.parse_one(sql, dialect="duckdb")
    except sqlglot.errors.ParseError:
        return False
    return isinstance(tree, exp.Select) and bool(tree.args.get("joins"))


def _unsupported(node: exp.Expr, why: str) -> UnsupportedQuery:
    text = node.sql(dialect="duckdb")
    return UnsupportedQuery(f"{why}: {text[:120]}", construct=text)


def _unqualified(node: exp.Expr) -> str:
    return node.transform(lambda n: exp.column(n.name, quoted=True)
                          if isinstance(n, exp.Column) else n).sql(dialect="duckdb")


class _Resolver:
    def __init__(self, sides: dict[str, tuple[str, TableEntry]]) -> None:
        self.sides = sides  # alias -> (table, entry)

    def side_of(self, column: exp.Column) -> str:
        if column.table:
            for alias, (table, _) in self.sides.items():
                if column.table.lower() in (alias.lower(), table.lower()):
                    break
            else:
                raise QueryError(f"{column.sql()} names no table of the query")
            if column.name not in self.sides[alias][1].schema:
                raise QueryError(f"table {self.sides[alias][0]!r} has no column "
                                 f"{column.name!r}")
            return alias
        owners = [a for a, (_, e) in self.sides.items() if column.name in e.schema]
        if not owners:
            raise QueryError(f"no table of the query has a column {column.name!r}")
        if len(owners) > 1:
            raise QueryError(f"column {column.name!r} is ambiguous: qualify it with a table")
        return owners[0]

    def side_of_expression(self, node: exp.Expr, usage: str) -> str:
        sides = set()
        for column in node.find_all(exp.Column):
            alias = self.side_of(column)
            schema_column = self.sides[alias][1].schema.column(column.name)
            if schema_column.type is ColumnType.KEY and usage not in KEY_AGGREGATES:
                raise key_refusal(schema_column.name, usage)
            if usage in KEY_AGGREGATES:
                usage = "aggregate"
            if usage not in schema_column.usage:
                raise QueryError(f"column {schema_column.name!r} may not be used to {usage}")
            sides.add(alias)
        if len(sides) > 1:
            raise _unsupported(node, "an expression may use the columns of one table only")
        return sides.pop() if sides else next(iter(self.sides))


def _conjuncts(node: exp.Expr) -> list[exp.Expr]:
    if isinstance(node, exp.And):
        return _conjuncts(node.this) + _conjuncts(node.expression)
    if isinstance(node, exp.Paren):
        return _conjuncts(node.this)
    return [node]


def plan_join(sql: str, tables: dict[str, TableEntry]) -> JoinPlan:
    """Check a two-table join query against the catalog and decide what runs where."""
    tree = sqlglot.parse_one(sql, dialect="duckdb")
    assert isinstance(tree, exp.Select)
    joins = tree.args["joins"]
    if len(joins) != 1:
        raise _unsupported(joins[1], "only one JOIN per query is supported")
    join = joins[0]
    side = (join.args.get("side") or "").upper()
    kind = (join.args.get("kind") or "").upper()
    if side not in ("", "LEFT") or kind not in ("", "INNER", "OUTER") or (
            kind == "OUTER" and side != "LEFT") or join.args.get("using"):
        raise _unsupported(join, "only INNER and LEFT joins ON a.key = b.key are supported")
    for key in ("group", "with", "distinct", "qualify"):
        if tree.args.get(key):
            raise _unsupported(tree.args[key], "GROUP BY, WITH and DISTINCT are not "
                                               "supported with a JOIN yet")
    for node in tree.find_all(exp.Window, exp.Subquery):
        raise _unsupported(node, "window functions and subqueries are not supported")
    source = tree.args.get("from_") or tree.args.get("from")
    if source is None or not isinstance(source.this, exp.Table):
        raise QueryError("the query needs FROM <table> JOIN <table>")
    left_table = source.this
    right_table = join.this
    sides: dict[str, tuple[str, TableEntry]] = {}
    for table in (left_table, right_table):
        known = {name.lower(): name for name in tables}
        if table.name.lower() not in known:
            raise QueryError(f"there is no table {table.name!r}; the catalog has "
                             f"{', '.join(sorted(tables))}")
        name = known[table.name.lower()]
        alias = table.alias_or_name
        if alias in sides:
            raise QueryError("give the two tables of a join different aliases")
        sides[alias] = (name, tables[name])
    resolver = _Resolver(sides)
    left_alias, right_alias = left_table.alias_or_name, right_table.alias_or_name
    keys = _join_keys(join, resolver, left_alias, right_alias)
    where: dict[str, list[exp.Expr]] = {left_alias: [], right_alias: []}
    if tree.args.get("where"):
        for conjunct in _conjuncts(tree.args["where"].this):
            for nested in conjunct.find_all(exp.AggFunc):
                raise _unsupported(nested, "aggregates are not allowed in WHERE")
            where[resolver.side_of_expression(conjunct, "filter")].append(conjunct)
    arguments: dict[str, list[str]] = {left_alias: [], right_alias: []}
    argument_side: dict[str, tuple[str, int]] = {}
    aggregates: dict[str, Aggregate] = {}
    nodes = [e for e in tree.expressions]
    if tree.args.get("having"):
        nodes.append(tree.args["having"].this)
    nodes += [o.this for o in (tree.args["order"].expressions if tree.args.get("order")
                               else [])]
    for node in nodes:
        if isinstance(node, exp.Star):
            raise _unsupported(node, "SELECT * would reveal rows; select aggregates instead")
        for aggregate in node.find_all(exp.AggFunc):
            _join_aggregate(aggregate, resolver, arguments, argument_side, aggregates)
        for column in node.find_all(exp.Column):
            if column.find_ancestor(exp.AggFunc) is None and not any(
                    column.name == alias for _, alias in _select_names(tree)):
                raise QueryError(f"column {column.name!r} must be inside an aggregate")
    if tree.args.get("limit"):
        raise _unsupported(tree.args["limit"], "LIMIT is not supported with a JOIN")
    query = Query(sql=sql, table=sides[left_alias][0], select=_select_names(tree), where=None,
                  group_by=(), having=tree.args["having"].this if tree.args.get("having")
                  else None, order_by=tuple((o.this, bool(o.args.get("desc"))) for o in (
                      tree.args["order"].expressions if tree.args.get("order") else [])),
                  limit=None, aggregates=tuple(aggregates.values()))
    built = {alias: _side(alias, sides[alias], keys[alias], where[alias], arguments[alias])
             for alias in (left_alias, right_alias)}
    unique = _unique_side(built, left_alias, right_alias, side == "LEFT", join)
    many = right_alias if unique == left_alias else left_alias
    renamed = {text: ("unique" if alias == unique else "many", index)
               for text, (alias, index) in argument_side.items()}
    return JoinPlan(query=query, kind="left" if side == "LEFT" else "inner",
                    unique=built[unique], many=built[many], argument_side=renamed)


def _select_names(tree: exp.Select) -> tuple[tuple[exp.Expr, str], ...]:
    return tuple((item.unalias(), item.alias_or_name if isinstance(item, exp.Alias)
                  else item.sql(dialect="duckdb")) for item in tree.expressions)


def _join_keys(join: exp.Join, resolver: _Resolver, left: str, right: str) -> dict[str, str]:
    on = join.args.get("on")
    if not isinstance(on, exp.EQ) or not isinstance(on.this, exp.Column) or not isinstance(
            on.expression, exp.Column):
        raise _unsupported(join, "a JOIN needs ON a.key = b.key (one equality of columns)")
    keys: dict[str, str] = {}
    for column in (on.this, on.expression):
        alias = resolver.side_of(column)
        schema_column = resolver.sides[alias][1].schema.column(column.name)
        if "join" not in schema_column.usage:
            raise QueryError(f"column {schema_column.name!r} may not be used to join")
        if schema_column.type not in (ColumnType.KEY, ColumnType.INT):
            raise QueryError(f"join key {schema_column.name!r} must be an integer or key "
                             "column")
        keys[alias] = schema_column.name
    if set(keys) != {left, right}:
        raise _unsupported(on, "the ON condition must compare a column of each table")
    return keys


def _join_aggregate(node: exp.AggFunc, resolver: _Resolver, arguments: dict[str, list[str]],
                    argument_side: dict[str, tuple[str, int]],
                    aggregates: dict[str, Aggregate]) -> None:
    function = AGGREGATES.get(type(node))
    if function not in _JOIN_AGGREGATES:
        raise _unsupported(node, "with a JOIN, only COUNT, SUM, AVG, MIN and MAX are "
                                 "supported yet")
    if isinstance(node.this, exp.Distinct):
        raise _unsupported(node, "COUNT(DISTINCT ...) is not supported yet")
    text = node.sql(dialect="duckdb")
    if isinstance(node, exp.Count) and isinstance(node.this, exp.Star):
        aggregates.setdefault(text, Aggregate("count", (), text))
        return
    argument = node.this
    alias = resolver.side_of_expression(argument, function if function in KEY_AGGREGATES
                                        else "aggregate")
    key = argument.sql(dialect="duckdb")
    if key not in argument_side:
        arguments[alias].append(_unqualified(argument))
        argument_side[key] = (alias, len(arguments[alias]) - 1)
    aggregates.setdefault(text, Aggregate(function, (argument,), text))


def _side(alias: str, table: tuple[str, TableEntry], key: str, where: list[exp.Expr],
          arguments: list[str]) -> Side:
    name, entry = table
    condition: exp.Expr | None = None
    for conjunct in where:
        local: exp.Expr = exp.maybe_parse(_unqualified(conjunct), dialect="duckdb")
        condition = local if condition is None else exp.and_(condition, local)
    connection = duckdb.connect()
    columns = ", ".join(f'"{c.name}" {_duckdb_type(c.type)}' for c in entry.schema.columns)
    connection.execute(f"CREATE TABLE data ({columns})")
    fixed = []
    for text in arguments:
        try:
            kind = str(connection.execute(f"DESCRIBE SELECT {text} AS v FROM data"
                                          ).fetchall()[0][1]).upper()
        except duckdb.Error as error:
            raise QueryError(f"{text}: {str(error).splitlines()[0]}") from None
        if kind == "VARCHAR":
            raise QueryError(f"{text} is not numeric; aggregates need numbers")
        fixed.append(not kind.startswith(("TINYINT", "SMALLINT", "INTEGER", "BIGINT",
                                          "HUGEINT", "BOOLEAN")))
    side = Side(name, alias, entry, key, condition, tuple(arguments), tuple(fixed))
    try:
        connection.execute(f"DESCRIBE {side.local_sql()}")
    except duckdb.Error as error:
        raise QueryError(f"WHERE on {name}: {str(error).splitlines()[0]}") from None
    return side


def _duckdb_type(kind: ColumnType) -> str:
    return {ColumnType.INT: "BIGINT", ColumnType.KEY: "BIGINT", ColumnType.FIXED: "DOUBLE",
            ColumnType.BOOL: "BOOLEAN", ColumnType.CATEGORY: "VARCHAR"}[kind]


def _unique_side(sides: dict[str, Side], left: str, right: str, left_join: bool,
                 join: exp.Join) -> str:
    def unique(alias: str) -> bool:
        return sides[alias].entry.schema.column(sides[alias].key).unique

    if left_join:
        if not unique(right):
            raise _unsupported(join, "a LEFT JOIN needs the right table's key declared "
                                     "unique")
        return right
    if unique(right):
        return right
    if unique(left):
        return left
    raise _unsupported(join, "a JOIN needs one table's key declared unique (a many-to-many "
                             "join would multiply rows)")


def local_side_rows(side: Side, dataset: Dataset) -> tuple[np.ndarray, list[np.ndarray]]:
    """The owner's rows: (key, passes WHERE, key not NULL, arguments not NULL) as
    integers, and the arguments."""
    table = run_local(side.local_sql(), dataset)
    keys = np.asarray(pc.fill_null(table.column("k"), 0).to_numpy(), dtype=np.int64)
    if np.any(np.abs(keys) >= KEY_LIMIT):
        raise QueryError(f"join keys of {side.table!r} must lie within +-2^61")
    flags = [keys, np.asarray(table.column("w").to_numpy(), dtype=np.int64),
             np.asarray(table.column("kn").to_numpy(), dtype=np.int64)]
    values = []
    for i, fixed in enumerate(side.fixed):
        column = table.column(f"a{i}")
        flags.append((~np.asarray(column.is_null().to_numpy(), dtype=bool)).astype(np.int64))
        values.append(np.asarray(pc.fill_null(column, 0).to_numpy(),
                                 dtype=np.float64 if fixed else np.int64))
    return np.stack(flags), values


def _input_side(session: Session, side: Side, dataset: Dataset | None
                ) -> tuple[SecretArray, list[SecretArray]]:
    return share_rows(session, side.entry.owners, side.table,
                      None if dataset is None else (lambda: local_side_rows(side, dataset)),
                      side.fixed)


def run_join(session: Session, plan: JoinPlan, datasets: dict[str, Dataset], *,
             extremes: bool = False) -> tuple[dict[str, SecretArray], dict[str, Any],
                                              SecretArray, dict[str, SecretArray]]:
    """Per aggregate: its value (a one-element secret array) and its definedness; the
    number of joined rows (for the output policy's cohort rule); and with
    ``extremes``, for each MIN and MAX the number of joined rows that hold its value."""
    backend = session.backend
    unique_flags, unique_values = _input_side(session, plan.unique,
                                              datasets.get(plan.unique.table))
    many_flags, many_values = _input_side(session, plan.many, datasets.get(plan.many.table))
    n_unique, n_many = unique_flags.shape[-1], many_flags.shape[-1]

    def spread(unique_part: SecretArray | None, many_part: SecretArray | None,
               bits: int) -> SecretArray:
        """A column over all rows: the unique side's rows first, then the others'."""
        zeros = session.constant(np.zeros(n_unique + n_many, dtype=np.int64))
        parts = [unique_part if unique_part is not None else zeros[:n_unique],
                 many_part if many_part is not None else zeros[n_unique:]]
        joined = SecretArray.concatenate(parts, axis=-1)
        return joined if joined.fractional_bits == bits else joined.as_fixed()

    tag = session.constant(np.concatenate([np.zeros(n_unique, dtype=np.int64),
                                           np.ones(n_many, dtype=np.int64)]))
    keys = spread(unique_flags[0], many_flags[0], 0)
    order_key = keys * 2 + tag
    # the unique side's key, flag, not-NULL flags and values, copied forward after the sort
    carried = [spread(unique_flags[k], None, 0) for k in range(unique_flags.shape[0])]
    carried += [spread(v, None, v.fractional_bits) for v in unique_values]
    # the other side's flags (WHERE, key not NULL, arguments not NULL) and values, in place
    own = [spread(None, many_flags[k], 0) for k in range(1, many_flags.shape[0])]
    own += [spread(None, v, v.fractional_bits) for v in many_values]
    columns = [tag, *carried, *own]
    outcome = sorting.sort(backend, [sorting.SortKey(order_key.shares)],
                           [c.shares for c in columns])
    rows = [SecretArray(session, shares, c.fractional_bits)
            for shares, c in zip(outcome.payload, columns, strict=True)]
    is_many, carried_sorted, own_sorted = rows[0], rows[1:1 + len(carried)], rows[
        1 + len(carried):]
    sums, seen = sorting.segmented_scan(backend, (1 - is_many).shares,
                                        np.stack([c.shares for c in carried_sorted], axis=1))
    copied = [SecretArray(session, sums[:, k], c.fractional_bits)
              for k, c in enumerate(carried_sorted)]
    # a row of the other side (2 k + 1) matches the unique row copied to it (key k_u)
    same_key = (SecretArray(session, outcome.keys[0], 0) - 1 - copied[0] * 2) == 0
    found = SecretArray(session, seen, 0)
    match = is_many * found * same_key * copied[1] * copied[2] * own_sorted[1]
    own_flag = own_sorted[0]
    rows_counted = own_flag * (match if plan.kind == "inner" or plan.unique.where is not None
                               else is_many)
    values, defined, held = _aggregates(plan, rows_counted, match, copied, own_sorted,
                                        extremes)
    return values, defined, rows_counted.sum().reshape(1), held


def _aggregates(plan: JoinPlan, counted: SecretArray, match: SecretArray,
                copied: list[SecretArray], own: list[SecretArray], extremes: bool
                ) -> tuple[dict[str, SecretArray], dict[str, Any], dict[str, SecretArray]]:
    values: dict[str, SecretArray] = {}
    defined: dict[str, Any] = {}
    held: dict[str, SecretArray] = {}
    unique_arguments = len(plan.unique.fixed)
    many_arguments = len(plan.many.fixed)
    for aggregate in plan.query.aggregates:
        if not aggregate.arguments:
            values[aggregate.sql] = counted.sum().reshape(1)
            defined[aggregate.sql] = True
            continue
        side, index = plan.argument_side[aggregate.arguments[0].sql(dialect="duckdb")]
        if side == "unique":  # copied: key, WHERE, key not NULL, not-NULL flags, values
            present = copied[3 + index] * match
            value = copied[3 + unique_arguments + index]
        else:  # own: WHERE, key not NULL, not-NULL flags, values
            present = own[2 + index]
            value = own[2 + many_arguments + index]
        contributes = counted * present
        count = contributes.sum().reshape(1)
        if aggregate.function == "count":
            values[aggregate.sql], defined[aggregate.sql] = count, True
            continue
        nonempty = count >= 1
        if aggregate.function in ("sum", "avg"):
            total = (contributes.reshape(1, -1) @ value).reshape(1)
            values[aggregate.sql] = total if aggregate.function == "sum" else (
                total.as_fixed() / count)
        else:
            sentinel = (_FIXED_SENTINEL if value.is_fixed else _INT_SENTINEL) * (
                1 if aggregate.function == "min" else -1)
            masked = contributes * (value - sentinel) + sentinel
            extreme = masked.min() if aggregate.function == "min" else masked.max()
            values[aggregate.sql] = extreme.reshape(1)
            if extremes:
                held[aggregate.sql] = (contributes * (masked == extreme)).sum().reshape(1)
        defined[aggregate.sql] = nonempty
    return values, defined, held
