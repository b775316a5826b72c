"""Computations: propose, list, show (with its plan and pending approvers),
approve, reject, retry, the result (recipients only), and the outbox."""

from __future__ import annotations

import hashlib
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel

from concilium.errors import AccessDenied, ApprovalMissing, BudgetExhausted, ConciliumError
from concilium.evaluation.governed import EvaluationPlan, describe_evaluation, evaluation_request
from concilium.governance import audit_events as events
from concilium.governance.approval import Approval, sign_approval
from concilium.governance.policy import OutputPolicy
from concilium.governance.proposal import build_spec
from concilium.governance.spec import ComputationSpec, canonical_json
from concilium.governance.users import User
from concilium.node import control, jobs, privacy
from concilium.node.context import NodeContext
from concilium.node.planning import participants, validate
from concilium.node.routes.common import Caller, Context, raise_refusal, summary
from concilium.query.explain import explain

__all__ = ["decide", "propose", "record_approval", "reset", "result", "router", "show",
           "validate_here"]

router = APIRouter(tags=["computations"])


class ProposalIn(BaseModel):
    query: str = ""
    datasets: list[str] = []
    recipients: list[str]
    policy: dict[str, Any] = {}  # the analyst's own output policy; owners' rules add to it
    #: a model evaluation instead of a query: model {sha256, shape}, vendor, dataset,
    #: features, label, metrics, task, bins, decimals
    evaluation: dict[str, Any] | None = None


class DecisionIn(BaseModel):
    comment: str = ""


def validate_here(context: NodeContext, spec: ComputationSpec) -> None:
    """The spec checked against this node's rules and its own data (a dry run)."""
    assert context.manifest is not None
    validate(spec, context.manifest, context.name, control.own_entries(context),
             lambda name: control.load_dataset(context, name))
    for name, view in privacy.budget_view(context, spec).items():
        if not view["fits"]:
            raise BudgetExhausted(f"the privacy budget of {name!r} at {context.name!r} does "
                                  f"not cover this computation: it costs rho="
                                  f"{view['cost_rho']:g}, {view['left_before_rho']:.6g} of "
                                  f"{view['budget_rho']:g} is left")


def propose(context: NodeContext, body: ProposalIn, user: User) -> dict[str, Any]:
    context.users.require(user, "propose")
    if context.manifest is None:
        raise ApprovalMissing("this node has no consortium manifest; start it with "
                              "--manifest to propose computations")
    control.publish_catalog(context)  # the owners' current schemas and rules
    if body.evaluation is not None:
        section = evaluation_request(body.evaluation)
        spec = build_spec("", [section["dataset"]], body.recipients, user.name,
                          context.manifest, control.catalog(context),
                          OutputPolicy.from_mapping(body.policy), evaluation=section,
                          also_approving=(section["vendor"],))
    else:
        spec = build_spec(body.query, body.datasets, body.recipients, user.name,
                          context.manifest, control.catalog(context),
                          OutputPolicy.from_mapping(body.policy))
    validate_here(context, spec)  # refused here, with the run's own message, before signing
    record = context.store.add_computation(spec)
    context.audit.record(events.Proposal(spec.computation_id, spec.as_dict(),
                                         origin=context.name))
    outcome = control.forward(context, "/peer/computations", spec.as_dict())
    if outcome.refused:
        node, (kind, message) = sorted(outcome.refused.items())[0]
        context.store.update(record.id, status="refused",
                             error=f"{node} refused it: {kind}: {message}")
        raise_refusal(record.id, node, kind, message)
    return {"id": record.id, "status": context.store.computation(record.id).status,
            "policy": spec.policy, "approvers": spec.approvers, "unreachable": outcome.failed}


def show(context: NodeContext, identifier: str) -> dict[str, Any]:
    record = context.store.computation(identifier)
    approvals = context.store.approvals(identifier)
    pending = plan = None
    if context.manifest is not None:
        pending = control.pending_approvers(record.spec, approvals, context.manifest)
        plan = _explained(context, record.spec)
    return {**summary(record), "spec": record.spec.as_dict(), "error": record.error,
            "policy": record.spec.policy, "approvers": record.spec.approvers,
            "pending": pending, "plan": plan, "approvals": [a.as_dict() for a in approvals],
            "budget": privacy.budget_view(context, record.spec)}


def _explained(context: NodeContext, spec: ComputationSpec) -> str | None:
    from concilium.node.planning import plan_spec

    assert context.manifest is not None
    manifest = context.manifest
    try:
        plan = plan_spec(spec, manifest)
    except ConciliumError as error:
        return f"cannot be planned: {error}"
    if isinstance(plan, EvaluationPlan):
        return describe_evaluation(plan, {i: p.name for i, p in enumerate(manifest.parties)})
    return explain(plan, {i: p.name for i, p in enumerate(manifest.parties)},
                   [manifest.index(r) for r in spec.recipients])


def decide(context: NodeContext, identifier: str, decision: str, body: DecisionIn,
           user: User) -> dict[str, Any]:
    """An approver's signed decision: checked against this node's rules again (they
    may have tightened since), recorded, sent to every node."""
    context.users.require(user, "approve")
    record = context.store.computation(identifier)
    if decision == "approve":
        if context.name not in record.spec.approvers:
            raise AccessDenied(f"node {context.name!r} is not an approver of this "
                               f"computation (its approvers: "
                               f"{', '.join(sorted(record.spec.approvers))})")
        if record.status == "refused":
            raise ApprovalMissing(f"the computation was refused: {record.error}")
        try:
            validate_here(context, record.spec)
        except ConciliumError as error:
            control.refuse(context, record.spec, error)
            raise
    approval = sign_approval(record.spec, decision,  # type: ignore[arg-type]
                             user.name, context.name, context.key, comment=body.comment)
    record_approval(context, approval)
    control.forward(context, "/peer/approvals", approval.as_dict())
    jobs.maybe_start(context, identifier)
    return approval.as_dict()


def record_approval(context: NodeContext, approval: Approval) -> None:
    """Store and log a (verified) decision; a participant's rejection refuses the
    computation, the last approval makes it approved."""
    context.store.add_approval(approval)
    context.audit.record(events.Approval.of(approval))
    identifier = approval.computation_id
    record = context.store.computation(identifier)
    if approval.decision == "reject":
        if context.manifest is not None and context.manifest.index(
                approval.node) not in participants(record.spec, context.manifest):
            return  # a node that takes no part cannot refuse it for the others
        reason = f"{approval.node} rejected it ({approval.approver})" + (
            f": {approval.comment}" if approval.comment else "")
        context.store.update(identifier, status="refused", error=reason)
        return
    if context.manifest is not None and record.status == "proposed" and (
            control.all_approved(record.spec, context.store.approvals(identifier),
                                 context.manifest)):
        context.store.update(identifier, status="approved")


def reset(context: NodeContext, identifier: str) -> bool:
    """A failed (or interrupted) computation back to approved, for another run."""
    record = context.store.computation(identifier)
    if record.status not in ("failed", "running"):
        return False
    with context.lock:
        context.store.update(identifier, status="approved", progress=0.0)
    context.audit.record(events.Retry(identifier))
    return True


def retry(context: NodeContext, identifier: str, user: User) -> dict[str, Any]:
    context.users.require(user, "propose")
    record = context.store.computation(identifier)
    if not reset(context, identifier):
        raise ApprovalMissing(f"only a failed computation can be retried; this one is "
                              f"{record.status}")
    control.forward(context, "/peer/retry", {"id": identifier})
    jobs.maybe_start(context, identifier)
    return {"id": identifier, "status": context.store.computation(identifier).status}


def result(context: NodeContext, identifier: str, user: User) -> dict[str, Any]:
    """The result, to a user of a recipient node (or the analyst); logged as a
    delivery with the result's hash."""
    context.users.require(user, "receive")
    record = context.store.computation(identifier)
    if context.name not in record.spec.recipients and user.name != record.spec.analyst:
        raise AccessDenied(f"node {context.name!r} is not a recipient of this computation")
    if record.status != "completed" or record.result is None:
        raise ApprovalMissing(f"the computation is {record.status}; no result yet")
    digest = hashlib.sha256(canonical_json(record.result)).hexdigest()
    context.audit.record(events.Delivery(identifier, user.name, digest))
    return record.result


@router.post("/computations", status_code=201)
def propose_route(body: ProposalIn, context: Context, user: Caller) -> dict[str, Any]:
    return propose(context, body, user)


@router.get("/computations")
def computations_route(context: Context, user: Caller) -> list[dict[str, Any]]:
    return [summary(r) for r in context.store.computations()]


@router.get("/outbox")
def outbox_route(context: Context, user: Caller) -> list[dict[str, Any]]:
    """Messages to peers not delivered yet (re-sent with backoff)."""
    if context.outbox is None:
        return []
    return [item.summary() for item in context.outbox.pending()]


@router.get("/computations/{identifier}")
def show_route(identifier: str, context: Context, user: Caller) -> dict[str, Any]:
    return show(context, identifier)


@router.post("/computations/{identifier}/approve")
def approve_route(identifier: str, body: DecisionIn, context: Context, user: Caller
                  ) -> dict[str, Any]:
    return decide(context, identifier, "approve", body, user)


@router.post("/computations/{identifier}/reject")
def reject_route(identifier: str, body: DecisionIn, context: Context, user: Caller
                 ) -> dict[str, Any]:
    return decide(context, identifier, "reject", body, user)


@router.post("/computations/{identifier}/retry")
def retry_route(identifier: str, context: Context, user: Caller) -> dict[str, Any]:
    return retry(context, identifier, user)


@router.get("/computations/{identifier}/result")
def result_route(identifier: str, context: Context, user: Caller) -> dict[str, Any]:
    return result(context, identifier, user)
