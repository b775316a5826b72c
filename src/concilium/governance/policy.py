"""Output policies: what may be released, declared per dataset (TOML), applied
inside MPC before anything is revealed.

    [policy]
    min_cohort = 10              # a released cell needs at least 10 rows
    rounding = 5                 # released values are rounded to multiples of 5
    allowed_aggregates = ["count", "sum", "avg"]
    allowed_columns = ["condition", "readmitted", "age"]
    allowed_recipients = ["hospital-a", "ministry"]
    metrics_only = true          # no per-record outputs (no GROUP BY a secret key)
    dominance = [2, 85]          # (n, k): a sum whose 2 largest contributions exceed
                                 # 85% of it is suppressed
    dp = { rho = 0.05, mechanism = "skellam" }  # noise made inside MPC; the query's
                                 # privacy loss is at most rho (zero-concentrated DP)
    min_difference = 5           # refused if its rows differ from an earlier released
                                 # query's rows by fewer than 5

A query over several datasets obeys the strictest combination
(:meth:`OutputPolicy.combine`) of the proposal's policy and every used
dataset's own policy, which its owner node holds; an owner refuses to
contribute to a computation whose policy is weaker than its own
(:meth:`OutputPolicy.shortfalls`). The checks on aggregates, columns and
recipients run when the query is planned (:class:`~concilium.errors.PolicyViolation`);
the cohort size and the rounding are enforced on secret shares by
:mod:`concilium.query.execute`: a cell's count stays secret and only its
released/suppressed flag is opened.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from concilium.errors import ConfigurationError

__all__ = ["OutputPolicy", "load_policy"]

_KNOWN = {"min_cohort", "rounding", "allowed_aggregates", "allowed_columns",
          "allowed_recipients", "metrics_only", "dominance", "dp", "min_difference"}

#: The distributed noise mechanisms (see :mod:`concilium.query.privacy`).
MECHANISMS = ("skellam",)


def _dp(value: Any) -> tuple[float | None, str]:
    if value is None:
        return None, "skellam"
    if not isinstance(value, Mapping) or set(value) - {"rho", "mechanism"} or "rho" not in value:
        raise ConfigurationError('policy setting dp is { rho = R, mechanism = "skellam" }')
    rho = value["rho"]
    if isinstance(rho, bool) or not isinstance(rho, int | float):
        raise ConfigurationError("dp rho must be a number")
    return float(rho), str(value.get("mechanism", "skellam"))


def _names(value: Any, setting: str) -> frozenset[str] | None:
    if value is None:
        return None
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise ConfigurationError(f"policy setting {setting} must be a list of names")
    return frozenset(v.lower() for v in value)


def _both(a: frozenset[str] | None, b: frozenset[str] | None) -> frozenset[str] | None:
    if a is None:
        return b
    return a if b is None else a & b


@dataclass(frozen=True)
class OutputPolicy:
    """A dataset's output policy (public, part of the computation spec)."""

    min_cohort: int = 0
    rounding: float | None = None
    allowed_aggregates: frozenset[str] | None = None
    allowed_columns: frozenset[str] | None = None
    allowed_recipients: frozenset[str] | None = None
    metrics_only: bool = False
    dominance: tuple[int, float] | None = None  # (n, k percent)
    dp_rho: float | None = None  # each query's zCDP privacy loss, noise made in MPC
    dp_mechanism: str = "skellam"
    min_difference: int = 0  # rows by which a query must differ from earlier releases

    def __post_init__(self) -> None:
        if self.dp_rho is not None and not (0 < self.dp_rho < 100 and math.isfinite(
                self.dp_rho)):
            raise ConfigurationError("dp rho must be a positive number below 100 (zCDP)")
        if self.dp_mechanism not in MECHANISMS:
            raise ConfigurationError(f"dp mechanism {self.dp_mechanism!r} is not one of "
                                     f"{list(MECHANISMS)} (the binomial mechanism has no "
                                     "zCDP bound Concilium can state; Skellam has)")
        if not isinstance(self.min_difference, int) or self.min_difference < 0:
            raise ConfigurationError("min_difference must be a whole number >= 0")
        if self.dominance is not None and not (
                self.dominance[0] >= 1 and 0 < self.dominance[1] <= 100):
            raise ConfigurationError("dominance is [n, k]: n >= 1 contributors, 0 < k <= 100 "
                                     "percent")
        if self.min_cohort < 0:
            raise ConfigurationError("min_cohort cannot be negative")
        if self.rounding is not None and not (self.rounding > 0 and math.isfinite(
                self.rounding)):
            raise ConfigurationError("rounding must be a positive number")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> OutputPolicy:
        section = data.get("policy", data)
        unknown = set(section) - _KNOWN
        if unknown:
            raise ConfigurationError(f"unknown policy settings {sorted(unknown)}; known: "
                                     f"{sorted(_KNOWN)}")
        rounding = section.get("rounding")
        dominance = section.get("dominance")
        if dominance is not None and (not isinstance(dominance, list | tuple)
                                      or len(dominance) != 2):
            raise ConfigurationError("dominance is [n, k]")
        rho, mechanism = _dp(section.get("dp"))
        return cls(dominance=None if dominance is None else (int(dominance[0]),
                                                             float(dominance[1])),
                   dp_rho=rho, dp_mechanism=mechanism,
                   min_difference=_whole(section.get("min_difference", 0), "min_difference"),
                   min_cohort=int(section.get("min_cohort", 0)),
                   rounding=None if rounding is None else float(rounding),
                   allowed_aggregates=_names(section.get("allowed_aggregates"),
                                             "allowed_aggregates"),
                   allowed_columns=_names(section.get("allowed_columns"), "allowed_columns"),
                   allowed_recipients=_names(section.get("allowed_recipients"),
                                             "allowed_recipients"),
                   metrics_only=bool(section.get("metrics_only", False)))

    def combine(self, other: OutputPolicy) -> OutputPolicy:
        """The strictest policy that satisfies both."""
        rounding = [r for r in (self.rounding, other.rounding) if r is not None]
        rules = [d for d in (self.dominance, other.dominance) if d is not None]
        rhos = [r for r in (self.dp_rho, other.dp_rho) if r is not None]
        return OutputPolicy(
            dp_rho=min(rhos) if rhos else None,
            dp_mechanism=self.dp_mechanism if self.dp_rho is not None else other.dp_mechanism,
            min_difference=max(self.min_difference, other.min_difference),
            dominance=(max(d[0] for d in rules), min(d[1] for d in rules)) if rules else None,
            min_cohort=max(self.min_cohort, other.min_cohort),
            rounding=max(rounding) if rounding else None,
            allowed_aggregates=_both(self.allowed_aggregates, other.allowed_aggregates),
            allowed_columns=_both(self.allowed_columns, other.allowed_columns),
            allowed_recipients=_both(self.allowed_recipients, other.allowed_recipients),
            metrics_only=self.metrics_only or other.metrics_only)

    def at_least_as_strict_as(self, other: OutputPolicy) -> bool:
        """Whether this policy releases nothing that ``other`` would suppress."""
        return self.combine(other) == self

    def shortfalls(self, required: OutputPolicy) -> list[str]:
        """The settings in which this policy is weaker than ``required`` (empty when it
        is at least as strict), each as ``name: this vs required``."""
        strictest = self.combine(required).as_dict()
        mine, theirs = self.as_dict(), required.as_dict()
        return [f"{name} is {mine[name]!r} where the dataset's policy requires "
                f"{theirs[name]!r}" for name in sorted(mine) if mine[name] != strictest[name]]

    def as_dict(self) -> dict[str, Any]:
        """For the computation spec (canonical JSON)."""
        def listed(names: frozenset[str] | None) -> list[str] | None:
            return None if names is None else sorted(names)

        return {"min_cohort": self.min_cohort, "rounding": self.rounding,
                "allowed_aggregates": listed(self.allowed_aggregates),
                "allowed_columns": listed(self.allowed_columns),
                "allowed_recipients": listed(self.allowed_recipients),
                "metrics_only": self.metrics_only,
                "dominance": None if self.dominance is None else list(self.dominance),
                "dp": None if self.dp_rho is None else {"rho": self.dp_rho,
                                                        "mechanism": self.dp_mechanism},
                "min_difference": self.min_difference}


def _whole(value: Any, setting: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigurationError(f"policy setting {setting} must be a whole number")
    return value


def load_policy(path: str | Path) -> OutputPolicy:
    try:
        return OutputPolicy.from_mapping(tomllib.loads(Path(path).read_text()))
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise ConfigurationError(f"cannot read the policy {path}: {error}") from None
