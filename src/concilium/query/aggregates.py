"""The aggregate registry: every aggregate Concilium runs, in one place.

An entry names the aggregate, its SQL spellings (sqlglot classes), how many
arguments it takes, its policy name (for ``allowed_aggregates``), the plan
kinds that support it, its ``explain`` text and, for the plan kind that works
on owners' partial statistics, the statistics it needs and how it is finished
on secret shares from them. Adding an aggregate means one entry (and its
tests).

Finishing functions see the combined partial statistics through
:class:`Partials` (implemented by :mod:`concilium.query.partials`) and return a
:class:`Finished`: the secret value per group, and when it is defined (SQL's
NULL: an average over no rows, a sample variance over one row, a slope of
constant ``x``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlglot import exp

from concilium.data.secret_array import SecretArray
from concilium.query.statistics import ArgumentRange, Encoding, Statistic, StatisticKey

__all__ = ["AGGREGATES", "BY_CLASS", "BY_NAME", "KINDS", "AggregateSpec", "Finished",
           "Partials", "aggregate_spec", "count_of", "sql_names", "supported_by"]

#: The plan kinds (see :mod:`concilium.query.planner`).
PARTIAL, ROWS, SECRET_GROUPS, JOIN = ("partial aggregates", "row statistics",
                                      "secret-key groups", "join")
KINDS = (PARTIAL, ROWS, SECRET_GROUPS, JOIN)


class Partials(Protocol):
    """The combined partial statistics of every owner, per group (secret)."""

    def argument(self, i: int) -> ArgumentRange: ...

    def total(self, key: StatisticKey) -> SecretArray: ...

    def mean(self, i: int) -> SecretArray: ...

    def extreme(self, function: str, i: int) -> SecretArray: ...

    def variance(self, i: int, sample: bool) -> SecretArray: ...

    def deviation(self, i: int, sample: bool) -> SecretArray: ...

    def moments(self, x: int, y: int) -> dict[str, SecretArray]: ...

    def category_counts(self, i: int) -> SecretArray: ...


@dataclass(frozen=True)
class Finished:
    """A finished aggregate: its value per group, and when it is defined: count
    conditions (a statistic at least a minimum) and secret 0/1 flags."""

    value: SecretArray
    at_least: tuple[tuple[StatisticKey, int], ...] = ()
    flags: tuple[SecretArray, ...] = ()
    categories: tuple[str, ...] | None = None  # the value is a 1-based domain position


Needs = Callable[[tuple[int, ...], Callable[[int], ArgumentRange]], list[Statistic]]
Finish = Callable[[Partials, tuple[int, ...]], Finished]


@dataclass(frozen=True)
class AggregateSpec:
    """One aggregate of the registry."""

    name: str
    spellings: tuple[type[exp.Expr], ...]
    arity: int  # arguments (COUNT(*) takes none)
    policy_name: str
    explain: str
    kinds: frozenset[str]
    needs: Needs | None = None  # partial statistics (the partial-aggregates kind)
    finish: Finish | None = None
    rows: bool = False  # computed from the shared rows (quantiles, distinct counts)
    extra: dict[str, Any] = field(default_factory=dict)


# -- partial statistics ---------------------------------------------------------------
def _key(kind: str, *arguments: int, value: int | None = None) -> StatisticKey:
    return StatisticKey(kind, tuple(arguments), value)


ROWS_KEY = _key("rows")


def count_of(i: int) -> StatisticKey:
    return _key("count", i)


def _count(i: int) -> Statistic:
    return Statistic(count_of(i), f"COUNT(a{i})", "integer", 0, f"COUNT(a{i})")


def _sum(i: int, argument: ArgumentRange) -> Statistic:
    text = f"SUM({argument.text})"
    if not argument.wide_sum:
        encoding: Encoding = "integer" if argument.integral else "fixed"
        return Statistic(_key("sum", i), f"SUM(a{i})", encoding, 0, text)
    units = 10**argument.decimals if argument.decimals is not None else 1 << 16
    return Statistic(_key("sum", i), f"SUM(CAST(ROUND(a{i} * {units}) AS HUGEINT))", "wide",
                     0, f"{text}, exactly, in 1/{units}", units=units)


def _wide_moment(key: StatisticKey, sql: str, shift: int, description: str) -> Statistic:
    """A sum of squared deviations (or co-deviations) divided by ``2^shift``, shared
    as a wide value: exact to 2^-16 of its units."""
    scale = 2.0**shift
    units = 1 << 16
    return Statistic(key, f"CAST(ROUND(({sql}) * {units / scale}) AS HUGEINT)", "wide", 0,
                     f"{description}{f' / {scale:g}' if shift else ''}", units=units)


def _moments(i: int, argument: ArgumentRange) -> list[Statistic]:
    shift = 2 * argument.moment_shift
    return [Statistic(_key("mean", i), f"AVG(a{i})", "fixed", 0, f"AVG({argument.text})"),
            _wide_moment(_key("m2", i), f"VAR_POP(a{i}) * COUNT(a{i})", shift,
                         f"sum of squared deviations of {argument.text} from the local "
                         "mean")]


_INT_SENTINEL = float(2**62)
_FIXED_SENTINEL = float(2**31 - 1)


def _extreme(function: str, i: int, argument: ArgumentRange) -> list[Statistic]:
    sentinel = _INT_SENTINEL if argument.integral else _FIXED_SENTINEL
    encoding: Encoding = "integer" if argument.integral else "fixed"
    if function == "min":
        return [Statistic(_key("min", i), f"MIN(a{i})", encoding, sentinel,
                          f"MIN({argument.text})"),
                Statistic(_key("min_rows", i), f"COUNT(*) FILTER (WHERE a{i} = w_min_{i})",
                          "integer", 0, f"rows at the local MIN({argument.text})")]
    return [Statistic(_key("max", i), f"MAX(a{i})", encoding, -sentinel,
                      f"MAX({argument.text})"),
            Statistic(_key("max_rows", i), f"COUNT(*) FILTER (WHERE a{i} = w_max_{i})",
                      "integer", 0, f"rows at the local MAX({argument.text})")]


def _pair(x: int, y: int, arguments: Callable[[int], ArgumentRange]) -> list[Statistic]:
    both = f"FILTER (WHERE a{x} IS NOT NULL AND a{y} IS NOT NULL)"
    px, py = arguments(x).moment_shift, arguments(y).moment_shift
    statistics = [Statistic(_key("pair_rows", x, y), f"COUNT(*) {both}", "integer", 0,
                            "rows with both inputs")]
    for axis, i in (("x", x), ("y", y)):
        argument = arguments(i)
        total = _sum(i, argument)
        statistics.append(Statistic(_key(f"pair_sum_{axis}", x, y), f"{total.sql} {both}",
                                    total.encoding, 0, f"{total.description} over the pairs",
                                    units=total.units))
        statistics.append(Statistic(_key(f"pair_mean_{axis}", x, y), f"AVG(a{i}) {both}",
                                    "fixed", 0, f"local mean of {argument.text} over the pairs"))
    statistics += [
        _wide_moment(_key("pair_m2_x", x, y), f"VAR_POP(a{x}) {both} * COUNT(*) {both}",
                     2 * px, f"squared deviations of {arguments(x).text}"),
        _wide_moment(_key("pair_m2_y", x, y), f"VAR_POP(a{y}) {both} * COUNT(*) {both}",
                     2 * py, f"squared deviations of {arguments(y).text}"),
        _wide_moment(_key("pair_co", x, y), f"COVAR_POP(a{x}, a{y}) {both} * COUNT(*) {both}",
                     px + py, "co-deviations of the two inputs")]
    return statistics


def _needs_count(indices: tuple[int, ...], arguments: Callable[[int], ArgumentRange]
                 ) -> list[Statistic]:
    return [_count(i) for i in indices]


def _needs_sum(indices: tuple[int, ...], arguments: Callable[[int], ArgumentRange]
               ) -> list[Statistic]:
    (i,) = indices
    return [_count(i), _sum(i, arguments(i))]


def _needs_variance(indices: tuple[int, ...], arguments: Callable[[int], ArgumentRange]
                    ) -> list[Statistic]:
    (i,) = indices
    return [_count(i), _sum(i, arguments(i)), *_moments(i, arguments(i))]


def _needs_extreme(function: str) -> Needs:
    def needs(indices: tuple[int, ...], arguments: Callable[[int], ArgumentRange]
              ) -> list[Statistic]:
        (i,) = indices
        return [_count(i), *_extreme(function, i, arguments(i))]
    return needs


def _needs_pair(indices: tuple[int, ...], arguments: Callable[[int], ArgumentRange]
                ) -> list[Statistic]:
    y, x = indices  # SQL's order: (dependent, independent)
    return [_count(y), _count(x), *_pair(x, y, arguments)]


def _needs_categories(indices: tuple[int, ...], arguments: Callable[[int], ArgumentRange]
                      ) -> list[Statistic]:
    (i,) = indices
    size = int(arguments(i).bound or 0)
    return [_count(i), *(Statistic(_key("category", i, value=v),
                                   f"COUNT(*) FILTER (WHERE a{i} = {v})", "integer", 0,
                                   f"rows of category {v} of {arguments(i).text}")
                         for v in range(1, size + 1))]


# -- finishing on shares ---------------------------------------------------------------
def _finish_count(partials: Partials, indices: tuple[int, ...]) -> Finished:
    return Finished(partials.total(count_of(indices[0]) if indices else ROWS_KEY))


def _finish_sum(partials: Partials, indices: tuple[int, ...]) -> Finished:
    (i,) = indices
    return Finished(partials.total(_key("sum", i)), ((count_of(i), 1),))


def _finish_avg(partials: Partials, indices: tuple[int, ...]) -> Finished:
    (i,) = indices
    return Finished(partials.mean(i), ((count_of(i), 1),))


def _finish_extreme(function: str) -> Finish:
    def finish(partials: Partials, indices: tuple[int, ...]) -> Finished:
        (i,) = indices
        return Finished(partials.extreme(function, i), ((count_of(i), 1),))
    return finish


def _finish_variance(function: str) -> Finish:
    sample = function.endswith("samp")

    def finish(partials: Partials, indices: tuple[int, ...]) -> Finished:
        (i,) = indices
        value = (partials.deviation(i, sample) if function.startswith("stddev")
                 else partials.variance(i, sample))
        return Finished(value, ((count_of(i), 2 if sample else 1),))
    return finish


def _finish_pair(name: str) -> Finish:
    def finish(partials: Partials, indices: tuple[int, ...]) -> Finished:
        y, x = indices
        moments = partials.moments(x, y)
        rows = _key("pair_rows", x, y)
        minimum = 2 if name in ("corr", "covar_samp") else 1
        if name == "regr_count":
            return Finished(partials.total(rows))
        flags = tuple(moments[f] for f in {"corr": ("defined_x", "defined_y"),
                                           "regr_slope": ("defined_x",),
                                           "regr_intercept": ("defined_x",),
                                           "regr_r2": ("defined_x",)}.get(name, ()))
        return Finished(moments[name], ((rows, minimum),), flags)
    return finish


def _finish_mode(partials: Partials, indices: tuple[int, ...]) -> Finished:
    (i,) = indices
    counts = partials.category_counts(i)  # (categories, groups)
    position = counts.argmax(axis=0) + 1
    return Finished(position, ((count_of(i), 1),),
                    categories=partials.argument(i).categories)


_ALL = frozenset(KINDS)
_PARTIAL = frozenset({PARTIAL, ROWS})
AGGREGATES: tuple[AggregateSpec, ...] = (
    AggregateSpec("count", (exp.Count,), 1, "count", "sum of the owners' counts", _ALL,
                  _needs_count, _finish_count),
    AggregateSpec("sum", (exp.Sum,), 1, "sum", "sum of the owners' sums", _ALL,
                  _needs_sum, _finish_sum),
    AggregateSpec("avg", (exp.Avg,), 1, "avg",
                  "sum / count (secure division; for wide sums, division by the normalized "
                  "count)", _ALL,
                  _needs_sum, _finish_avg),
    AggregateSpec("min", (exp.Min,), 1, "min",
                  "secure minimum over the owners' minima (comparisons)", _ALL,
                  _needs_extreme("min"), _finish_extreme("min")),
    AggregateSpec("max", (exp.Max,), 1, "max",
                  "secure maximum over the owners' maxima (comparisons)", _ALL,
                  _needs_extreme("max"), _finish_extreme("max")),
    AggregateSpec("var_samp", (exp.Variance,), 1, "variance",
                  "parallel variance (Chan et al.): owners' squared deviations plus "
                  "count-weighted squared mean differences, / (count - 1)", _PARTIAL,
                  _needs_variance, _finish_variance("var_samp")),
    AggregateSpec("var_pop", (exp.VariancePop,), 1, "variance",
                  "parallel variance (Chan et al.), / count", _PARTIAL, _needs_variance,
                  _finish_variance("var_pop")),
    AggregateSpec("stddev_samp", (exp.Stddev, exp.StddevSamp), 1, "stddev",
                  "square root of the sample variance (secure sqrt)", _PARTIAL,
                  _needs_variance, _finish_variance("stddev_samp")),
    AggregateSpec("stddev_pop", (exp.StddevPop,), 1, "stddev",
                  "square root of the population variance (secure sqrt)", _PARTIAL,
                  _needs_variance, _finish_variance("stddev_pop")),
    AggregateSpec("corr", (exp.Corr,), 2, "corr",
                  "parallel co-moments, / sqrt(Sxx) / sqrt(Syy) (secure roots and "
                  "divisions)", _PARTIAL, _needs_pair, _finish_pair("corr")),
    AggregateSpec("covar_pop", (exp.CovarPop,), 2, "covar",
                  "parallel co-moments / count", _PARTIAL, _needs_pair,
                  _finish_pair("covar_pop")),
    AggregateSpec("covar_samp", (exp.CovarSamp,), 2, "covar",
                  "parallel co-moments / (count - 1)", _PARTIAL, _needs_pair,
                  _finish_pair("covar_samp")),
    AggregateSpec("regr_slope", (exp.RegrSlope,), 2, "regr",
                  "co-moment / squared deviations of x (least squares)", _PARTIAL,
                  _needs_pair, _finish_pair("regr_slope")),
    AggregateSpec("regr_intercept", (exp.RegrIntercept,), 2, "regr",
                  "mean of y - slope * mean of x", _PARTIAL, _needs_pair,
                  _finish_pair("regr_intercept")),
    AggregateSpec("regr_r2", (exp.RegrR2,), 2, "regr",
                  "squared correlation (1 for constant y)", _PARTIAL, _needs_pair,
                  _finish_pair("regr_r2")),
    AggregateSpec("regr_count", (exp.RegrCount,), 2, "regr",
                  "sum of the owners' counts of rows with both inputs", _PARTIAL,
                  _needs_pair, _finish_pair("regr_count")),
    AggregateSpec("mode", (exp.Mode,), 1, "mode",
                  "owners' counts per category of the public domain, summed; the most "
                  "frequent (first in the domain on ties) by a secure argmax", _PARTIAL,
                  _needs_categories, _finish_mode),
    AggregateSpec("quantile", (exp.Median, exp.PercentileCont), 1, "median",
                  "secure sort of the shared rows, exact position, one-hot selection, "
                  "interpolation", frozenset({ROWS}), _needs_count, None, rows=True),
    AggregateSpec("count_distinct", (), 1, "count_distinct",
                  "secure sort of the shared rows, run starts (secure equality) counted per "
                  "group", frozenset({ROWS, JOIN}), _needs_count, None, rows=True),
)

BY_NAME = {spec.name: spec for spec in AGGREGATES}
BY_CLASS: dict[type[exp.Expr], AggregateSpec] = {
    cls: spec for spec in AGGREGATES for cls in spec.spellings
    if spec.name != "quantile"}


def aggregate_spec(name: str) -> AggregateSpec:
    return BY_NAME[name]


def supported_by(kind: str) -> tuple[str, ...]:
    """The aggregates (SQL names) a plan kind supports, in registry order."""
    return tuple(spec.name for spec in AGGREGATES if kind in spec.kinds)


def sql_names(names: tuple[str, ...]) -> str:
    """``COUNT, SUM, ...`` for messages."""
    spelled = {"count_distinct": "COUNT(DISTINCT)", "quantile": "MEDIAN/PERCENTILE_CONT"}
    return ", ".join(spelled.get(n, n.upper()) for n in names)
