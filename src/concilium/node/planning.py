"""A computation spec, planned: the catalog tables it names, the plan every
party runs, who takes part, and the checks a node runs before it approves or
contributes.

Every party derives the plan from the spec alone (its tables: owner nodes and
schemas; its effective output policy), so all parties run the same plan
(SPMD). :func:`validate` is what a node runs when a proposal reaches it, when
its approver decides, and again before a run: the spec must pass
:func:`concilium.governance.proposal.check_spec` against this node's own
registrations, the query must plan under the effective policy, and the
node's own data must fit what it would share (value ranges), so that a
mistake surfaces before anyone signs, with the message the run would give.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from concilium.data.dataset import Dataset
from concilium.data.schema import Schema
from concilium.evaluation.governed import EvaluationPlan, check_evaluation_inputs, plan_evaluation
from concilium.governance.consortium import Manifest
from concilium.governance.policy import OutputPolicy
from concilium.governance.proposal import DatasetEntry, check_spec
from concilium.governance.spec import ComputationSpec
from concilium.mpc.protocols import protocol
from concilium.query.capabilities import check_capabilities
from concilium.query.catalog import TableEntry
from concilium.query.outside import check_inputs
from concilium.query.planner import plan_query
from concilium.query.policy_check import check_policy

__all__ = ["participants", "plan_spec", "tables_of", "validate"]


def tables_of(spec: ComputationSpec, manifest: Manifest) -> dict[str, TableEntry]:
    """The spec's datasets as catalog tables: schema, and owners as party indices."""
    return {name: TableEntry(Schema.from_mapping(spec.tables[name]["schema"]),
                             tuple(manifest.index(o) for o in spec.owners(name)))
            for name in spec.datasets}


def plan_spec(spec: ComputationSpec, manifest: Manifest) -> Any:
    """The plan of the spec's query under its effective policy (planning-time rules
    checked: allowed aggregates, columns and recipients, keys, metrics only), and
    refused if the spec's protocol lacks a capability it needs; for a model
    evaluation, its checked :class:`~concilium.evaluation.governed.EvaluationPlan`."""
    if spec.evaluation:
        return plan_evaluation(spec, manifest)
    policy = OutputPolicy.from_mapping(spec.policy)
    plan = plan_query(spec.query, tables_of(spec, manifest), policy=policy)
    check_policy(plan, policy, spec.recipients)
    compute = {i for i, p in enumerate(manifest.parties) if p.is_compute}
    check_capabilities(plan, protocol(spec.protocol), outside=bool(
        set(participants(spec, manifest)) - compute), policy=policy)
    return plan


def participants(spec: ComputationSpec, manifest: Manifest) -> tuple[int, ...]:
    """Party indices of a run: the compute parties, the owners of the data it uses,
    its recipients and an evaluation's vendor (the others take part as outside
    parties unless they compute)."""
    involved = {i for i, p in enumerate(manifest.parties) if p.is_compute}
    involved |= {manifest.index(o) for o in spec.owner_nodes}
    involved |= {manifest.index(r) for r in spec.recipients}
    if spec.evaluation:
        involved.add(manifest.index(str(spec.evaluation["vendor"])))
    return tuple(sorted(involved))


def validate(spec: ComputationSpec, manifest: Manifest, me: str,
             own: Sequence[DatasetEntry], load: Callable[[str], Dataset]) -> Any:
    """Refuse what this node must not take part in; the plan otherwise.

    Raises the typed error the run itself would raise (``PolicyViolation``,
    ``ApprovalMissing``, ``QueryError``, ``FixedPointRangeError``, ...)."""
    check_spec(spec, manifest, me, own)
    plan = plan_spec(spec, manifest)
    mine = own_datasets(spec, me, load)
    if mine and isinstance(plan, EvaluationPlan):
        check_evaluation_inputs(plan, mine)
    elif mine:
        check_inputs(plan, mine, manifest.index(me))
    return plan


def own_datasets(spec: ComputationSpec, me: str, load: Callable[[str], Dataset]
                 ) -> Mapping[str, Dataset]:
    """This node's datasets that the spec uses, loaded and checked."""
    return {name: load(name) for name in spec.datasets if me in spec.owners(name)}
