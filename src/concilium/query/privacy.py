"""Differential privacy for aggregate queries: noise made inside MPC on the owners'
combined statistics, before anything about them is opened.

Under an output policy with ``dp = { rho = R }`` a query is planned with a
:class:`NoisePlan`: every statistic the query's plan combines (the row count
of each group, each argument's count and sum) gets its own share ``R / m`` of
the query's privacy loss (``m`` statistics), and the noise that makes it
``R / m``-zCDP at the statistic's sensitivity: one row per privacy unit
changes a count by 1 and a sum by the argument's public bound (rows outside
the schema's bounds are refused at the owner, which bounds every row as
clamping would). Groups partition the rows, so one row moves one cell of each
statistic: a histogram costs what one count costs. Every later step
(averages as noisy sum / noisy count, ``HAVING``, which groups appear, the
minimum cohort, suppression, rounding) only post-processes noisy values.

The noise is Skellam (:mod:`concilium.mpc.noise`): each of the ``n`` compute
parties draws ``Sk(mu / h)`` per cell from its own PRG and the parties sum the
draws on shares (:meth:`~concilium.mpc.backend.Backend.sum_of_private`, one
round and eight bytes per cell for ``rep3``), where ``h = n - t`` is the
number of parties that are honest under the protocol's threshold ``t``: the
honest parties' noise alone is ``Sk(mu)`` (two of three for ``rep3``; one,
each party's own, under a dishonest-majority protocol). Statistics whose
noise would exceed :data:`~concilium.mpc.noise.MAX_DEVIATION` units are first
floored to a grid of ``2^b`` units on shares (an exact truncation) and the
noise is drawn on that grid.

Each released value comes with its mechanism, parameters and a 95% interval
(``attrs["privacy"]`` of the result): for counts and sums, the 95% quantile
of the *total* noise (all ``n`` parties' draws, plus the grid's rounding);
for an average, the delta-method interval from the variances of the noisy
sum and count, which needs the cell's noisy count: it is released to the
recipients with the average (post-processing; it is already paid for).

Reveals: the noisy values only (and, with an average, its noisy count).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sqlglot import exp

from concilium.data.secret_array import SecretArray
from concilium.data.session import Session
from concilium.errors import PolicyViolation
from concilium.governance.budget import DELTA, epsilon_of
from concilium.mpc.noise import MAX_DEVIATION, skellam_mu, skellam_rho, skellam_table
from concilium.mpc.protocols import ThreatModel
from concilium.query.statistics import FRACTIONAL_BITS, Statistic, StatisticKey
from concilium.ring.arithmetic import RING_DTYPE
from concilium.ring.prg import Prg

__all__ = ["HIDDEN", "NoisePlan", "NoisedStatistic", "add_noise", "annotate", "average_counts",
           "floor_to_grid", "honest_parties", "noise_plan"]

_ALLOWED = ("count", "sum", "avg")
#: prefix of the extra result columns (an average's noisy count) that carry an interval
HIDDEN = "__noisy_count__:"


@dataclass(frozen=True)
class NoisedStatistic:
    """One statistic's noise: its key, sensitivity (in grid units), grid and mu."""

    key: StatisticKey
    unit: float  # the value of one unit of the statistic's encoding
    grid_bits: int  # noise on a grid of 2^grid_bits units (floored first when > 0)
    sensitivity: int  # in grid units
    mu: float  # the honest parties' total Skellam parameter
    rho: float  # its zCDP loss (at most the query's rho / m)

    def party_mu(self, honest: int) -> float:
        """What each party draws so that any ``honest`` of them reach ``mu``."""
        return self.mu / honest

    @property
    def grid(self) -> float:
        return self.unit * 2.0**self.grid_bits

    def half_width(self, parties: int, honest: int, owners: int) -> float:
        """95% of the total noise (all parties' draws) lies within this, plus the
        owners' rounding to the grid (at most half a step each, once centred)."""
        quantile = skellam_table(parties * self.party_mu(honest)).quantile95
        return self.grid * (quantile + (0.5 * owners if self.grid_bits else 0.0))

    def variance(self, parties: int, honest: int, owners: int) -> float:
        """The variance of the released value's error (noise and grid rounding)."""
        rounding = owners / 12 if self.grid_bits else 0.0
        return self.grid**2 * (2 * parties * self.party_mu(honest) + rounding)


@dataclass(frozen=True)
class NoisePlan:
    """A query's noise: its total rho and each statistic's share of it."""

    rho: float
    mechanism: str
    statistics: tuple[NoisedStatistic, ...]
    #: statistics equal to another (the count of a column that is never NULL is the
    #: row count): they take the other's noisy value, and no rho of their own
    aliases: tuple[tuple[StatisticKey, StatisticKey], ...] = ()

    def by_key(self) -> dict[StatisticKey, NoisedStatistic]:
        found = {s.key: s for s in self.statistics}
        return {**found, **{alias: found[same] for alias, same in self.aliases}}

    def grid_bits(self, key: StatisticKey) -> int:
        """The grid an owner floors its partial statistic to (0: none)."""
        statistic = self.by_key().get(key)
        return 0 if statistic is None else statistic.grid_bits

    def describe(self) -> str:
        """For ``explain``: the mechanism, each statistic's noise and the cost."""
        lines = [f"Skellam noise made on shares, rho={self.rho:g} zCDP for this query "
                 f"(epsilon {epsilon_of(self.rho):.3g} at delta {DELTA:g}), split over "
                 f"{len(self.statistics)} statistics:"]
        for s in self.statistics:
            lines.append(f"  - {s.key.alias}: sensitivity {s.sensitivity} on a grid of "
                         f"{s.grid:g}, Sk(mu={s.mu:.4g}) from the honest parties, rho "
                         f"{s.rho:.4g}")
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        return {"mechanism": self.mechanism, "rho": self.rho,
                "epsilon": epsilon_of(self.rho), "delta": DELTA}


def _sensitivity(statistic: Statistic, bound: float | None) -> tuple[float, float]:
    """(unit, sensitivity in units) of one statistic."""
    kind = statistic.key.kind
    if kind in ("rows", "count"):
        return 1.0, 1.0
    if kind == "sum" and bound is not None:
        if statistic.encoding == "wide":  # shared as fixed point, 2^-16 units
            return 2.0**-FRACTIONAL_BITS, float(math.ceil(bound * 2**FRACTIONAL_BITS) + 1)
        if statistic.encoding == "integer":
            return 1.0, float(math.ceil(bound))
    raise PolicyViolation(f"under dp, {statistic.description} cannot be noised: a sum needs "
                          "its argument's public bounds (low and high in the schema) for "
                          "its sensitivity")


def noise_plan(query: Any, statistics: tuple[Statistic, ...], bounds: Mapping[int, float | None],
               rho: float, mechanism: str, never_null: frozenset[int] = frozenset()
               ) -> NoisePlan:
    """Plan the noise of an aggregate query under ``dp = { rho }``; refuse
    (PolicyViolation) what cannot be noised: aggregates other than COUNT, SUM and
    AVG, sums without bounds, outputs that are expressions over aggregates."""
    for aggregate in query.aggregates:
        if aggregate.function not in _ALLOWED:
            raise PolicyViolation(f"under dp, only COUNT, SUM and AVG are released with noise; "
                                  f"{aggregate.sql} is refused rather than released exactly")
    for node, name in query.select:
        bare = node.this if isinstance(node, exp.Filter) else node
        if not (isinstance(node, exp.Column) or isinstance(bare, exp.AggFunc)):
            raise PolicyViolation(f"under dp, SELECT lists group columns and COUNT, SUM or AVG "
                                  f"aggregates only (each with its interval); {name} is an "
                                  "expression")
    aliases = tuple((s.key, StatisticKey("rows", ())) for s in statistics
                    if s.key.kind == "count" and s.key.arguments[0] in never_null)
    noised = [s for s in statistics if s.key not in dict(aliases)]
    share = rho / len(noised)
    planned = []
    for statistic in noised:
        if statistic.key.kind not in ("rows", "count", "sum"):
            raise PolicyViolation(f"under dp, {statistic.description} cannot be noised")
        index = statistic.key.arguments[0] if statistic.key.arguments else -1
        unit, sensitivity = _sensitivity(statistic, bounds.get(index))
        deviation = sensitivity / math.sqrt(2 * share)
        bits = max(0, math.ceil(math.log2(deviation / MAX_DEVIATION))) if deviation > \
            MAX_DEVIATION else 0
        grid_sensitivity = max(1, math.ceil(sensitivity / 2**bits))
        mu = skellam_mu(share, grid_sensitivity)
        planned.append(NoisedStatistic(statistic.key, unit, bits, grid_sensitivity, mu,
                                       skellam_rho(mu, grid_sensitivity)))
    return NoisePlan(rho, mechanism, tuple(planned), aliases)


def honest_parties(threat: ThreatModel) -> int:
    """The compute parties honest under the protocol's threshold (at least one)."""
    return max(1, threat.compute_parties - threat.corruptions)


def floor_to_grid(values: Any, bits: int) -> Any:
    """An owner's partial statistic floored to a grid of ``2^bits`` units, in exact
    integer arithmetic, before it is shared: one row still moves one owner's floor by
    at most ``ceil(sensitivity / 2^bits)`` (the sensitivity the noise is made for)."""
    return values if not bits else np.array([int(v) >> bits for v in values], dtype=object)


def add_noise(session: Session, plan: NoisePlan, totals: dict[Any, SecretArray],
              owners: int) -> None:
    """Replace each planned statistic in ``totals`` (key -> combined secret value) by
    its noisy value, on shares: add the sum of every party's Skellam draws (one
    ``sum_of_private`` for all the statistics), and put a statistic the owners floored
    to a grid back in its units (plus half a grid step per owner: each floor is low
    by that on average). Aliased statistics take their twin's noisy value.

    Reveals: nothing (every value stays secret)."""
    threat = session.threat_model
    honest = honest_parties(threat)
    prg = Prg.from_urandom()  # this party's private noise
    draws = [skellam_table(s.party_mu(honest)).sample(prg, totals[s.key].shape).reshape(-1)
             for s in plan.statistics]
    session.opened = True
    mine = np.concatenate(draws).view(RING_DTYPE) if draws else np.zeros(0, RING_DTYPE)
    noise = session.backend.sum_of_private(mine)
    start = 0
    backend = session.backend
    for statistic in plan.statistics:
        total = totals[statistic.key]
        size = int(np.prod(total.shape, dtype=np.int64))
        noisy = backend.add(total.shares, noise[:, start:start + size].reshape(
            total.shares.shape))
        start += size
        if statistic.grid_bits:
            step = np.asarray(1 << statistic.grid_bits, dtype=RING_DTYPE)
            half = np.asarray(owners << (statistic.grid_bits - 1), dtype=RING_DTYPE)
            noisy = backend.add_public(backend.mul_public(noisy, step), half)
        totals[statistic.key] = SecretArray(session, noisy, total.fractional_bits)
    for alias, same in plan.aliases:
        totals[alias] = totals[same]


def _statistic_of(node: exp.Expr, plan: Any) -> tuple[str, Any]:
    """The aggregate a bare output names, and the noised statistics it reads."""
    from concilium.query.aggregates import ROWS_KEY, count_of
    from concilium.query.sql import aggregate_key

    noise = plan.noise.by_key()
    key = aggregate_key(node.this if isinstance(node, exp.Filter) else node)
    aggregate = next(a for a in plan.query.aggregates if a.sql == key)
    if aggregate.star:
        return aggregate.function, noise[ROWS_KEY]
    index = plan.arguments[aggregate.arguments[0].sql(dialect="duckdb")]
    if aggregate.function == "count":
        return "count", noise[count_of(index)]
    if aggregate.function == "sum":
        return "sum", noise[StatisticKey("sum", (index,))]
    return "avg", (noise[StatisticKey("sum", (index,))], noise[count_of(index)])


def average_counts(plan: Any, values: Mapping[str, SecretArray], totals: Any
                   ) -> dict[str, SecretArray]:
    """The noisy count of each selected average (released with it, for its interval)."""
    from concilium.query.aggregates import count_of
    from concilium.query.sql import aggregate_key

    extra = {}
    for node, name in plan.query.select:
        if isinstance(node, exp.Column):
            continue
        key = aggregate_key(node.this if isinstance(node, exp.Filter) else node)
        aggregate = next(a for a in plan.query.aggregates if a.sql == key)
        if aggregate.function == "avg":
            index = plan.arguments[aggregate.arguments[0].sql(dialect="duckdb")]
            extra[f"{HIDDEN}{name}"] = totals(count_of(index))
    return extra


def annotate(plan: Any, frame: pd.DataFrame, threat: ThreatModel) -> pd.DataFrame:
    """At a recipient: take the noisy counts of averages out of the delivered frame and
    state, in ``frame.attrs["privacy"]``, the mechanism, the query's cost and each
    noisy column's 95% interval half-widths (one per row)."""
    parties, honest = threat.compute_parties, honest_parties(threat)
    owners = len(plan.entry.owners)
    columns: dict[str, Any] = {}
    for node, name in plan.query.select:
        if isinstance(node, exp.Column) or name not in frame:
            continue
        function, noised = _statistic_of(node, plan)
        if function in ("count", "sum"):
            width = noised.half_width(parties, honest, owners)
            columns[name] = {"statistic": noised.key.alias, "interval95": [width] * len(frame)}
            continue
        total, count = noised
        hidden = f"{HIDDEN}{name}"
        counts = pd.to_numeric(frame[hidden], errors="coerce").to_numpy(dtype=float)
        averages = pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype=float)
        spread = total.variance(parties, honest, owners) + np.nan_to_num(
            averages)**2 * count.variance(parties, honest, owners)
        widths = 1.96 * np.sqrt(spread) / np.maximum(np.nan_to_num(counts, nan=1.0), 1.0)
        columns[name] = {"statistic": f"{total.key.alias} / {count.key.alias}",
                         "interval95": [None if math.isnan(a) else float(w)
                                        for a, w in zip(averages, widths, strict=True)]}
    frame = frame.drop(columns=[c for c in frame.columns if str(c).startswith(HIDDEN)])
    frame.attrs["privacy"] = {**plan.noise.as_dict(), "columns": columns,
                              "statistics": [{"statistic": s.key.alias, "mu": s.mu,
                                              "grid": s.grid, "sensitivity": s.sensitivity,
                                              "rho": s.rho} for s in plan.noise.statistics],
                              "honest_parties": honest, "parties": parties}
    return frame
