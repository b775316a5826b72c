"""The output-policy engine: every rule of an output policy, what it needs, and the
plan kinds that enforce it.

Each rule is an object that says when it applies to a query and which plan
kinds can enforce it (:class:`Rule`). :func:`check_rules` runs when a query is
planned: a rule that applies but that the query's plan kind cannot enforce
refuses the query with :class:`~concilium.errors.PolicyViolation`, never
silently. At run time a plan kind hands :func:`suppression_flags` a
:class:`RuleContext` (its secret per-cell counts, extremes and contributions)
and gets back one secret suppressed-or-not flag per cell and rule; only those
flags are opened. :func:`complementary` adds the secondary suppression by a
public rule, and :func:`rounded_values` rounds released values on shares.

* ``min_cohort``: a released cell needs at least ``k`` rows (every kind);
* ``extremes``: under ``min_cohort``, a MIN or MAX is released only when ``k``
  rows hold it (every kind);
* ``dominance``: a SUM or AVG whose ``n`` largest contributions exceed ``k``% is
  suppressed (row statistics, joins, secret-key groups);
* ``complementary``: no line of the group grid holds exactly one hidden cell
  (every kind; on secret-key groups, at least two groups are hidden or none);
* ``rounding``: released values rounded to multiples of ``r`` on shares (every
  kind).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from concilium.data.secret_array import SecretArray
from concilium.errors import PolicyViolation
from concilium.governance.policy import OutputPolicy
from concilium.ops.truncation import exact_truncate
from concilium.query.aggregates import JOIN, PARTIAL, ROWS, SECRET_GROUPS

__all__ = ["RULES", "Rule", "RuleContext", "check_rules", "complementary", "round_to",
           "rounded_values", "suppression_flags"]

_ALL = frozenset({PARTIAL, ROWS, SECRET_GROUPS, JOIN})


class RuleContext(Protocol):
    """What a plan kind provides so that the rules can be enforced on shares."""

    def cohort(self) -> SecretArray:
        """Rows per cell."""
        ...

    def extreme_rows(self, aggregate: Any) -> SecretArray:
        """Per cell, how many rows hold the value of a MIN or MAX aggregate."""
        ...

    def dominance(self, aggregate: Any, n: int) -> tuple[SecretArray, SecretArray]:
        """Per cell, the sum of the ``n`` largest contributions and the whole sum."""
        ...


class Rule(ABC):
    """One rule of an output policy."""

    name: str
    kinds: frozenset[str]

    @abstractmethod
    def applies(self, policy: OutputPolicy, plan: Any) -> bool:
        """Whether the rule has something to enforce on this plan."""

    def flags(self, policy: OutputPolicy, plan: Any, context: RuleContext
              ) -> list[tuple[str, SecretArray]]:
        """Secret per-cell flags: 1 where the rule suppresses the cell."""
        return []


class MinimumCohort(Rule):
    name, kinds = "min_cohort", _ALL

    def applies(self, policy: OutputPolicy, plan: Any) -> bool:
        return policy.min_cohort > 1

    def flags(self, policy: OutputPolicy, plan: Any, context: RuleContext
              ) -> list[tuple[str, SecretArray]]:
        return [(f"min_cohort: fewer than {policy.min_cohort} rows",
                 context.cohort() < policy.min_cohort)]


class Extremes(Rule):
    name, kinds = "extremes", _ALL

    def applies(self, policy: OutputPolicy, plan: Any) -> bool:
        return policy.min_cohort > 1 and any(a.function in ("min", "max")
                                             for a in plan.query.aggregates)

    def flags(self, policy: OutputPolicy, plan: Any, context: RuleContext
              ) -> list[tuple[str, SecretArray]]:
        return [(f"min_cohort: fewer than {policy.min_cohort} rows hold the value of "
                 f"{a.sql}", context.extreme_rows(a) < policy.min_cohort)
                for a in plan.query.aggregates if a.function in ("min", "max")]


class Dominance(Rule):
    name, kinds = "dominance", frozenset({ROWS, JOIN, SECRET_GROUPS})

    def applies(self, policy: OutputPolicy, plan: Any) -> bool:
        return policy.dominance is not None and any(a.function in ("sum", "avg")
                                                    for a in plan.query.aggregates)

    def flags(self, policy: OutputPolicy, plan: Any, context: RuleContext
              ) -> list[tuple[str, SecretArray]]:
        assert policy.dominance is not None
        n, k = policy.dominance
        found = []
        for aggregate in plan.query.aggregates:
            if aggregate.function in ("sum", "avg"):
                top, whole = context.dominance(aggregate, n)
                found.append((f"dominance ({n}, {k:g}): the {n} largest contributions to "
                              f"{aggregate.sql} exceed {k:g}%", top * 100 > whole * k))
        return found


class Complementary(Rule):
    name, kinds = "complementary", _ALL

    def applies(self, policy: OutputPolicy, plan: Any) -> bool:
        return MinimumCohort().applies(policy, plan) or Dominance().applies(policy, plan)


class Rounding(Rule):
    name, kinds = "rounding", _ALL

    def applies(self, policy: OutputPolicy, plan: Any) -> bool:
        return policy.rounding is not None


class DifferentialPrivacy(Rule):
    """Noise on every statistic (:mod:`concilium.query.privacy`): aggregates over one
    table's partial statistics."""

    name, kinds = "dp", frozenset({PARTIAL})

    def applies(self, policy: OutputPolicy, plan: Any) -> bool:
        return policy.dp_rho is not None


class MinimumDifference(Rule):
    """No release whose rows differ from an earlier one's by fewer than k rows
    (:mod:`concilium.query.differencing`): aggregates over one table."""

    name, kinds = "min_difference", frozenset({PARTIAL})

    def applies(self, policy: OutputPolicy, plan: Any) -> bool:
        return policy.min_difference > 0


RULES: tuple[Rule, ...] = (MinimumCohort(), Extremes(), Dominance(), Complementary(),
                           Rounding(), DifferentialPrivacy(), MinimumDifference())


def check_rules(plan: Any, policy: OutputPolicy) -> None:
    """Refuse, at planning, a query a rule applies to that its plan kind cannot enforce."""
    for rule in RULES:
        if rule.applies(policy, plan) and plan.kind not in rule.kinds:
            raise PolicyViolation(f"the output policy's {rule.name} rule cannot be enforced "
                                  f"on {plan.kind} yet; the query is refused rather than run "
                                  "without it")


def suppression_flags(plan: Any, policy: OutputPolicy, context: RuleContext
                      ) -> list[tuple[str, SecretArray]]:
    """Every applicable rule's secret per-cell suppression flags (rule text, flags)."""
    flags: list[tuple[str, SecretArray]] = []
    for rule in RULES:
        if rule.applies(policy, plan):
            flags += rule.flags(policy, plan, context)
    return flags


def complementary(plan: Any, appearing: Sequence[int], suppressed: set[int]
                  ) -> dict[int, str]:
    """Secondary suppression: along every line of the group grid (cells that share
    all group keys but one, whose total another query could release), a line with
    exactly one suppressed cell gets a second one, so that no suppressed cell equals
    a total minus released cells. The second cell is chosen by a public rule (the
    next appearing cell along the line), never by its secret value, so the choice
    reveals nothing. Repeats until every line is safe."""
    domains = plan.domains
    if not domains or len(appearing) < 2:
        return {}
    sizes = [len(d) for d in domains]
    coordinates = {i: np.unravel_index(i, sizes) for i in appearing}
    hidden = set(suppressed)
    added: dict[int, str] = {}
    changed = True
    while changed:
        changed = False
        for axis in range(len(sizes)):
            lines: dict[tuple[int, ...], list[int]] = {}
            for cell, where in coordinates.items():
                lines.setdefault(tuple(int(c) for k, c in enumerate(where) if k != axis),
                                 []).append(cell)
            for cells in lines.values():
                cells.sort(key=lambda c: int(coordinates[c][axis]))
                inside = [c for c in cells if c in hidden]
                if len(inside) != 1 or len(cells) < 2:
                    continue
                start = cells.index(inside[0])
                partner = cells[(start + 1) % len(cells)]
                hidden.add(partner)
                protected = dict(zip(plan.query.group_by, plan.groups[inside[0]], strict=True))
                added[partner] = f"complementary: protects {protected} from line totals"
                changed = True
    return added


def rounded_values(values: Mapping[str, SecretArray], policy: OutputPolicy
                   ) -> Mapping[str, SecretArray]:
    """Released aggregates rounded to multiples of the policy's rounding, on shares
    (``round(x / r) * r`` with an exact floor), so the exact values are never opened."""
    if policy.rounding is None:
        return values
    return {text: round_to(value, policy.rounding) for text, value in values.items()}


def round_to(value: SecretArray, step: float) -> SecretArray:
    """``floor(value / step + 1/2) * step`` on secret shares. Reveals: nothing."""
    scaled = value.as_fixed() * (1.0 / step) + 0.5
    backend = value.session.backend
    floor = SecretArray(value.session, exact_truncate(backend, scaled.shares,
                                                      scaled.fractional_bits), 0)
    return floor * step
