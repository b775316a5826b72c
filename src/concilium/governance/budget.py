"""Privacy budgets: what repeated differentially private releases may spend on a
dataset, and the ledger each owner node keeps of what they did spend.

A dataset's rules may carry a budget (TOML, beside ``[policy]`` and
``[approval]``)::

    [budget]
    rho = 1.0              # total zero-concentrated DP loss over every release
    unit = "patient_id"    # the privacy unit: a column declared unique (one row
                           # per person), or "row"
    refresh_days = 365     # optional: the budget starts again every 365 days
    queries_per_day = 20   # optional: per analyst on this dataset

The budget is kept per (dataset, privacy unit) at the owner's node, not per
analyst: every analyst's queries draw on the same budget. Losses compose by
adding rho (Bun & Steinke 2016, "Concentrated Differential Privacy:
Simplifications, Extensions, and Lower Bounds", Lemma 2.3); a total rho is
shown as (epsilon, delta)-DP with OpenDP's ``make_zCDP_to_approxDP``.

:class:`Ledger` is the SQLite ledger: a charge is written in one transaction
with the check that it fits (:class:`~concilium.errors.BudgetExhausted`
otherwise, naming what is left), is refunded only when the run aborts before
anything is revealed, and becomes a *release* (with the query's row predicate,
for the differencing check of :mod:`concilium.query.differencing`) when the
result is revealed. Nothing refreshes silently: without ``refresh_days`` the
budget is spent for good; with it, :meth:`Ledger.status` says when the period
started and warns that queries over the same rows across periods add up.
"""

from __future__ import annotations

import datetime
import math
import sqlite3
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from concilium.errors import BudgetExhausted, ConfigurationError, RateLimited

__all__ = ["Charge", "Ledger", "PrivacyBudget", "epsilon_of"]

#: The delta at which a rho is shown as an epsilon.
DELTA = 1e-6
_KNOWN = {"rho", "unit", "refresh_days", "queries_per_day"}
_SCHEMA = """
CREATE TABLE IF NOT EXISTS charges (computation TEXT NOT NULL, dataset TEXT NOT NULL,
    unit TEXT NOT NULL, analyst TEXT NOT NULL, rho REAL NOT NULL, time TEXT NOT NULL,
    state TEXT NOT NULL, predicate TEXT NOT NULL, PRIMARY KEY (computation, dataset));
"""


@dataclass(frozen=True)
class PrivacyBudget:
    """An owner's budget for one dataset (public: it is part of the dataset's rules)."""

    rho: float
    unit: str = "row"
    refresh_days: float | None = None
    queries_per_day: int | None = None

    def __post_init__(self) -> None:
        if not (self.rho > 0 and math.isfinite(self.rho)):
            raise ConfigurationError("[budget] rho must be a positive number")
        if self.refresh_days is not None and not self.refresh_days > 0:
            raise ConfigurationError("[budget] refresh_days must be positive")
        if self.queries_per_day is not None and self.queries_per_day < 1:
            raise ConfigurationError("[budget] queries_per_day must be at least 1")
        if not self.unit:
            raise ConfigurationError('[budget] unit names a column, or is "row"')

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> PrivacyBudget:
        unknown = set(data) - _KNOWN
        if unknown or "rho" not in data:
            raise ConfigurationError(f"[budget] takes rho (required), unit, refresh_days and "
                                     f"queries_per_day; got {sorted(data)}")
        values = {name: data[name] for name in _KNOWN if data.get(name) is not None}
        for name in ("rho", "refresh_days"):
            if name in values and (isinstance(values[name], bool)
                                   or not isinstance(values[name], int | float)):
                raise ConfigurationError(f"[budget] {name} must be a number")
        if "queries_per_day" in values and (isinstance(values["queries_per_day"], bool) or
                                            not isinstance(values["queries_per_day"], int)):
            raise ConfigurationError("[budget] queries_per_day must be a whole number")
        if "unit" in values and not isinstance(values["unit"], str):
            raise ConfigurationError('[budget] unit names a column, or is "row"')
        return cls(float(values["rho"]), values.get("unit", "row"),
                   None if "refresh_days" not in values else float(values["refresh_days"]),
                   values.get("queries_per_day"))

    def check_unit(self, schema: Any) -> None:
        """The privacy unit must be one row per unit: "row", or a column the schema
        declares unique (contributions of a unit spanning several rows are not
        bounded, so such a unit is refused rather than under-counted)."""
        if self.unit == "row":
            return
        if self.unit not in schema:
            raise ConfigurationError(f"[budget] unit {self.unit!r} is not a column of the "
                                     "dataset")
        if not schema.column(self.unit).unique:
            raise ConfigurationError(f"[budget] unit {self.unit!r} must be declared unique "
                                     "(one row per unit): a unit with several rows would "
                                     "need its contributions bounded, which Concilium does "
                                     "not do yet")

    def as_dict(self) -> dict[str, Any]:
        return {"rho": self.rho, "unit": self.unit, "refresh_days": self.refresh_days,
                "queries_per_day": self.queries_per_day}


def epsilon_of(rho: float, delta: float = DELTA) -> float:
    """``rho``-zCDP as (epsilon, delta)-DP, by OpenDP's ``make_zCDP_to_approxDP``."""
    if rho <= 0:
        return 0.0
    import opendp.prelude as dp

    dp.enable_features("contrib")
    # a Gaussian of sensitivity 1 and scale 1/sqrt(2 rho) is exactly rho-zCDP: OpenDP's
    # conversion of its privacy curve is the conversion of rho
    gaussian = dp.m.make_gaussian(dp.atom_domain(T=float, nan=False),
                                  dp.absolute_distance(T=float),
                                  scale=1.0 / math.sqrt(2.0 * rho))
    return float(dp.c.make_zCDP_to_approxDP(gaussian).map(1.0).epsilon(delta))


@dataclass(frozen=True)
class Charge:
    """One entry of the ledger."""

    computation: str
    dataset: str
    unit: str
    analyst: str
    rho: float
    time: str
    state: str  # charged, released, refunded
    predicate: str

    def as_dict(self) -> dict[str, Any]:
        return {"computation": self.computation, "dataset": self.dataset, "unit": self.unit,
                "analyst": self.analyst, "rho": self.rho, "time": self.time,
                "state": self.state}


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class Ledger:
    """An owner node's privacy-budget ledger (SQLite at ``path``)."""

    def __init__(self, path: str | Path) -> None:
        self._connection = sqlite3.connect(str(path), check_same_thread=False,
                                           isolation_level=None)
        self._connection.execute("PRAGMA journal_mode=WAL")
        self._connection.executescript(_SCHEMA)
        self._lock = threading.Lock()

    def close(self) -> None:
        self._connection.close()

    def _rows(self, sql: str, arguments: tuple[Any, ...]) -> list[Charge]:
        return [Charge(*row) for row in self._connection.execute(sql, arguments)]

    def charges(self, dataset: str) -> list[Charge]:
        return self._rows("SELECT * FROM charges WHERE dataset = ? ORDER BY time, computation",
                          (dataset,))

    def _period_start(self, dataset: str, budget: PrivacyBudget, now: datetime.datetime
                      ) -> datetime.datetime | None:
        if budget.refresh_days is None:
            return None
        first = self._connection.execute("SELECT MIN(time) FROM charges WHERE dataset = ?",
                                         (dataset,)).fetchone()[0]
        if first is None:
            return now
        origin = datetime.datetime.fromisoformat(first)
        period = datetime.timedelta(days=budget.refresh_days)
        return origin + period * ((now - origin) // period)

    def spent(self, dataset: str, budget: PrivacyBudget,
              now: datetime.datetime | None = None) -> float:
        """The rho spent on ``dataset`` in the current period (under any unit it had:
        an owner who changes the unit does not erase what was spent)."""
        now = now or _now()
        start = self._period_start(dataset, budget, now)
        return sum(c.rho for c in self.charges(dataset) if c.state != "refunded"
                   and (start is None or datetime.datetime.fromisoformat(c.time) >= start))

    def charge(self, computation: str, dataset: str, budget: PrivacyBudget | None,
               analyst: str, rho: float, predicate: str, *, unit: str = "row",
               now: datetime.datetime | None = None) -> bool:
        """Spend ``rho`` of the dataset's budget (if it has one) for one attempt at a
        computation, atomically with the check that it fits and the analyst's rate
        limit. Every attempt that may draw noise is charged: a computation retried
        after a failure that was not refunded is charged again (its new run draws new
        noise), a refunded one afresh; False only for a computation already released.
        Raises BudgetExhausted or RateLimited, charging nothing."""
        now = now or _now()
        unit = budget.unit if budget is not None else unit
        with self._lock:
            self._connection.execute("BEGIN IMMEDIATE")
            try:
                known = self._connection.execute(
                    "SELECT state FROM charges WHERE computation = ? AND dataset = ?",
                    (computation, dataset)).fetchone()
                if known is not None and known[0] == "released":
                    self._connection.execute("COMMIT")
                    return False
                if budget is not None:
                    self._check(dataset, budget, analyst, rho, now,
                                again=known is not None and known[0] == "charged")
                if known is not None and known[0] == "charged":  # another attempt
                    self._connection.execute(
                        "UPDATE charges SET rho = rho + ? WHERE computation = ? AND "
                        "dataset = ?", (rho, computation, dataset))
                else:
                    self._connection.execute(
                        "INSERT OR REPLACE INTO charges VALUES (?, ?, ?, ?, ?, ?, 'charged', ?)",
                        (computation, dataset, unit, analyst, rho, now.isoformat(),
                         predicate))
                self._connection.execute("COMMIT")
            except BaseException:
                self._connection.execute("ROLLBACK")
                raise
        return True

    def _check(self, dataset: str, budget: PrivacyBudget, analyst: str, rho: float,
               now: datetime.datetime, *, again: bool = False) -> None:
        spent = self.spent(dataset, budget, now)
        if spent + rho > budget.rho * (1 + 1e-9):
            left = max(0.0, budget.rho - spent)
            raise BudgetExhausted(
                f"the privacy budget of {dataset!r} (unit {budget.unit}) would be exceeded: "
                f"this computation costs rho={rho:g}, {left:.6g} of {budget.rho:g} is left "
                f"(epsilon {epsilon_of(left):.3g} at delta {DELTA:g})"
                + ("" if budget.refresh_days is None else
                   f"; the budget starts again every {budget.refresh_days:g} days"))
        if budget.queries_per_day is not None and not again:
            since = (now - datetime.timedelta(days=1)).isoformat()
            recent = self._connection.execute(
                "SELECT COUNT(*) FROM charges WHERE dataset = ? AND analyst = ? AND "
                "state != 'refunded' AND time >= ?", (dataset, analyst, since)).fetchone()[0]
            if recent >= budget.queries_per_day:
                raise RateLimited(f"{analyst!r} has run {recent} queries on {dataset!r} in "
                                  f"the last day; its owner allows {budget.queries_per_day}")

    def _set(self, computation: str, old: str, new: str) -> list[str]:
        with self._lock:
            datasets = [row[0] for row in self._connection.execute(
                "SELECT dataset FROM charges WHERE computation = ? AND state = ?",
                (computation, old))]
            self._connection.execute("UPDATE charges SET state = ? WHERE computation = ? AND "
                                     "state = ?", (new, computation, old))
        return datasets

    def refund(self, computation: str) -> list[str]:
        """Give back a charge whose run aborted before anything was revealed; the
        datasets refunded."""
        return self._set(computation, "charged", "refunded")

    def release(self, computation: str) -> list[str]:
        """Mark a charge as spent for good: the result was revealed (its predicate now
        counts for the differencing check)."""
        return self._set(computation, "charged", "released")

    def releases(self, dataset: str) -> list[tuple[str, str]]:
        """(computation, row predicate) of every released query on the dataset, oldest
        first."""
        return [(row[0], row[1]) for row in self._connection.execute(
            "SELECT computation, predicate FROM charges WHERE dataset = ? AND state = "
            "'released' ORDER BY time, computation", (dataset,))]

    def status(self, dataset: str, budget: PrivacyBudget) -> dict[str, Any]:
        """What ``concilium budget show`` prints: the budget, what is spent and left
        (as rho and as epsilon at delta), the charges, and the refresh warning."""
        now = _now()
        spent = self.spent(dataset, budget, now)
        left = max(0.0, budget.rho - spent)
        start = self._period_start(dataset, budget, now)
        answer: dict[str, Any] = {
            "dataset": dataset, "budget": budget.as_dict(), "spent_rho": spent,
            "left_rho": left, "delta": DELTA, "spent_epsilon": epsilon_of(spent),
            "left_epsilon": epsilon_of(left), "total_epsilon": epsilon_of(budget.rho),
            "charges": [c.as_dict() for c in self.charges(dataset)]}
        if start is not None:
            answer["period_start"] = start.isoformat()
            answer["warning"] = ("the budget starts again every "
                                 f"{budget.refresh_days:g} days; queries over the same rows "
                                 "in different periods add up: over k periods the loss on "
                                 f"those rows is k x {budget.rho:g}")
        return answer
