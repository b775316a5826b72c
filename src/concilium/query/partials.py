"""Every owner's partial statistics, combined per group on secret shares: the
:class:`~concilium.query.aggregates.Partials` the registry's aggregates are
finished from.

* Sums add up; an average divides a sum by its count: by the fixed-point
  division when the sum's public bound fits its range, else by a division of
  the wide sum by the count (:mod:`concilium.ops.count_division`, or exact long
  division, :mod:`concilium.ops.long_division`, where its sizes do not fit the
  ring), with the quotient's bits from the argument's bound.
* Variances follow Chan, Golub and LeVeque (1979): the owners' squared
  deviations from their own means plus the count-weighted squared differences
  of those means from the global one, as wide values in the argument's moment
  shift units (:mod:`concilium.query.statistics`), so that they fit over any
  number of rows, divided by the count the same way.
* Co-moments the same way for correlations, covariances and regressions.

Reveals: nothing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from concilium.data import functions as fn
from concilium.data.secret_array import SecretArray
from concilium.data.session import Session
from concilium.errors import PolicyViolation
from concilium.ops.count_division import divide_by_count, fits
from concilium.ops.long_division import long_divide
from concilium.query.aggregates import ROWS_KEY, count_of
from concilium.query.statistics import NARROW_LIMIT, WIDE_LIMIT, ArgumentRange, StatisticKey

__all__ = ["Combined", "PairMoments", "mean_of"]


def mean_of(total: SecretArray, count: SecretArray, argument: ArgumentRange | None
            ) -> SecretArray:
    """``total / count`` in fixed point: the fixed-point division when the total fits
    its range, else a division of the wide total by the count (the quotient is within
    the argument's bound)."""
    bound = None if argument is None else argument.bound
    if bound is None or bound * argument.rows < NARROW_LIMIT:  # type: ignore[union-attr]
        return fn.divide(total.as_fixed(), count)
    assert argument is not None
    session = total.session
    bits = math.ceil(math.log2(bound + 1)) + 1
    fraction = session.codec.fractional_bits
    if not total.is_fixed and bound * argument.rows < WIDE_LIMIT:
        total = total * (1 << fraction)  # an integer sum in fixed point: it fits
        total = SecretArray(session, total.shares, fraction)
    if total.is_fixed:  # in 2^-16 units already: the quotient is the fixed-point mean
        shares = divide_count(session, total.shares, count.shares, argument.rows,
                              quotient_bits=bits + total.fractional_bits)
        return SecretArray(session, shares, total.fractional_bits)
    shares = divide_count(session, total.shares, count.shares, argument.rows,
                          quotient_bits=bits, fraction_bits=fraction)
    return SecretArray(session, shares, fraction)


def divide_count(session: Any, numerator: Any, count: Any, rows: int, *,
                 quotient_bits: int, fraction_bits: int = 0) -> Any:
    """``numerator * 2^fraction_bits / count`` on shares, for a count of at most
    ``rows``: normalized by the count's exponent (:mod:`concilium.ops.count_division`,
    about 30 rounds) when the sizes fit the ring, else exact long division (one
    comparison per quotient bit)."""
    count_bits = max(1, math.ceil(math.log2(rows + 1)))
    backend = session.backend
    if fits(count_bits, quotient_bits, fraction_bits):
        return divide_by_count(backend, numerator, count, count_bits=count_bits,
                               quotient_bits=quotient_bits, fraction_bits=fraction_bits)
    return long_divide(backend, numerator, count, quotient_bits=quotient_bits,
                       fraction_bits=fraction_bits)


class Combined:
    """The owners' partial statistics of one plan, combined per group."""

    def __init__(self, session: Session, ranges: Sequence[ArgumentRange],
                 shares: Mapping[StatisticKey, list[SecretArray]]) -> None:
        self.session = session
        self.ranges = ranges
        self.shares = shares
        self.cache: dict[Any, SecretArray] = {}
        self.pairs: dict[tuple[int, int], PairMoments] = {}

    def argument(self, i: int) -> ArgumentRange:
        return self.ranges[i]

    def total(self, key: StatisticKey) -> SecretArray:
        if key not in self.cache:
            parts = self.shares[key]
            result = parts[0]
            for part in parts[1:]:
                result = result + part
            self.cache[key] = result
        return self.cache[key]

    def stacked(self, key: StatisticKey) -> SecretArray:
        parts = self.shares[key]
        return SecretArray(self.session, np.stack([p.shares for p in parts], axis=1),
                           parts[0].fractional_bits)

    def rows(self) -> SecretArray:
        return self.total(ROWS_KEY)

    def mean(self, i: int) -> SecretArray:
        key = ("mean", i)
        if key not in self.cache:
            self.cache[key] = mean_of(self.total(StatisticKey("sum", (i,))),
                                      self.total(count_of(i)), self.ranges[i])
        return self.cache[key]

    def extreme(self, function: str, i: int) -> SecretArray:
        key = (function, i)
        if key not in self.cache:
            stacked = self.stacked(StatisticKey(function, (i,)))
            self.cache[key] = stacked.min(axis=0) if function == "min" else stacked.max(axis=0)
        return self.cache[key]

    def extreme_rows(self, function: str, i: int) -> SecretArray:
        """Per group, how many rows hold the global MIN or MAX: the rows at each owner's
        local extreme, for the owners whose extreme it is."""
        held = StatisticKey(f"{function}_rows", (i,))
        if held not in self.shares:  # never skip a rule: the plan must provide for it
            raise PolicyViolation("the plan was made without the output policy's minimum "
                                  "cohort, which MIN and MAX need; plan the query with it")
        local = self.stacked(StatisticKey(function, (i,)))
        return ((local == self.extreme(function, i)) * self.stacked(held)).sum(axis=0)

    def between(self, counts: SecretArray, left: SecretArray, right: SecretArray,
                shifts: tuple[int, int], target: int) -> SecretArray:
        """``sum_k counts_k * left_k * right_k`` (owners' mean differences from the
        global means) in ``2^-target`` units: ``left`` and ``right`` are divided by
        ``2^shifts`` first, so that the products fit the ring; ``sum(shifts) >=
        target``."""
        scaled = [value * 2.0**-shift if shift else value
                  for value, shift in zip((left, right), shifts, strict=True)]
        product = scaled[0] * scaled[0] if left is right else scaled[0] * scaled[1]
        products = (counts * product).sum(axis=0)
        extra = sum(shifts) - target
        return products * (1 << extra) if extra else products

    def deviations(self, i: int) -> SecretArray:
        """Sum of squared deviations from the global mean (Chan et al.), wide, in
        ``4^-p`` units."""
        key = ("m2", i)
        if key not in self.cache:
            argument = self.ranges[i]
            spreads = self.stacked(StatisticKey("mean", (i,))) - self.mean(i)
            shift = argument.spread_shift
            between = self.between(self.stacked(count_of(i)), spreads, spreads,
                                   (shift, shift), 2 * argument.moment_shift)
            self.cache[key] = self.total(StatisticKey("m2", (i,))) + between
        return self.cache[key]

    def _variance(self, i: int, sample: bool, shift: int) -> SecretArray:
        """The variance divided by ``4^shift``, by exact long division of the wide
        squared deviations (in ``4^-p`` units, ``shift <= p``)."""
        key = ("var", i, sample, shift)
        if key not in self.cache:
            count = self.total(count_of(i))
            if sample:  # max(count - 1, 0): a lone row's variance is NULL, divided by 0
                count = (count - 1) * (count >= 1)
            argument = self.ranges[i]
            p = argument.moment_shift
            bound = argument.bound**2 / 4**p if argument.bound else 2.0**30
            self.cache[key] = divide_wide(self.deviations(i), count, bound, argument.rows,
                                          fraction_bits=2 * (p - shift))
        return self.cache[key]

    def variance(self, i: int, sample: bool) -> SecretArray:
        return self._variance(i, sample, 0)

    def deviation(self, i: int, sample: bool) -> SecretArray:
        shift = self.ranges[i].root_shift
        root = fn.sqrt(self._variance(i, sample, shift))
        return root * (1 << shift) if shift else root

    def moments(self, x: int, y: int) -> Any:
        if (x, y) not in self.pairs:
            self.pairs[(x, y)] = PairMoments(self, x, y)
        return self.pairs[(x, y)]

    def category_counts(self, i: int) -> SecretArray:
        size = len(self.ranges[i].categories or ())
        return SecretArray.stack([self.total(StatisticKey("category", (i,), v))
                                  for v in range(1, size + 1)])


def divide_wide(numerator: SecretArray, count: SecretArray, bound: float, rows: int, *,
                fraction_bits: int = 0) -> SecretArray:
    """``numerator * 2^fraction_bits / count`` for a wide fixed-point numerator and an
    integer count of at most ``rows`` (``|numerator / count| < bound``)."""
    session = numerator.session
    bits = math.ceil(math.log2(bound + 1)) + 1 + numerator.fractional_bits
    shares = divide_count(session, numerator.shares, count.shares, rows,
                          quotient_bits=min(bits, 62 - fraction_bits),
                          fraction_bits=fraction_bits)
    return SecretArray(session, shares, numerator.fractional_bits)


class PairMoments:
    """Co-moments of (x, y) over the rows where both are present, each computed when
    first asked for (``moments[name]``): Chan et al.'s pairwise combination, on wide
    values in the arguments' moment-shift units, divided exactly by the count.

    (A plain cache, not ``functools.cached_property``: that one locks per class, and
    the parties of an in-process run would wait on each other's computations.)"""

    def __init__(self, combined: Combined, x: int, y: int) -> None:
        self.combined, self.x, self.y = combined, x, y
        self.range_x, self.range_y = combined.ranges[x], combined.ranges[y]
        self.px, self.py = self.range_x.moment_shift, self.range_y.moment_shift
        self.rows = max(self.range_x.rows, self.range_y.rows)  # the most rows of a pair
        self.values: dict[str, SecretArray] = {}

    def _key(self, kind: str) -> StatisticKey:
        return StatisticKey(kind, (self.x, self.y))

    def __getitem__(self, name: str) -> SecretArray:
        if name not in self.values:
            self.values[name] = getattr(self, f"_{name}")()
        return self.values[name]

    def _count(self) -> SecretArray:
        return self.combined.total(self._key("pair_rows"))

    def _mean_x(self) -> SecretArray:
        return mean_of(self.combined.total(self._key("pair_sum_x")), self["count"],
                       self.range_x)

    def _mean_y(self) -> SecretArray:
        return mean_of(self.combined.total(self._key("pair_sum_y")), self["count"],
                       self.range_y)

    def _sums(self) -> SecretArray:
        """Sxx, Syy (in 4^-px, 4^-py units) and Sxy (in 2^-(px+py)), wide, stacked."""
        c = self.combined
        counts = c.stacked(self._key("pair_rows"))
        dx = c.stacked(self._key("pair_mean_x")) - self["mean_x"]
        dy = c.stacked(self._key("pair_mean_y")) - self["mean_y"]
        tx, ty = self.range_x.spread_shift, self.range_y.spread_shift
        sxx = c.total(self._key("pair_m2_x")) + c.between(counts, dx, dx, (tx, tx), 2 * self.px)
        syy = c.total(self._key("pair_m2_y")) + c.between(counts, dy, dy, (ty, ty), 2 * self.py)
        sxy = c.total(self._key("pair_co")) + c.between(counts, dx, dy, (tx, ty),
                                                        self.px + self.py)
        return SecretArray.stack([sxx, syy, sxy])

    def _bounds(self) -> tuple[float, float]:
        return self.range_x.bound or 2.0**15, self.range_y.bound or 2.0**15

    def _moments(self) -> SecretArray:
        """Sxx / n, Syy / n and Sxy / n exactly, divided by ``4^rx``, ``4^ry`` and
        ``2^(rx + ry)`` (the root shifts) so that their square roots fit."""
        bx, by = self._bounds()
        rx, ry = self.range_x.root_shift, self.range_y.root_shift
        sums, count = self["sums"], self["count"]
        rows = self.rows
        parts = [divide_wide(sums[0], count, bx * bx / 4**self.px, rows,
                             fraction_bits=2 * (self.px - rx)),
                 divide_wide(sums[1], count, by * by / 4**self.py, rows,
                             fraction_bits=2 * (self.py - ry)),
                 divide_wide(sums[2], count, bx * by / 2**(self.px + self.py), rows,
                             fraction_bits=self.px + self.py - rx - ry)]
        return SecretArray.stack(parts)

    def _defined_x(self) -> SecretArray:
        return self["sums"][0] > 0

    def _defined_y(self) -> SecretArray:
        return self["sums"][1] > 0

    def _roots(self) -> SecretArray:
        return fn.sqrt(fn.relu(self["moments"][:2]))

    def _corr(self) -> SecretArray:
        roots = self["roots"]
        # divide twice: 1/sqrt(Syy) alone can be a few units in the last place
        return fn.divide(fn.divide(self["moments"][2], roots[0]), roots[1])

    def _covariance(self, divisor: SecretArray) -> SecretArray:
        """Sxy / divisor in real units, exactly."""
        bx, by = self._bounds()
        return divide_wide(self["sums"][2], divisor, bx * by / 2**(self.px + self.py),
                           self.rows, fraction_bits=self.px + self.py)

    def _covar_pop(self) -> SecretArray:
        if self.range_x.root_shift + self.range_y.root_shift == 0:
            return self["moments"][2]  # already in real units
        return self._covariance(self["count"])

    def _covar_samp(self) -> SecretArray:
        count = self["count"]
        return self._covariance((count - 1) * (count >= 1))

    def _regr_slope(self) -> SecretArray:
        moments = self["moments"]
        shift = self.range_y.root_shift - self.range_x.root_shift
        slope = fn.divide(moments[2], moments[0])
        return slope * 2.0**shift if shift else slope

    def _regr_intercept(self) -> SecretArray:
        """``mean_y - Sxy mean_x / Sxx``: the product before the division, so that the
        slope's last place is not multiplied by the mean (divided by ``2^q`` when the
        product could leave the fixed-point range)."""
        moments = self["moments"]
        bx, by = self._bounds()
        rx, ry = self.range_x.root_shift, self.range_y.root_shift
        reach = bx * by / 2**(rx + ry) * bx
        q = max(0, math.ceil(math.log2(reach) - 29)) if reach > 0 else 0
        mean_x = self["mean_x"] * 2.0**-q if q else self["mean_x"]
        shifted = fn.divide(moments[2] * mean_x, moments[0])
        return self["mean_y"] - shifted * 2.0**(q + ry - rx)

    def _regr_r2(self) -> SecretArray:
        corr = self["corr"]
        square = corr * corr
        return fn.where(self["defined_y"], square, square * 0 + 1.0)
