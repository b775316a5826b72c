"""Planning joins: ``FROM a JOIN b ON a.k = b.k [JOIN c ON ... = c.k ...]``.

Supported: two or more tables joined on one key (every ``ON`` is an equality of
key columns, each joining one more table to one already joined), ``INNER``
joins of any multiplicity (one-to-one, one-to-many, many-to-many) and a
``LEFT JOIN`` of two tables; ``WHERE`` conditions that each involve one table
(joined by ``AND``) run locally at that table's owners; ``GROUP BY`` columns
with a public domain, or expressions over one such column, of any table;
``COUNT(*)``, ``COUNT``, ``COUNT(DISTINCT)``, ``SUM``, ``AVG``, ``MIN`` and ``MAX``
of expressions over one table each; ``HAVING``, ``ORDER BY`` and ``LIMIT``
after ordering by group columns. See :mod:`concilium.query.join` for how it runs.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Mapping
from typing import Any

import duckdb
import sqlglot
from sqlglot import exp

from concilium.data.schema import ColumnType, Schema
from concilium.errors import QueryError, UnsupportedQuery
from concilium.query.aggregates import JOIN, SECRET_GROUPS, sql_names, supported_by
from concilium.query.catalog import TableEntry
from concilium.query.groups import DUCKDB_TYPES, group_domain
from concilium.query.join import MAX_JOIN_GROUPS, JoinPlan, Side
from concilium.query.join_groups import JoinGroupsPlan
from concilium.query.sql import (
    AGGREGATES,
    KEY_AGGREGATES,
    Aggregate,
    Query,
    aggregate_key,
    clause,
    key_refusal,
    output_name,
)
from concilium.query.statistics import ArgumentRange, check_range

__all__ = ["has_join", "plan_join"]

_JOIN_FUNCTIONS = supported_by(JOIN)
_SECRET_GROUP_FUNCTIONS = tuple(f for f in supported_by(SECRET_GROUPS) if f in _JOIN_FUNCTIONS)
_INTEGER_TYPES = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "BOOLEAN")


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
    """Which table of the query each column belongs to."""

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


def plan_join(sql: str, tables: Mapping[str, TableEntry]) -> JoinPlan:
    """Check a join query against the catalog and decide what runs where."""
    tree = sqlglot.parse_one(sql, dialect="duckdb")
    assert isinstance(tree, exp.Select)
    for key in ("with", "distinct", "qualify"):
        if clause(tree, key):
            raise _unsupported(clause(tree, key), "WITH and DISTINCT are not supported with a "
                                               "JOIN")
    for node in tree.find_all(exp.Window, exp.Subquery):
        raise _unsupported(node, "window functions and subqueries are not supported")
    source = clause(tree, "from")
    if source is None or not isinstance(source.this, exp.Table):
        raise QueryError("the query needs FROM <table> JOIN <table>")
    joins = tree.args["joins"]
    sides = _sides(source.this, [j.this for j in joins], tables)
    resolver = _Resolver(sides)
    left = _check_joins(joins)
    keys = _join_keys(joins, resolver, source.this.alias_or_name)
    where: dict[str, list[exp.Expr]] = {alias: [] for alias in sides}
    if tree.args.get("where"):
        for conjunct in _conjuncts(tree.args["where"].this):
            for nested in conjunct.find_all(exp.AggFunc):
                raise _unsupported(nested, "aggregates are not allowed in WHERE")
            where[resolver.side_of_expression(conjunct, "filter")].append(conjunct)
    group_by, group_nodes, group_side = _group_keys(tree, resolver)
    secret = _secret_group(group_nodes, group_side, resolver)
    arguments: dict[str, list[str]] = {alias: [] for alias in sides}
    argument_side: dict[str, tuple[str, int]] = {}
    aggregates: dict[str, Aggregate] = {}
    select = _select_names(tree)
    group_texts = {n.sql(dialect="duckdb") for n in group_nodes} | {g.lower() for g in group_by}
    nodes: list[exp.Expr] = [item for item, _ in select]
    if tree.args.get("having"):
        nodes.append(tree.args["having"].this)
    order = tree.args["order"].expressions if tree.args.get("order") else []
    nodes += [o.this for o in order]
    for item in nodes:
        if isinstance(item, exp.Star):
            raise _unsupported(item, "SELECT * would reveal rows; select aggregates instead")
        for aggregate in item.find_all(exp.AggFunc):
            _join_aggregate(aggregate, resolver, arguments, argument_side, aggregates)
        for column in item.find_all(exp.Column):
            if column.find_ancestor(exp.AggFunc, exp.Filter) is None and not (
                    column.sql(dialect="duckdb") in group_texts
                    or column.name.lower() in group_texts
                    or any(column.name == name for _, name in select)):
                raise QueryError(f"column {column.name!r} must appear in GROUP BY or inside "
                                 "an aggregate")
    if secret is not None:
        return _plan_secret_groups(tree, sides, resolver, left, keys, where, arguments,
                                   argument_side, aggregates, select, order, group_by,
                                   group_nodes, group_side[0])
    query = Query(sql=sql, table=sides[source.this.alias_or_name][0], select=select,
                  where=None, group_by=group_by,
                  having=tree.args["having"].this if tree.args.get("having") else None,
                  order_by=tuple((o.this, bool(o.args.get("desc"))) for o in order),
                  limit=_limit(tree, order, group_by), aggregates=tuple(aggregates.values()),
                  group_expressions=tuple(group_nodes))
    joined = joined_rows_bound(sides, keys)
    built = [_side(alias, sides[alias], keys[alias], where[alias], arguments[alias],
                   [(k, node) for k, node in enumerate(group_nodes) if group_side[k] == alias],
                   joined)
             for alias in sides]
    _check_sums(built, argument_side, aggregates)
    grid = 1
    for side in built:
        grid *= side.grid_size
    if grid > MAX_JOIN_GROUPS:
        raise UnsupportedQuery(f"the group keys of a join span {grid:,} groups; at most "
                               f"{MAX_JOIN_GROUPS} are supported", construct="GROUP BY")
    if left and built[1].where is not None:
        left = False  # a filter on the right table keeps only matched rows
    if left and built[1].group_keys:
        raise _unsupported(tree.args["group"], "GROUP BY a column of the right table of a "
                                               "LEFT JOIN is not supported")
    domains = tuple(_domain_of(built, k) for k in range(len(group_nodes)))
    positions = {text: (next(k for k, s in enumerate(built) if s.alias == alias), index)
                 for text, (alias, index) in argument_side.items()}
    return JoinPlan(query=query, sides=tuple(built), left=left, argument_side=positions,
                    domains=domains, groups=tuple(itertools.product(*domains)))


def _secret_group(nodes: list[exp.Expr], owners: list[str], resolver: _Resolver
                  ) -> str | None:
    """The table whose secret column groups the join, if one does (a plain column
    without a public domain)."""
    if len(nodes) != 1 or not isinstance(nodes[0], exp.Column):
        return None
    column = resolver.sides[owners[0]][1].schema.column(nodes[0].name)
    return owners[0] if column.public_domain is None else None


def _plan_secret_groups(tree: exp.Select, sides: dict[str, tuple[str, TableEntry]],
                        resolver: _Resolver, left: bool, keys: dict[str, str],
                        where: dict[str, list[exp.Expr]], arguments: dict[str, list[str]],
                        argument_side: dict[str, tuple[str, int]],
                        aggregates: dict[str, Aggregate],
                        select: tuple[tuple[exp.Expr, str], ...], order: list[exp.Ordered],
                        group_by: tuple[str, ...], group_nodes: list[exp.Expr],
                        grouping: str) -> JoinGroupsPlan:
    """A join grouped by one secret column (see :mod:`concilium.query.join_groups`)."""
    node = group_nodes[0]
    column = sides[grouping][1].schema.column(node.name)
    if column.type is not ColumnType.INT or column.nullable:
        raise _unsupported(node, "GROUP BY a secret column over a JOIN needs an integer "
                                 "column that is not nullable")
    if left and grouping != next(iter(sides)):
        raise _unsupported(tree.args["group"], "GROUP BY a column of the right table of a "
                                               "LEFT JOIN is not supported")
    if tree.args.get("limit"):
        raise _unsupported(tree.args["limit"], "LIMIT with GROUP BY on a secret key is not "
                                               "supported")
    for aggregate in aggregates.values():
        if aggregate.function not in _SECRET_GROUP_FUNCTIONS:
            raise _unsupported(aggregate.arguments[0] if aggregate.arguments else tree,
                               f"with GROUP BY on a secret key over a JOIN, "
                               f"{sql_names(_SECRET_GROUP_FUNCTIONS)} are supported, not "
                               f"{aggregate.sql}")
        if aggregate.function in ("min", "max") and argument_side[
                aggregate.arguments[0].sql(dialect="duckdb")][0] != grouping:
            raise UnsupportedQuery(f"{aggregate.sql}: with GROUP BY a secret column of "
                                   f"{sides[grouping][0]}, MIN and MAX take that table's "
                                   "columns", construct=aggregate.sql)
    query = Query(sql=tree.sql(dialect="duckdb"), table=sides[grouping][0], select=select,
                  where=None, group_by=group_by,
                  having=tree.args["having"].this if tree.args.get("having") else None,
                  order_by=tuple((o.this, bool(o.args.get("desc"))) for o in order),
                  limit=None, aggregates=tuple(aggregates.values()),
                  group_expressions=tuple(group_nodes), secret_group=True)
    joined = joined_rows_bound(sides, keys)
    built = [_side(alias, sides[alias], keys[alias], where[alias], arguments[alias], [],
                   joined) for alias in sides]
    _check_sums(built, argument_side, aggregates)
    names = list(sides)
    position = names.index(grouping)
    built[position] = dataclasses.replace(built[position], secret_key=column.name)
    positions = {text: (names.index(alias), index)
                 for text, (alias, index) in argument_side.items()}
    return JoinGroupsPlan(query=query, sides=tuple(built), left=left and built[1].where is None,
                          argument_side=positions, group_side=position)


def _sides(first: exp.Table, others: list[exp.Table], tables: Mapping[str, TableEntry]
           ) -> dict[str, tuple[str, TableEntry]]:
    sides: dict[str, tuple[str, TableEntry]] = {}
    known = {name.lower(): name for name in tables}
    for table in (first, *others):
        if not isinstance(table, exp.Table):
            raise _unsupported(table, "join tables of the catalog, not subqueries")
        if table.name.lower() not in known:
            raise QueryError(f"there is no table {table.name!r}; the catalog has "
                             f"{', '.join(sorted(tables))}")
        alias = table.alias_or_name
        if alias in sides:
            raise QueryError("give the tables of a join different aliases")
        name = known[table.name.lower()]
        sides[alias] = (name, tables[name])
    return sides


def _check_joins(joins: list[exp.Join]) -> bool:
    """Whether the query is a LEFT JOIN (of two tables); refuses the other kinds."""
    left = False
    for join in joins:
        side = (join.args.get("side") or "").upper()
        kind = (join.args.get("kind") or "").upper()
        if side not in ("", "LEFT") or kind not in ("", "INNER", "OUTER") or (
                kind == "OUTER" and side != "LEFT") or join.args.get("using"):
            raise _unsupported(join, "INNER and LEFT joins ON a.key = b.key are supported")
        if side == "LEFT":
            if len(joins) > 1:
                raise _unsupported(join, "a LEFT JOIN joins two tables; join more with "
                                         "INNER JOIN")
            left = True
    return left


def _join_keys(joins: list[exp.Join], resolver: _Resolver, first: str) -> dict[str, str]:
    keys: dict[str, str] = {}
    joined = {first}
    for join in joins:
        on = join.args.get("on")
        if not isinstance(on, exp.EQ) or not isinstance(on.this, exp.Column) or not (
                isinstance(on.expression, exp.Column)):
            raise _unsupported(join, "a JOIN needs ON a.key = b.key (one equality of "
                                     "columns)")
        aliases = []
        for column in (on.this, on.expression):
            alias = resolver.side_of(column)
            schema_column = resolver.sides[alias][1].schema.column(column.name)
            if "join" not in schema_column.usage:
                raise QueryError(f"column {schema_column.name!r} may not be used to join")
            if schema_column.type not in (ColumnType.KEY, ColumnType.INT):
                raise QueryError(f"join key {schema_column.name!r} must be an integer or key "
                                 "column")
            if alias in keys and keys[alias] != schema_column.name:
                raise _unsupported(on, "every table must be joined on one key column")
            keys[alias] = schema_column.name
            aliases.append(alias)
        new = join.this.alias_or_name
        if aliases[0] == aliases[1] or new not in aliases or not (set(aliases) - {new}) <= (
                joined):
            raise _unsupported(on, "the ON condition must compare the joined table's key "
                                   "with the key of a table joined before")
        joined.add(new)
    return keys


def _group_keys(tree: exp.Select, resolver: _Resolver
                ) -> tuple[tuple[str, ...], list[exp.Expr], list[str]]:
    group = tree.args.get("group")
    if not group:
        return (), [], []
    aliases = {item.alias.lower(): item.unalias() for item in tree.expressions
               if isinstance(item, exp.Alias)}
    names, nodes, owners = [], [], []
    for item in group.expressions:
        name = None
        if isinstance(item, exp.Column) and not item.table and item.name.lower() in aliases:
            known = [a for a, (_, e) in resolver.sides.items() if item.name in e.schema]
            if not known:
                name, item = item.name, aliases[item.name.lower()]
        for aggregate in item.find_all(exp.AggFunc):
            raise _unsupported(aggregate, "GROUP BY cannot use aggregates")
        if len({c.sql() for c in item.find_all(exp.Column)}) != 1:
            raise _unsupported(item, "a GROUP BY expression must use exactly one column")
        owners.append(resolver.side_of_expression(item, "group"))
        names.append(name or (item.name if isinstance(item, exp.Column)
                              else item.sql(dialect="duckdb")))
        nodes.append(item)
    return tuple(names), nodes, owners


def _join_aggregate(node: exp.AggFunc, resolver: _Resolver, arguments: dict[str, list[str]],
                    argument_side: dict[str, tuple[str, int]],
                    aggregates: dict[str, Aggregate]) -> None:
    function = AGGREGATES.get(type(node))
    if isinstance(node.this, exp.Distinct):
        if not isinstance(node, exp.Count) or len(node.this.expressions) != 1:
            raise _unsupported(node, "DISTINCT is supported in COUNT(DISTINCT x) only")
        function = "count_distinct"
    if function not in _JOIN_FUNCTIONS:
        raise _unsupported(node, f"with a JOIN, {sql_names(_JOIN_FUNCTIONS)} are supported")
    text = aggregate_key(node)
    condition = node.parent.expression.this if isinstance(node.parent, exp.Filter) else None
    if isinstance(node, exp.Count) and isinstance(node.this, exp.Star):
        if condition is None:
            aggregates.setdefault(text, Aggregate("count", (), text))
            return
        argument: exp.Expr = exp.Literal.number(1)
    else:
        argument = node.this.expressions[0] if function == "count_distinct" else node.this
    if condition is not None:  # agg(x) FILTER (WHERE c) is agg(CASE WHEN c THEN x END)
        argument = exp.Case(ifs=[exp.If(this=condition.copy(), true=argument.copy())])
    alias = resolver.side_of_expression(argument, function if function in KEY_AGGREGATES
                                        else "aggregate")
    key = argument.sql(dialect="duckdb")
    if key not in argument_side:
        arguments[alias].append(_unqualified(argument))
        argument_side[key] = (alias, len(arguments[alias]) - 1)
    aggregates.setdefault(text, Aggregate(function, (argument,), text))


def joined_rows_bound(sides: Mapping[str, tuple[str, TableEntry]], keys: Mapping[str, str]
                      ) -> int:
    """The most rows the join can have, from the public schemas: the product of the
    row bounds of the tables whose key is not unique (a unique key matches a row at
    most once), or the smallest table when every key is unique. A LEFT JOIN keeps
    each left row at least once, which this bound covers."""
    rows = {alias: entry.schema.rows_bound * len(entry.owners)
            for alias, (_, entry) in sides.items()}
    repeated = [rows[a] for a, (_, e) in sides.items() if not e.schema.column(keys[a]).unique]
    if not repeated:
        return min(rows.values())
    return math.prod(repeated)


def _side(alias: str, table: tuple[str, TableEntry], key: str, where: list[exp.Expr],
          arguments: list[str], groups: list[tuple[int, exp.Expr]], joined: int) -> Side:
    name, entry = table
    condition: exp.Expr | None = None
    for conjunct in where:
        local: exp.Expr = exp.maybe_parse(_unqualified(conjunct), dialect="duckdb")
        condition = local if condition is None else exp.and_(condition, local)
    connection = duckdb.connect()
    columns = ", ".join(f'"{c.name}" {DUCKDB_TYPES[c.type]}' for c in entry.schema.columns)
    connection.execute(f"CREATE TABLE data ({columns})")
    ranges = []
    for text in arguments:
        try:
            kind = str(connection.execute(f"DESCRIBE SELECT {text} AS v FROM data"
                                          ).fetchall()[0][1]).upper()
        except duckdb.Error as error:
            raise QueryError(f"{text}: {str(error).splitlines()[0]}") from None
        if kind == "VARCHAR":
            raise QueryError(f"{text} is not numeric; aggregates need numbers")
        ranges.append(_range(text, kind.startswith(_INTEGER_TYPES), entry.schema, joined))
    keys = tuple((position, _unqualified(node)) for position, node in groups)
    domains = tuple(group_domain(exp.maybe_parse(text, dialect="duckdb"), entry.schema)
                    for _, text in keys)
    side = Side(name, alias, entry, key, condition, tuple(arguments), tuple(ranges), keys,
                domains)
    try:
        connection.execute(f"DESCRIBE {side.local_sql()}")
    except duckdb.Error as error:
        raise QueryError(f"WHERE on {name}: {str(error).splitlines()[0]}") from None
    return side


def _check_sums(built: list[Side], argument_side: Mapping[str, tuple[str, int]],
                aggregates: Mapping[str, Aggregate]) -> None:
    """Refuse a SUM or AVG whose joined total could overflow, naming its bound."""
    by_alias = {side.alias: side for side in built}
    for aggregate in aggregates.values():
        if aggregate.function in ("sum", "avg"):
            alias, index = argument_side[aggregate.arguments[0].sql(dialect="duckdb")]
            check_range(by_alias[alias].ranges[index], aggregate.function.upper())


def _range(text: str, integral: bool, schema: Schema, rows: int) -> ArgumentRange:
    node: exp.Expr = exp.maybe_parse(text, dialect="duckdb")
    if isinstance(node, exp.Column) and node.name in schema:
        column = schema.column(node.name)
        return ArgumentRange(text, integral, column.bound, column.decimals, rows)
    return ArgumentRange(text, integral, None, None, rows)


def _domain_of(sides: list[Side], position: int) -> tuple[Any, ...]:
    for side in sides:
        for k, (where, _) in enumerate(side.group_keys):
            if where == position:
                return side.domains[k]
    raise AssertionError(position)


def _select_names(tree: exp.Select) -> tuple[tuple[exp.Expr, str], ...]:
    return tuple((item.unalias(), output_name(item)) for item in tree.expressions)


def _limit(tree: exp.Select, order: list[exp.Ordered], group_by: tuple[str, ...]
           ) -> int | None:
    node = tree.args.get("limit")
    if node is None:
        return None
    value = node.expression
    if not isinstance(value, exp.Literal) or value.is_string or int(value.this) < 0:
        raise _unsupported(node, "LIMIT takes a non-negative integer")
    names = {g.lower() for g in group_by}
    if not order or any(not (isinstance(o.this, exp.Column) and o.this.name.lower() in names)
                        for o in order):
        raise _unsupported(node, "LIMIT after ORDER BY an aggregate would need a secure "
                                 "top-k; order by group columns only")
    return int(value.this)
