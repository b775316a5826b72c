"""The last steps every plan kind with public groups shares: ``HAVING``, the groups
that appear, the output policy's rules (:mod:`concilium.query.rules`), the
public ordering, and the reveal to the recipients (:mod:`concilium.query.delivery`).

Reveals: which groups appear (non-empty, passing HAVING) and, under the
policy's suppression rules, which of them are released (one flag per cell and
rule; the counts stay secret); the selected values of the released groups to
the recipients.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sqlglot import exp

from concilium.data.secret_array import SecretArray
from concilium.data.session import Session
from concilium.governance.policy import OutputPolicy
from concilium.query.delivery import OutputColumn, deliver, result_frame
from concilium.query.expressions import both, evaluate
from concilium.query.rules import RuleContext, complementary, rounded_values, suppression_flags
from concilium.query.sql import aggregate_key

__all__ = ["Format", "Outcome", "finish"]


@dataclass(frozen=True)
class Format:
    """How an aggregate's opened value is presented: a category domain for codes, or
    the decimals it is exact to."""

    categories: tuple[str, ...] | None = None
    decimals: int | None = None


@dataclass
class Outcome:
    """A plan kind's secret results, per group of ``plan.groups``."""

    values: Mapping[str, SecretArray]
    defined: Mapping[str, Any]  # True, or a secret 0/1 per group
    columns: Mapping[str, np.ndarray]  # public group-key values
    include: Any  # True, or a secret 0/1 per group: the group appears
    formats: Mapping[str, Format]
    extra: Mapping[str, SecretArray] = field(default_factory=dict)  # released beside


def finish(session: Session, plan: Any, outcome: Outcome, context: RuleContext,
           to: Sequence[int] | None, policy: OutputPolicy) -> pd.DataFrame | None:
    """HAVING, the groups that appear, the policy's rules, ordering, and the reveal."""
    values, defined, columns = outcome.values, outcome.defined, outcome.columns
    include = outcome.include
    if plan.query.having is not None:
        passed, passed_ok = evaluate(plan.query.having, values, defined, columns, session)
        include = both(include, both(passed, passed_ok))
    if include is True:
        chosen = np.arange(len(plan.groups))
    else:
        chosen = np.flatnonzero(np.atleast_1d(include.reveal()))
    chosen = _public_order(plan, chosen, columns)
    suppressed: list[dict[str, Any]] = []
    checks = suppression_flags(plan, policy, context)
    if checks and len(chosen):
        # only each cell's suppressed-or-not flag per rule is opened, never a count
        flags = SecretArray.stack([flag[chosen] for _, flag in checks]).reveal()
        reasons: dict[int, str] = {}
        for (rule, _), hits in zip(checks, np.atleast_2d(np.asarray(flags)), strict=True):
            for index in chosen[np.asarray(hits, dtype=bool)]:
                reasons.setdefault(int(index), rule)
        reasons.update(complementary(plan, [int(i) for i in chosen], set(reasons)))
        for index, rule in sorted(reasons.items()):
            suppressed.append({"group": dict(zip(plan.query.group_by, plan.groups[index],
                                                 strict=True)), "rule": rule})
        chosen = np.array([i for i in chosen if int(i) not in reasons], dtype=np.intp)
    rounded = rounded_values(values, policy)
    return _reveal_rows(plan, chosen, rounded, defined, columns, outcome.formats, session, to,
                        suppressed, outcome.extra)


def _public_order(plan: Any, chosen: np.ndarray, columns: Mapping[str, np.ndarray]
                  ) -> np.ndarray:
    """Order and cut by group columns (public) before anything else is revealed."""
    group_names = {g.lower() for g in plan.query.group_by}
    public = [(e, d) for e, d in plan.query.order_by
              if isinstance(e, exp.Column) and e.name.lower() in group_names]
    if public and len(public) == len(plan.query.order_by):
        frame = pd.DataFrame({f"k{k}": columns[e.name.lower()][chosen]
                              for k, (e, _) in enumerate(public)})
        frame = frame.sort_values([f"k{k}" for k in range(len(public))],
                                  ascending=[not d for _, d in public], kind="stable",
                                  na_position="last")
        chosen = chosen[frame.index.to_numpy()]
    if plan.query.limit is not None:
        chosen = chosen[: plan.query.limit]
    return chosen


def _format_of(node: exp.Expr, formats: Mapping[str, Format]) -> Format:
    inner = node.this if isinstance(node, exp.WithinGroup | exp.Filter) else node
    if isinstance(node, exp.AggFunc | exp.WithinGroup | exp.Filter):
        return formats.get(aggregate_key(inner), Format())
    return Format()


def _reveal_rows(plan: Any, chosen: np.ndarray, values: Mapping[str, SecretArray],
                 defined: Mapping[str, Any], columns: Mapping[str, np.ndarray],
                 formats: Mapping[str, Format], session: Session,
                 to: Sequence[int] | None, suppressed: Sequence[dict[str, Any]],
                 extra: Mapping[str, SecretArray]) -> pd.DataFrame | None:
    outputs = []
    for node, name in plan.query.select:
        value, ok = evaluate(node, values, defined, columns, session)
        form = _format_of(node, formats)
        if isinstance(value, SecretArray):
            outputs.append(OutputColumn(name, value[chosen], ok[chosen] if isinstance(
                ok, SecretArray) else None, form.categories, form.decimals))
        else:
            public = np.broadcast_to(np.asarray(value, dtype=object), (len(plan.groups),))[
                chosen] if np.ndim(value) else np.full(len(chosen), value, dtype=object)
            outputs.append(OutputColumn(name, public))
    outputs += [OutputColumn(name, value[chosen]) for name, value in extra.items()]
    public_order = [g.lower() for g in plan.query.group_by]
    delivery = deliver(session, outputs, len(chosen), to, suppressed, public_order)
    return None if delivery is None else result_frame(plan, delivery, session.threat_model)
