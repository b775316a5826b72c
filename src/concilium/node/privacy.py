"""A node's privacy bookkeeping around a run: the budget charge before anything is
shared, the refund if the run aborts before anything is opened, the release
record (the query's row predicate, for the differencing check) when it
completes, and the budget an approver sees.

A run is charged on every dataset of this node that it uses and whose rules
ask for noise (``dp``) or the differencing check (``min_difference``):
against the dataset's ``[budget]`` when it has one (refused with
:class:`~concilium.errors.BudgetExhausted` or
:class:`~concilium.errors.RateLimited` otherwise), and recorded either way,
each charge in the audit log (``budget_charge``; ``budget_refund``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from concilium.data.dataset import Dataset
from concilium.data.schema import Schema
from concilium.governance import audit_events as events
from concilium.governance.budget import PrivacyBudget, epsilon_of
from concilium.governance.policy import OutputPolicy
from concilium.governance.spec import ComputationSpec
from concilium.query.catalog import TableEntry
from concilium.query.differencing import predicate_of
from concilium.query.planner import plan_query

__all__ = ["budget_view", "charge_run", "refund_run", "release_run", "with_releases"]


def _governed(context: Any, spec: ComputationSpec) -> list[tuple[str, PrivacyBudget | None]]:
    """This node's datasets in the spec whose rules need the ledger."""
    found = []
    for name in spec.datasets:
        if context.name not in spec.owners(name):
            continue
        rules = context.store.dataset(name).rules
        if rules.budget is not None or rules.policy.dp_rho is not None or \
                rules.policy.min_difference:
            found.append((name, rules.budget))
    return found


def _predicate(spec: ComputationSpec) -> str:
    if spec.evaluation:  # a model evaluation reads every row of its dataset
        return "TRUE"
    schemas = {name: TableEntry(Schema.from_mapping(spec.tables[name]["schema"]), (0,))
               for name in spec.datasets}
    return predicate_of(plan_query(spec.query, schemas,
                                   policy=OutputPolicy.from_mapping(spec.policy)).query)


def charge_run(context: Any, spec: ComputationSpec) -> list[str]:
    """Charge the run's rho to each governed dataset of this node (atomically with the
    check that it fits), log each charge; the datasets charged. Raises
    BudgetExhausted or RateLimited (and logs the refusal), charging nothing more."""
    ledger = context.ledger
    governed = _governed(context, spec)
    if ledger is None or not governed:
        return []
    rho = OutputPolicy.from_mapping(spec.policy).dp_rho or 0.0
    predicate = _predicate(spec)
    charged = []
    try:
        for name, budget in governed:
            unit = budget.unit if budget is not None else "row"
            if ledger.charge(spec.computation_id, name, budget, spec.analyst, rho, predicate,
                             unit=unit):
                spent = ledger.spent(name, budget) if budget is not None else 0.0
                context.audit.record(events.BudgetCharge(
                    spec.computation_id, name, unit, spec.analyst, rho, spent,
                    max(0.0, budget.rho - spent) if budget is not None else -1.0))
                charged.append(name)
    except Exception as refusal:
        context.audit.record(events.Refusal(spec.computation_id, type(refusal).__name__,
                                            str(refusal)))
        refund_run(context, spec, f"refused: {type(refusal).__name__}")
        raise
    return charged


def refund_run(context: Any, spec: ComputationSpec, reason: str) -> None:
    """Give back the run's charges (it aborted before anything was opened)."""
    if context.ledger is None:
        return
    rho = OutputPolicy.from_mapping(spec.policy).dp_rho or 0.0
    for name in context.ledger.refund(spec.computation_id):
        context.audit.record(events.BudgetRefund(spec.computation_id, name, rho, reason))


def release_run(context: Any, spec: ComputationSpec) -> None:
    """The result was revealed: the charges are spent, the predicate counts."""
    if context.ledger is not None:
        context.ledger.release(spec.computation_id)


def with_releases(context: Any, datasets: Mapping[str, Dataset]) -> dict[str, Dataset]:
    """This node's datasets with their earlier releases attached (the differencing
    check reads them)."""
    if context.ledger is None:
        return dict(datasets)
    return {name: dataclasses.replace(dataset, releases=tuple(context.ledger.releases(name)))
            for name, dataset in datasets.items()}


def budget_view(context: Any, spec: ComputationSpec) -> dict[str, Any]:
    """What an approver sees: per governed dataset of this node, the run's cost and
    the budget left before and after it."""
    rho = OutputPolicy.from_mapping(spec.policy).dp_rho
    view: dict[str, Any] = {}
    if rho is None or context.ledger is None:
        return view
    for name, budget in _governed(context, spec):
        if budget is None:
            continue
        spent = context.ledger.spent(name, budget)
        settled = any(c.computation == spec.computation_id and c.state != "refunded"
                      for c in context.ledger.charges(name))
        before = budget.rho - spent + (rho if settled else 0.0)
        view[name] = {"cost_rho": rho, "cost_epsilon": epsilon_of(rho),
                      "left_before_rho": max(0.0, before),
                      "left_after_rho": max(0.0, before - rho),
                      "left_after_epsilon": epsilon_of(max(0.0, before - rho)),
                      "budget_rho": budget.rho, "fits": before - rho >= -1e-12}
    return view
