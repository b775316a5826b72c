"""Statistical disclosure control on secret shares: the output policy's rules
that need the data (see :mod:`concilium.governance.policy`).

* :func:`dominance_rules`: the (n, k) rule for sums, per cell, from the sorted
  rows of the summed argument;
* :func:`complementary`: secondary suppression along the lines of the group
  grid, by a public rule;
* :func:`round_to` and :func:`rounded_values`: rounding released values on
  shares.

Reveals: nothing by itself; the caller opens one suppressed-or-not flag per
cell and rule.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from concilium.data.secret_array import SecretArray
from concilium.governance.policy import OutputPolicy
from concilium.ops.truncation import exact_truncate
from concilium.query import rows as rows_module
from concilium.query.plan import Plan

__all__ = ["complementary", "dominance_rules", "round_to", "rounded_values"]


def dominance_rules(plan: Plan, policy: OutputPolicy, rows: Any, ordered: dict[int, Any],
                    total: Callable[[str], SecretArray]) -> list[tuple[str, SecretArray]]:
    """Per summed argument, a secret 0/1 per group: its ``n`` largest contributions
    exceed ``k`` percent of its sum (the (n, k) dominance rule)."""
    if policy.dominance is None or rows is None:
        return []
    n, k = policy.dominance
    rules = []
    for aggregate in plan.query.aggregates:
        if aggregate.function not in ("sum", "avg"):
            continue
        i = plan.arguments[aggregate.arguments[0].sql(dialect="duckdb")]
        if i not in ordered:
            ordered[i] = rows_module.sorted_values(rows, len(plan.groups), i)
        top = rows_module.largest(ordered[i], total(f"c{i}"), n)
        whole = total(f"s{i}")
        rules.append((f"dominance ({n}, {k:g}): the {n} largest contributions to "
                      f"{aggregate.sql} exceed {k:g}%", top * 100 > whole * k))
    return rules


def complementary(plan: Any, appearing: Sequence[int], suppressed: set[int]
                  ) -> dict[int, str]:
    """Secondary suppression: along every line of the group grid (cells that share
    all group keys but one, whose total another query could release), a line with
    exactly one suppressed cell gets a second one, so that no suppressed cell equals
    a total minus released cells. The second cell is chosen by a public rule (the
    next appearing cell along the line), never by its secret value, so the choice
    reveals nothing. Repeats until every line is safe."""
    domains = getattr(plan, "domains", ())
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
