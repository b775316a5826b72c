"""Partial statistics: what each owner computes alone and shares, and how it is
encoded so that it fits.

A statistic is named by a :class:`StatisticKey` (its kind and the argument
indices it is about), never by a string to be parsed back. Its *encoding*
follows from public bounds (:class:`ArgumentRange`):

* ``integer``: exact ring integers (counts; sums, minima and maxima of integer
  arguments);
* ``fixed``: the codec's fixed point (``|x| < 2^31``), for owners' means;
* ``wide``: fixed point beyond the codec's range (up to ``2^46``), for sums of
  real arguments: each owner rounds every value to the fixed-point grid and
  sums the rounded values exactly (DuckDB ``HUGEINT``); an argument declared
  with ``decimals`` is summed exactly in its own units first (cents), so sums
  are exact to the cent. Squared deviations and co-deviations are wide too,
  divided by a public power of four (the argument's *moment shift*) only when
  the bound and the rows need it. Wide values are only added, compared and
  divided (:mod:`concilium.ops.long_division`), never multiplied by secrets.

A query whose sums could not fit even so is refused at planning, naming the
column and its bound (:func:`check_range`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from concilium.errors import UnsupportedQuery

__all__ = ["FRACTIONAL_BITS", "WIDE_LIMIT", "ArgumentRange", "Encoding", "Statistic",
           "StatisticKey", "check_range", "moment_shift", "root_shift", "spread_shift",
           "to_ring"]

FRACTIONAL_BITS = 16
#: Wide fixed-point values stay below this magnitude (their ring values below 2^62).
WIDE_LIMIT = 2.0**46
#: The fixed-point division's operands stay below this magnitude.
NARROW_LIMIT = 2.0**30

Encoding = Literal["integer", "fixed", "wide"]


@dataclass(frozen=True)
class StatisticKey:
    """A partial statistic's identity: its kind and the arguments it is about."""

    kind: str
    arguments: tuple[int, ...] = ()
    value: int | None = None  # a category's 1-based position (per-category counts)

    @property
    def alias(self) -> str:
        """Its column name in the owners' local SQL."""
        parts = [self.kind, *map(str, self.arguments)]
        if self.value is not None:
            parts.append(f"v{self.value}")
        return "_".join(parts)


@dataclass(frozen=True)
class Statistic:
    """One per-group partial statistic an owner computes and shares."""

    key: StatisticKey
    sql: str  # over the base columns a0, a1, ... (and window columns)
    encoding: Encoding
    empty: float  # its value for a group with no (non-null) rows
    description: str
    units: int = 1  # for wide sums: the owner's sum is in 1/units (2^16 or 10^decimals)

    @property
    def name(self) -> str:
        return self.key.alias


@dataclass(frozen=True)
class ArgumentRange:
    """What is public about one aggregate argument: integral or real, its bound,
    its decimals, and the most rows that can hold it (over all owners)."""

    text: str  # its SQL
    integral: bool
    bound: float | None  # the largest magnitude, if the schema states it
    decimals: int | None
    rows: int
    categories: tuple[str, ...] | None = None  # a category column's public domain

    @property
    def column(self) -> str:
        return self.text

    @property
    def sum_bound(self) -> float | None:
        return None if self.bound is None else self.bound * self.rows

    @property
    def wide_sum(self) -> bool:
        """Sums are shared wide (real arguments with stated bounds)."""
        return not self.integral and self.bound is not None

    @property
    def moment_shift(self) -> int:
        """``p``: squared deviations are shared divided by ``4^p`` (see
        :func:`moment_shift`)."""
        return moment_shift(self.bound, self.rows)

    @property
    def root_shift(self) -> int:
        """``r <= p``: variances are divided by ``4^r`` for their square roots."""
        return root_shift(self.bound)

    @property
    def spread_shift(self) -> int:
        """``t >= p``: owners' mean differences are divided by ``2^t`` before they are
        squared and weighted by counts (see :func:`spread_shift`)."""
        return spread_shift(self.bound, self.rows)


def root_shift(bound: float | None) -> int:
    """The least ``r >= 0`` with ``bound^2 / 4^r < 2^30``: a variance divided by ``4^r``
    fits the fixed point (for its square root)."""
    if bound is None or bound == 0:
        return 0
    return max(0, math.ceil((2 * math.log2(bound) - math.log2(NARROW_LIMIT)) / 2))


def moment_shift(bound: float | None, rows: int) -> int:
    """The least ``p >= 0`` with ``rows * bound^2 / 4^p < 2^46`` (a sum of squared
    deviations fits a wide value) and ``bound^2 / 4^p < 2^30`` (a variance fits the
    fixed point). Zero for any column of moderate bound: exact to the last place."""
    if bound is None or bound == 0:
        return 0
    need = max(math.log2(max(rows, 1)) + 2 * math.log2(bound) - math.log2(WIDE_LIMIT),
               2 * math.log2(bound) - math.log2(NARROW_LIMIT))
    return max(0, math.ceil(need / 2))


def spread_shift(bound: float | None, rows: int) -> int:
    """The least ``t >= p`` with ``rows * (2 bound / 2^t)^2 < 2^46`` and
    ``2 bound / 2^t < 2^15``: a count times a squared mean difference fits the ring."""
    if bound is None or bound == 0:
        return 0
    spread = math.log2(2 * bound)
    need = max(spread + 0.5 * math.log2(max(rows, 1)) - 23, spread - 15)
    return max(moment_shift(bound, rows), math.ceil(need))


def check_range(argument: ArgumentRange, function: str) -> None:
    """Refuse (at planning) a sum that could not fit, naming the column and bound."""
    if argument.bound is None:
        return
    total = argument.bound * argument.rows
    limit = WIDE_LIMIT if not argument.integral else 2.0**62
    if total >= limit:
        raise UnsupportedQuery(
            f"{function}({argument.text}) could reach {total:.3g} (bound {argument.bound:g} "
            f"times {argument.rows:,} rows), beyond the {limit:.3g} a secret sum can hold; "
            "state a smaller bound or max_rows in the schema", construct=argument.text)


def to_ring(value: Any, statistic: Statistic) -> int:
    """An owner's wide sum (exact, in 1/units) as a fixed-point ring integer, with
    exact integer arithmetic (round half up)."""
    if value is None:
        return 0
    scale = 1 << FRACTIONAL_BITS
    numerator = int(value) * scale * 2 + statistic.units
    return numerator // (2 * statistic.units)
