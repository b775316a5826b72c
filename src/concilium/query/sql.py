"""SQL to a checked query description (sqlglot, DuckDB dialect).

:func:`parse_query` accepts the subset Concilium can run securely and refuses
everything else with :class:`~concilium.errors.UnsupportedQuery`, quoting the
construct; unknown tables and columns, or columns used in a way their schema
forbids, raise :class:`~concilium.errors.QueryError`.

Supported: ``SELECT`` of group columns and of arithmetic, ``CASE`` and
comparisons over the aggregates ``COUNT(*)``, ``COUNT``, ``SUM``, ``AVG``,
``MIN``, ``MAX``, ``VARIANCE``/``VAR_SAMP``, ``VAR_POP``,
``STDDEV``/``STDDEV_SAMP``, ``STDDEV_POP``, ``CORR``, ``MEDIAN`` and
``PERCENTILE_CONT``/``QUANTILE_CONT``, whose arguments are
any row expression (arithmetic, ``CASE``, comparisons) over one table;
``WHERE`` with comparisons, ``AND``/``OR``/``NOT``, ``IN``, ``BETWEEN``,
``IS [NOT] NULL``; ``GROUP BY`` columns with a public domain (categories,
booleans, bounded integers); ``HAVING``; ``ORDER BY``; ``LIMIT`` after an
ordering by group columns.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import sqlglot
from sqlglot import exp

from concilium.data.schema import Column, ColumnType, Schema
from concilium.errors import PolicyViolation, QueryError, UnsupportedQuery
from concilium.query.aggregates import BY_CLASS

__all__ = ["AGGREGATES", "KEY_AGGREGATES", "QUANTILES", "Aggregate", "Query", "aggregate_key",
           "clause", "inline_with", "key_refusal", "output_name", "parse_query"]

#: The only aggregates a key column may feed: counting keys reveals no one's key.
KEY_AGGREGATES = ("count", "count_distinct")
_KEY_USE = {"filter": "filtered on (WHERE patient_id = X singles out one person)",
            "group": "grouped by (GROUP BY a key releases one row per person)",
            "aggregate": "aggregated except by COUNT or COUNT(DISTINCT)",
            "output": "output"}


def key_refusal(column: str, usage: str) -> PolicyViolation:
    """The refusal of a key column used other than to join on or count."""
    return PolicyViolation(f"column {column!r} is a key (it identifies people or entities): "
                           f"it may only be joined on or counted, never "
                           f"{_KEY_USE.get(usage, usage)}")

#: sqlglot aggregate classes and the registry name each computes.
AGGREGATES: dict[type[exp.Expr], str] = {cls: spec.name for cls, spec in BY_CLASS.items()}
_LATER = {
    exp.PercentileDisc: "PERCENTILE_DISC (use PERCENTILE_CONT or MEDIAN)",
}
#: Aggregates computed from the rows themselves (a secure sort), not from partial
#: statistics: the continuous quantiles.
QUANTILES = (exp.Median, exp.PercentileCont)


@dataclass(frozen=True)
class Aggregate:
    """One aggregate call: its statistic and its argument row expressions."""

    function: str
    arguments: tuple[exp.Expr, ...]  # empty for COUNT(*)
    sql: str  # canonical text, the aggregate's identity
    fraction: float | None = None  # the quantile, for MEDIAN and PERCENTILE_CONT

    @property
    def star(self) -> bool:
        return not self.arguments


@dataclass(frozen=True)
class Query:
    """A checked SELECT over one table."""

    sql: str
    table: str
    select: tuple[tuple[exp.Expr, str], ...]  # (expression, output name)
    where: exp.Expr | None
    group_by: tuple[str, ...]  # output names of the group keys
    having: exp.Expr | None
    order_by: tuple[tuple[exp.Expr, bool], ...]  # (expression, descending)
    limit: int | None
    aggregates: tuple[Aggregate, ...]
    group_expressions: tuple[exp.Expr, ...] = ()  # a column, or an expression over one
    secret_group: bool = False  # GROUP BY one secret key column (groups found securely)


@dataclass(frozen=True)
class _Grouping:
    names: tuple[str, ...]
    texts: frozenset[str]  # SQL of group expressions that are not plain columns

    def covers(self, column: exp.Column, schema: Schema, top: exp.Expr) -> bool:
        if column.name in schema and schema.column(column.name).name in self.names:
            return True
        node: exp.Expr | None = column
        while node is not None:
            if node.sql(dialect="duckdb") in self.texts:
                return True
            if node is top:
                return False
            node = node.parent
        return False


def _unsupported(node: exp.Expr, why: str) -> UnsupportedQuery:
    text = node.sql(dialect="duckdb")
    return UnsupportedQuery(f"{why}: {text[:120]}", construct=text)


def output_name(item: exp.Expr) -> str:
    """A SELECT item's result column name: its alias, a column's own name (as DuckDB
    names ``a.kind`` ``kind``), else the item's SQL."""
    if isinstance(item, exp.Alias):
        return item.alias_or_name
    if isinstance(item, exp.Column):
        return item.name
    return item.sql(dialect="duckdb")


def clause(tree: exp.Expr, name: str) -> Any:
    """A clause of a parsed statement (sqlglot spells some with a trailing underscore:
    ``from_``, ``with_``)."""
    return tree.args.get(name) or tree.args.get(name + "_")


def _cte_definition(cte: exp.CTE) -> tuple[exp.Table, dict[str, exp.Expr] | None,
                                            exp.Expr | None]:
    """A common table expression the planner can inline: ``SELECT [*, ] columns or
    expressions AS names FROM table [WHERE ...]`` (no joins, groups or aggregates).
    Returns its table, its outputs (None for ``*`` only) and its filter."""
    body = cte.this
    if not isinstance(body, exp.Select) or any(clause(body, k) for k in (
            "joins", "group", "having", "distinct", "limit", "order", "with", "qualify")):
        raise _unsupported(cte, "a WITH table can be inlined only if it is SELECT columns "
                                "FROM a table [WHERE ...]")
    for aggregate in body.find_all(exp.AggFunc):
        raise _unsupported(aggregate, "a WITH table cannot aggregate")
    source = clause(body, "from")
    if source is None or not isinstance(source.this, exp.Table):
        raise _unsupported(cte, "a WITH table must read FROM a table")
    outputs: dict[str, exp.Expr] | None = {}
    for item in body.expressions:
        if isinstance(item, exp.Star):
            if outputs:
                raise _unsupported(item, "mix * and named columns in a WITH table")
            outputs = None
            continue
        if outputs is None:
            raise _unsupported(item, "mix * and named columns in a WITH table")
        name = item.alias_or_name
        outputs[name.lower()] = item.unalias()
    where = body.args.get("where")
    return source.this, outputs, None if where is None else where.this


def inline_with(sql: str) -> str:
    """The query with its WITH tables inlined (their tables, expressions and filters
    put in place), or the query unchanged if it has none."""
    try:
        tree = sqlglot.parse_one(sql, dialect="duckdb")
    except sqlglot.errors.ParseError:
        return sql
    if not isinstance(tree, exp.Select) or not clause(tree, "with"):
        return sql
    definitions: dict[str, tuple[exp.Table, dict[str, exp.Expr] | None, exp.Expr | None]] = {}
    for cte in clause(tree, "with").expressions:
        table, outputs, where = _cte_definition(cte)
        if table.name.lower() in definitions:  # a WITH table over an earlier one
            inner, inner_outputs, inner_where = definitions[table.name.lower()]
            outputs = {n: _substitute(e, inner_outputs) for n, e in outputs.items()} if (
                outputs is not None) else inner_outputs
            where = exp.and_(inner_where, _substitute(where, inner_outputs)) if (
                where is not None and inner_where is not None) else (
                inner_where if where is None else _substitute(where, inner_outputs))
            table = inner
        definitions[cte.alias_or_name.lower()] = (table, outputs, where)
    main = tree.copy()
    main.set("with_" if "with_" in main.args else "with", None)
    filters: list[exp.Expr] = []
    for node in list(main.find_all(exp.Table)):
        found = definitions.get(node.name.lower())
        if found is None:
            continue
        table, outputs, where = found
        alias = node.alias_or_name
        qualify = len(main.args.get("joins") or []) > 0
        replacement = exp.Table(this=exp.to_identifier(table.name),
                                alias=exp.TableAlias(this=exp.to_identifier(alias)))
        node.replace(replacement)

        def rewrite(column: exp.Expr, outputs: dict[str, exp.Expr] | None = outputs,
                    alias: str = alias, qualify: bool = qualify) -> exp.Expr:
            if not isinstance(column, exp.Column) or (column.table and column.table != alias):
                return column
            if outputs is None or column.name.lower() not in outputs:
                return exp.column(column.name, table=alias) if qualify else column
            expression = outputs[column.name.lower()].copy()
            if qualify:
                expression = expression.transform(
                    lambda n: exp.column(n.name, table=alias) if isinstance(n, exp.Column)
                    else n)
            return exp.Paren(this=expression) if not isinstance(expression, exp.Column) \
                else expression

        for part in ("expressions", "where", "group", "having", "order", "joins"):
            value = main.args.get(part)
            if value is None:
                continue
            items = value if isinstance(value, list) else [value]
            for item in items:
                item.transform(rewrite, copy=False)
        if where is not None:
            condition = where.copy()
            if qualify:
                condition = condition.transform(
                    lambda n, alias=alias: exp.column(n.name, table=alias)
                    if isinstance(n, exp.Column) else n)
            filters.append(condition)
    for condition in filters:
        main = main.where(condition, copy=False)
    return main.sql(dialect="duckdb")


def _substitute(node: exp.Expr | None, outputs: dict[str, exp.Expr] | None) -> exp.Expr:
    assert node is not None
    if outputs is None:
        return node

    def replace(n: exp.Expr) -> exp.Expr:
        if not isinstance(n, exp.Column) or n.name.lower() not in outputs:
            return n
        expression = outputs[n.name.lower()].copy()
        return expression if isinstance(expression, exp.Column) else exp.Paren(
            this=expression)

    return node.transform(replace)


def parse_query(sql: str, schemas: Mapping[str, Schema]) -> Query:
    """Parse and check ``sql`` against the tables' public schemas."""
    try:
        statements = sqlglot.parse(sql, dialect="duckdb")
    except sqlglot.errors.ParseError as error:
        raise QueryError(f"this is not valid SQL: {str(error).splitlines()[0]}") from None
    if len(statements) != 1 or statements[0] is None:
        raise QueryError("give exactly one SQL statement")
    tree = statements[0]
    if not isinstance(tree, exp.Select):
        raise _unsupported(tree, "only SELECT queries run on secret data")
    _refuse_unsupported_clauses(tree)
    table, schema = _table(tree, schemas)
    names, expressions = _group_keys(tree, schema)
    group_by = _Grouping(names, frozenset(e.sql(dialect="duckdb") for e in expressions))
    aggregates: dict[str, Aggregate] = {}
    select = tuple(_select_item(item, schema, group_by, aggregates)
                   for item in tree.expressions)
    where = tree.args.get("where")
    if where is not None:
        _check_row_expression(where.this, schema, "filter", "WHERE")
    having = tree.args.get("having")
    if having is not None:
        _check_output_expression(having.this, schema, group_by, aggregates)
    order = tuple(_order_item(o, schema, group_by, aggregates, select)
                  for o in (tree.args["order"].expressions if tree.args.get("order") else []))
    secret = bool(expressions) and isinstance(expressions[0], exp.Column) and (
        schema.column(expressions[0].name).public_domain is None)
    if secret and tree.args.get("limit"):
        raise _unsupported(tree.args["limit"], "LIMIT with GROUP BY on a secret key is not "
                                               "supported")
    limit = None if secret else _limit(tree, order, names, select)
    return Query(sql=sql, table=table, select=select,
                 where=None if where is None else where.this, group_by=names,
                 having=None if having is None else having.this, order_by=order, limit=limit,
                 aggregates=tuple(aggregates.values()), group_expressions=expressions,
                 secret_group=secret)


def _refuse_unsupported_clauses(tree: exp.Select) -> None:
    for key, why in (("joins", "a JOIN is planned by concilium.query.join_planning"),
                     ("with", "WITH tables are inlined before planning"),
                     ("distinct", "SELECT DISTINCT is not supported"),
                     ("qualify", "QUALIFY is not supported")):
        if clause(tree, key):
            node = clause(tree, key)
            raise _unsupported(node[0] if isinstance(node, list) else node, why)
    for node in tree.find_all(exp.Window):
        raise _unsupported(node, "window functions are not supported")
    for node in tree.find_all(exp.Subquery, exp.Union):
        raise _unsupported(node, "subqueries and set operations are not supported")
    for node in tree.find_all(exp.Select):
        if node is not tree:
            raise _unsupported(node, "subqueries are not supported")


def _table(tree: exp.Select, schemas: Mapping[str, Schema]) -> tuple[str, Schema]:
    source = clause(tree, "from")
    if source is None or not isinstance(source.this, exp.Table):
        raise QueryError("the query needs FROM <table>")
    name = source.this.name
    for known, schema in schemas.items():
        if known.lower() == name.lower():
            return known, schema
    raise QueryError(f"there is no table {name!r}; the catalog has "
                     f"{', '.join(sorted(schemas)) or 'no tables'}")


def _column(node: exp.Column, schema: Schema, usage: str, clause: str) -> str:
    name = node.name
    if name not in schema:
        raise QueryError(f"{clause} names column {name!r}, which the table does not have "
                         f"(columns: {', '.join(schema.names)})")
    column = schema.column(name)
    if column.type is ColumnType.KEY and usage != "join" and usage not in KEY_AGGREGATES:
        raise key_refusal(column.name, usage)
    if usage in KEY_AGGREGATES:
        usage = "aggregate"
    if usage not in column.usage:
        raise QueryError(f"column {column.name!r} may not be used to {usage} (its schema "
                         f"allows: {', '.join(sorted(column.usage))})")
    return column.name


def _check_row_expression(node: exp.Expr, schema: Schema, usage: str,
                          clause: str) -> None:
    for aggregate in node.find_all(exp.AggFunc):
        raise _unsupported(aggregate, f"aggregates are not allowed in {clause}")
    for column in node.find_all(exp.Column):
        _column(column, schema, usage, clause)


def _group_keys(tree: exp.Select, schema: Schema) -> tuple[tuple[str, ...],
                                                         tuple[exp.Expr, ...]]:
    """GROUP BY items: columns with a public domain, select aliases, or expressions
    over one such column (histogram buckets such as ``FLOOR(age / 10)``); the planner
    works out each expression's public domain."""
    group = tree.args.get("group")
    if not group:
        return (), ()
    aliases = {item.alias.lower(): item.unalias() for item in tree.expressions
               if isinstance(item, exp.Alias)}
    names, expressions = [], []
    for item in group.expressions:
        name = None
        if isinstance(item, exp.Column) and item.name not in schema and (
                item.name.lower() in aliases):
            name, item = item.name, aliases[item.name.lower()]
        if isinstance(item, exp.Column):
            column = _column(item, schema, "group", "GROUP BY")
            if schema.column(column).public_domain is None and not _secret_key(
                    schema.column(column), len(group.expressions)):
                raise _unsupported(item, "GROUP BY needs a column with a public domain, or "
                                         "one integer or key column that is not nullable")
            names.append(name or column)
            expressions.append(item)
            continue
        for aggregate in item.find_all(exp.AggFunc):
            raise _unsupported(aggregate, "GROUP BY cannot use aggregates")
        if len({c.name.lower() for c in item.find_all(exp.Column)}) != 1:
            raise _unsupported(item, "a GROUP BY expression must use exactly one column")
        for column_node in item.find_all(exp.Column):
            _column(column_node, schema, "group", "GROUP BY")
        names.append(name or item.sql(dialect="duckdb"))
        expressions.append(item)
    return tuple(names), tuple(expressions)


def _secret_key(column: Column, keys: int) -> bool:
    """A group key whose values are secret: one integer or key column, not nullable."""
    return keys == 1 and column.type in (ColumnType.INT, ColumnType.KEY) and (
        not column.nullable)


def aggregate_key(node: exp.Expr) -> str:
    """The identity of an aggregate call (a WITHIN GROUP or FILTER clause belongs to
    it)."""
    parent = node.parent
    if isinstance(node, exp.PercentileCont) and isinstance(parent, exp.WithinGroup):
        return parent.sql(dialect="duckdb")
    if isinstance(parent, exp.Filter) and parent.this is node:
        return parent.sql(dialect="duckdb")
    return node.sql(dialect="duckdb")


def _quantile(node: exp.AggFunc, schema: Schema, aggregates: dict[str, Aggregate]) -> None:
    """MEDIAN(x), QUANTILE_CONT(x, p), PERCENTILE_CONT(p) WITHIN GROUP (ORDER BY x)."""
    parent = node.parent
    if isinstance(node, exp.Median):
        argument, fraction = node.this, exp.Literal.number(0.5)
    elif isinstance(parent, exp.WithinGroup):
        ordered = parent.expression.expressions
        if len(ordered) != 1:
            raise _unsupported(parent, "PERCENTILE_CONT orders by exactly one expression")
        argument, fraction = ordered[0].this, node.this
        if ordered[0].args.get("desc"):
            fraction = exp.Literal.number(1 - float(fraction.this))
    else:
        argument, fraction = node.this, node.expression
    if not isinstance(fraction, exp.Literal) or fraction.is_string or not (
            0 <= float(fraction.this) <= 1):
        raise _unsupported(node, "the quantile must be a number between 0 and 1")
    for column in argument.find_all(exp.Column):
        _column(column, schema, "aggregate", node.sql(dialect="duckdb"))
    for nested in argument.find_all(exp.AggFunc):
        raise _unsupported(nested, "aggregates cannot be nested")
    key = aggregate_key(node)
    aggregates.setdefault(key, Aggregate("quantile", (argument,), key, float(fraction.this)))


def _filtered(node: exp.AggFunc, arguments: tuple[exp.Expr, ...], schema: Schema
              ) -> tuple[exp.Expr, ...]:
    """``agg(x) FILTER (WHERE c)`` is ``agg(CASE WHEN c THEN x END)`` (``COUNT(*)``
    counts ``CASE WHEN c THEN 1 END``)."""
    parent = node.parent
    if not isinstance(parent, exp.Filter):
        return arguments
    condition = parent.expression.this
    _check_row_expression(condition, schema, "filter", "FILTER")
    values = arguments or (exp.Literal.number(1),)
    return tuple(exp.Case(ifs=[exp.If(this=condition.copy(), true=value.copy())])
                 for value in values)


def _aggregate(node: exp.AggFunc, schema: Schema, aggregates: dict[str, Aggregate]) -> None:
    kind = type(node)
    if isinstance(node, QUANTILES):
        _quantile(node, schema, aggregates)
        return
    if kind in _LATER:
        raise _unsupported(node, f"{_LATER[kind]} is not supported yet")
    if kind not in AGGREGATES:
        raise _unsupported(node, "this aggregate is not supported")
    inner = node.this
    function = AGGREGATES[kind]
    if isinstance(inner, exp.Distinct):
        if kind is not exp.Count or len(inner.expressions) != 1:
            raise _unsupported(node, "DISTINCT is supported in COUNT(DISTINCT x) only")
        inner, function = inner.expressions[0], "count_distinct"
    if kind is exp.Count and isinstance(inner, exp.Star):
        arguments: tuple[exp.Expr, ...] = ()
    elif BY_CLASS[kind].arity == 2:
        arguments = (node.this, node.expression)
    else:
        arguments = (inner,)
    for argument in arguments:
        if argument is None:
            raise _unsupported(node, "this aggregate needs an argument")
        for nested in argument.find_all(exp.AggFunc):
            raise _unsupported(nested, "aggregates cannot be nested")
        for column in argument.find_all(exp.Column):
            _column(column, schema, function if function in KEY_AGGREGATES else "aggregate",
                    node.sql(dialect="duckdb"))
    arguments = _filtered(node, arguments, schema)
    text = aggregate_key(node)
    aggregates.setdefault(text, Aggregate(function, arguments, text))


def _check_output_expression(node: exp.Expr, schema: Schema, group_by: _Grouping,
                             aggregates: dict[str, Aggregate]) -> None:
    """Output expressions combine aggregates, group keys and literals."""
    for aggregate in node.find_all(exp.AggFunc):
        _aggregate(aggregate, schema, aggregates)
    for column in node.find_all(exp.Column):
        if column.find_ancestor(exp.AggFunc, exp.WithinGroup, exp.Filter) is None and not (
                group_by.covers(column, schema, node)) and column.name not in group_by.names:
            raise QueryError(f"column {column.name!r} must appear in GROUP BY or inside an "
                             "aggregate")


def _select_item(item: exp.Expr, schema: Schema, group_by: _Grouping,
                 aggregates: dict[str, Aggregate]) -> tuple[exp.Expr, str]:
    if isinstance(item, exp.Star):
        raise _unsupported(item, "SELECT * would reveal rows; select aggregates instead")
    name = output_name(item)
    node = item.unalias()
    _check_output_expression(node, schema, group_by, aggregates)
    return node, name


def _order_item(ordered: exp.Ordered, schema: Schema, group_by: _Grouping,
                aggregates: dict[str, Aggregate],
                select: tuple[tuple[exp.Expr, str], ...]) -> tuple[exp.Expr, bool]:
    node = ordered.this
    if isinstance(node, exp.Column) and node.name in {name for _, name in select}:
        return node, bool(ordered.args.get("desc"))
    _check_output_expression(node, schema, group_by, aggregates)
    return node, bool(ordered.args.get("desc"))


def _limit(tree: exp.Select, order: tuple[tuple[exp.Expr, bool], ...],
           group_by: tuple[str, ...], select: tuple[tuple[exp.Expr, str], ...]) -> int | None:
    node = tree.args.get("limit")
    if node is None:
        return None
    value = node.expression
    if not isinstance(value, exp.Literal) or value.is_string or int(value.this) < 0:
        raise _unsupported(node, "LIMIT takes a non-negative integer")
    group_names = {g.lower() for g in group_by}
    for expression, _ in order:
        if not (isinstance(expression, exp.Column) and expression.name.lower() in group_names):
            raise _unsupported(node, "LIMIT after ORDER BY an aggregate would need a secure "
                                     "top-k; order by group columns only")
    return int(value.this)
