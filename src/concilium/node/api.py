"""The node's HTTP API (FastAPI): datasets (schemas and rules; never rows), the
consortium catalog, computations (propose, list, show, approve, reject,
retry, result), audit (entries, checkpoints, verify), health; and the signed
peer endpoints of the control plane (``/peer/...``).

Every endpoint but ``/health`` needs ``Authorization: Bearer <token>`` and
checks the caller's role (:mod:`concilium.governance.users`). Errors are JSON
``{"error": <type>, "message": <what to do>}`` with the matching status code
(401 no or unknown token, 403 role or policy, 404 unknown thing, 400 bad
input, 422 unsupported SQL, 409 state conflicts such as missing approvals or a
failed audit). The OpenAPI description is at ``/openapi.json``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from concilium import errors as error_types
from concilium.data.dataset import Dataset
from concilium.data.schema import Schema
from concilium.errors import (
    AccessDenied,
    ApprovalMissing,
    AuditError,
    ConciliumError,
    InputError,
    PolicyViolation,
    TooManyAttempts,
    UnsupportedQuery,
)
from concilium.governance import audit_events as events
from concilium.governance.approval import Approval, sign_approval, verify_approval
from concilium.governance.audit import verify_log
from concilium.governance.policy import OutputPolicy
from concilium.governance.proposal import DatasetRules, build_spec
from concilium.governance.spec import ComputationSpec, canonical_json
from concilium.governance.users import User
from concilium.node import control
from concilium.node.context import FailedAttempts, NodeContext
from concilium.node.planning import participants, validate
from concilium.node.store import ComputationRecord, NotFound
from concilium.query.explain import explain

__all__ = ["FailedAttempts", "NodeContext", "create_app"]

_LOG = logging.getLogger("concilium.node")

_STATUS = ((TooManyAttempts, 429), (AccessDenied, 403), (PolicyViolation, 403), (NotFound, 404),
           (UnsupportedQuery, 422), (ApprovalMissing, 409), (AuditError, 409),
           (InputError, 400), (ConciliumError, 400))


class ProposalIn(BaseModel):
    query: str
    datasets: list[str]
    recipients: list[str]
    policy: dict[str, Any] = {}  # the analyst's own output policy; owners' rules add to it


class RulesIn(BaseModel):
    rules: dict[str, Any]  # [policy] and [approval] sections, as in the TOML file


class DecisionIn(BaseModel):
    comment: str = ""


def _caller(request: Request, authorization: Annotated[str | None, Header()] = None) -> User:
    """The authenticated user of a request (every endpoint but /health)."""
    context: NodeContext = request.app.state.context
    address = request.client.host if request.client is not None else "unknown"
    context.attempts.check(address)
    if not authorization or not authorization.startswith("Bearer "):
        raise AccessDenied("send your API token as 'Authorization: Bearer <token>'")
    try:
        return context.users.authenticate(authorization.removeprefix("Bearer ").strip())
    except AccessDenied:
        context.attempts.failed(address)
        raise


Caller = Annotated[User, Depends(_caller)]


def _summary(record: ComputationRecord) -> dict[str, Any]:
    return {"id": record.id, "status": record.status, "progress": record.progress,
            "analyst": record.spec.analyst, "query": record.spec.query}


def _raise_refusal(identifier: str, node: str, kind: str, message: str) -> None:
    """A peer's refusal, re-raised as the error type it gave."""
    error = getattr(error_types, kind, ConciliumError)
    if not (isinstance(error, type) and issubclass(error, ConciliumError)):
        error = ConciliumError
    raise error(f"{node} refused computation {identifier[:16]}...: {message}")


def create_app(context: NodeContext) -> FastAPI:
    """The API of one node."""
    app = FastAPI(title=f"Concilium node {context.name}", version="0.1.0")
    app.state.context = context

    @app.exception_handler(ConciliumError)
    async def refused(_: Request, error: ConciliumError) -> JSONResponse:
        status = next(code for kind, code in _STATUS if isinstance(error, kind))
        if isinstance(error, AccessDenied) and "token" in str(error) and not isinstance(
                error, TooManyAttempts):
            status = 401
        return JSONResponse({"error": type(error).__name__, "message": str(error)},
                            status_code=status)

    @app.get("/health")
    def health() -> dict[str, Any]:
        answer: dict[str, Any] = {
            "status": "ok", "node": context.name,
            "consortium": None if context.manifest is None else context.manifest.hash}
        if context.audit_status is not None:
            answer["audit"] = {k: context.audit_status[k] for k in ("verified", "peers")}
            if not context.audit_status["verified"]:
                answer["audit"]["problem"] = context.audit_status["problem"]
        return answer

    def _load(name: str) -> Dataset:
        return control.load_dataset(context, name)

    @app.get("/datasets")
    def datasets(user: Caller) -> list[dict[str, Any]]:
        return [{"name": d.name, "rows": d.rows, "schema": d.schema,
                 "rules": d.rules.as_dict()} for d in context.store.datasets()]

    @app.post("/datasets", status_code=201)
    def register(body: dict[str, Any], user: Caller) -> dict[str, Any]:
        context.users.require(user, "register_dataset")
        try:
            name, path, schema = body["name"], body["path"], body["schema"]
        except KeyError as missing:
            raise InputError(f"the request needs {missing}") from None
        kind = body.get("format", "csv")
        loaders = {"csv": Dataset.from_csv, "parquet": Dataset.from_parquet}
        if kind not in loaders:
            raise InputError(f"format must be one of {', '.join(loaders)}")
        rules = DatasetRules.from_mapping(body.get("rules") or {})
        parsed = Schema.from_mapping(schema)
        dataset = loaders[kind](name, path, parsed)
        context.store.add_dataset(name, parsed.as_mapping(), str(path), dataset.rows, rules,
                                  file_format=kind)
        context.audit.record(events.DatasetRegistered(
            name, dataset.rows, kind, rules.as_dict(),
            hashlib.sha256(canonical_json(parsed.as_mapping())).hexdigest()))
        control.publish_catalog(context)
        return {"name": name, "rows": dataset.rows, "rules": rules.as_dict()}

    @app.put("/datasets/{name}/rules")
    def change_rules(name: str, body: RulesIn, user: Caller) -> dict[str, Any]:
        context.users.require(user, "set_policy")
        before = context.store.dataset(name).rules
        rules = DatasetRules.from_mapping(body.rules)
        context.store.set_rules(name, rules)
        context.audit.record(events.DatasetRulesChanged(name, user.name, before.as_dict(),
                                                        rules.as_dict()))
        control.publish_catalog(context)
        return {"name": name, "rules": rules.as_dict()}

    @app.get("/catalog")
    def consortium_catalog(user: Caller) -> list[dict[str, Any]]:
        return [e.as_dict() for e in control.catalog(context)]

    def _validate(spec: ComputationSpec) -> None:
        assert context.manifest is not None
        validate(spec, context.manifest, context.name, control.own_entries(context), _load)

    @app.post("/computations", status_code=201)
    def propose(body: ProposalIn, user: Caller) -> dict[str, Any]:
        context.users.require(user, "propose")
        if context.manifest is None:
            raise ApprovalMissing("this node has no consortium manifest; start it with "
                                  "--manifest to propose computations")
        control.publish_catalog(context)  # the owners' current schemas and rules
        spec = build_spec(body.query, body.datasets, body.recipients, user.name,
                          context.manifest, control.catalog(context),
                          OutputPolicy.from_mapping(body.policy))
        _validate(spec)  # refused here, with the run's own message, before anyone signs
        record = context.store.add_computation(spec)
        context.audit.record(events.Proposal(spec.computation_id, spec.as_dict(),
                                             origin=context.name))
        outcome = control.forward(context, "/peer/computations", spec.as_dict())
        if outcome.refused:
            node, (kind, message) = sorted(outcome.refused.items())[0]
            context.store.update(record.id, status="refused",
                                 error=f"{node} refused it: {kind}: {message}")
            _raise_refusal(record.id, node, kind, message)
        return {"id": record.id, "status": context.store.computation(record.id).status,
                "policy": spec.policy, "approvers": spec.approvers,
                "unreachable": outcome.failed}

    @app.get("/computations")
    def computations(user: Caller) -> list[dict[str, Any]]:
        return [_summary(r) for r in context.store.computations()]

    @app.get("/outbox")
    def outbox(user: Caller) -> list[dict[str, Any]]:
        """Messages to peers not delivered yet (re-sent with backoff)."""
        if context.outbox is None:
            return []
        return [item.summary() for item in context.outbox.pending()]

    @app.get("/computations/{identifier}")
    def show(identifier: str, user: Caller) -> dict[str, Any]:
        record = context.store.computation(identifier)
        approvals = context.store.approvals(identifier)
        pending = plan = None
        if context.manifest is not None:
            pending = control.pending_approvers(record.spec, approvals, context.manifest)
            plan = _explained(record.spec)
        return {**_summary(record), "spec": record.spec.as_dict(), "error": record.error,
                "policy": record.spec.policy, "approvers": record.spec.approvers,
                "pending": pending, "plan": plan,
                "approvals": [a.as_dict() for a in approvals]}

    def _explained(spec: ComputationSpec) -> str | None:
        from concilium.node.planning import plan_spec

        assert context.manifest is not None
        manifest = context.manifest
        try:
            plan = plan_spec(spec, manifest)
        except ConciliumError as error:
            return f"cannot be planned: {error}"
        return explain(plan, {i: p.name for i, p in enumerate(manifest.parties)},
                       [manifest.index(r) for r in spec.recipients])

    def decide(identifier: str, decision: str, body: DecisionIn, user: User) -> dict[str, Any]:
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
                _validate(record.spec)  # this node's rules may have changed since
            except ConciliumError as error:
                control.refuse(context, record.spec, error)
                raise
        approval = sign_approval(record.spec, decision,  # type: ignore[arg-type]
                                 user.name, context.name, context.key, comment=body.comment)
        _record_approval(approval)
        control.forward(context, "/peer/approvals", approval.as_dict())
        control.maybe_start(context, identifier)
        return approval.as_dict()

    def _record_approval(approval: Approval) -> None:
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

    async def _peer(request: Request) -> tuple[str, bytes]:
        body = await request.body()
        node = control.verify_peer(context.manifest, request.method, request.url.path,
                                   request.headers.get("X-Concilium-Node"),
                                   request.headers.get("X-Concilium-Time"),
                                   request.headers.get("X-Concilium-Signature"), body)
        return node, body

    @app.post("/peer/computations", status_code=201, include_in_schema=False)
    async def peer_computation(request: Request) -> dict[str, Any]:
        node, body = await _peer(request)
        spec = ComputationSpec.from_dict(json.loads(body))
        if context.manifest is None or spec.consortium != context.manifest.hash:
            raise AccessDenied(f"{node!r} proposed a computation for another consortium")
        try:  # delivered twice (an outbox re-sends after a crash): nothing changes
            return {"id": context.store.computation(spec.computation_id).id}
        except NotFound:
            pass
        record = context.store.add_computation(spec)
        context.audit.record(events.Proposal(record.id, spec.as_dict(), origin=node))
        try:
            await run_in_threadpool(_validate, spec)
        except ConciliumError as error:
            await run_in_threadpool(control.refuse, context, spec, error)
            raise
        return {"id": record.id}

    @app.post("/peer/catalog", include_in_schema=False)
    async def peer_catalog(request: Request) -> dict[str, Any]:
        node, body = await _peer(request)
        control.accept_catalog(context, node, json.loads(body))
        return {"node": context.name,
                "datasets": [e.as_dict() for e in control.own_entries(context)]}

    @app.post("/peer/approvals", status_code=201, include_in_schema=False)
    async def peer_approval(request: Request) -> dict[str, Any]:
        node, body = await _peer(request)
        approval = Approval(**json.loads(body))
        assert context.manifest is not None
        verify_approval(approval, context.manifest)
        if approval.node != node:
            raise AccessDenied(f"{node!r} forwarded an approval of {approval.node!r}")
        await run_in_threadpool(_record_approval, approval)
        await run_in_threadpool(control.maybe_start, context, approval.computation_id)
        return {"id": approval.computation_id, "from": node}

    @app.post("/computations/{identifier}/approve")
    def approve(identifier: str, body: DecisionIn, user: Caller) -> dict[str, Any]:
        return decide(identifier, "approve", body, user)

    @app.post("/computations/{identifier}/reject")
    def reject(identifier: str, body: DecisionIn, user: Caller) -> dict[str, Any]:
        return decide(identifier, "reject", body, user)

    def _reset(identifier: str) -> bool:
        record = context.store.computation(identifier)
        if record.status not in ("failed", "running"):
            return False
        with context.lock:
            context.store.update(identifier, status="approved", progress=0.0)
        context.audit.record(events.Retry(identifier))
        return True

    @app.post("/computations/{identifier}/retry")
    def retry(identifier: str, user: Caller) -> dict[str, Any]:
        context.users.require(user, "propose")
        record = context.store.computation(identifier)
        if not _reset(identifier):
            raise ApprovalMissing(f"only a failed computation can be retried; this one is "
                                  f"{record.status}")
        control.forward(context, "/peer/retry", {"id": identifier})
        control.maybe_start(context, identifier)
        return {"id": identifier, "status": context.store.computation(identifier).status}

    @app.post("/peer/retry", include_in_schema=False)
    async def peer_retry(request: Request) -> dict[str, Any]:
        node, body = await _peer(request)
        identifier = str(json.loads(body)["id"])
        _reset(identifier)
        control.maybe_start(context, identifier)
        return {"id": identifier, "from": node}

    @app.get("/computations/{identifier}/result")
    def result(identifier: str, user: Caller) -> dict[str, Any]:
        context.users.require(user, "receive")
        record = context.store.computation(identifier)
        if context.name not in record.spec.recipients and user.name != record.spec.analyst:
            raise AccessDenied(f"node {context.name!r} is not a recipient of this computation")
        if record.status != "completed" or record.result is None:
            raise ApprovalMissing(f"the computation is {record.status}; no result yet")
        digest = hashlib.sha256(canonical_json(record.result)).hexdigest()
        context.audit.record(events.Delivery(identifier, user.name, digest))
        return record.result

    @app.get("/audit/entries")
    def audit_entries(user: Caller) -> list[dict[str, Any]]:
        context.users.require(user, "read_audit")
        return [{"index": e.index, "time": e.time, "kind": e.kind, "body": e.body,
                 "hash": e.hash} for e in context.audit.entries()]

    @app.get("/audit/checkpoints")
    def audit_checkpoints(user: Caller) -> list[dict[str, Any]]:
        context.users.require(user, "read_audit")
        return [{"size": c.size, "root": c.root, "signer": c.signer, "signature": c.signature}
                for c in context.audit.checkpoints()]

    @app.get("/audit/verify")
    def audit_verify(user: Caller) -> dict[str, Any]:
        """The log checked entry by entry, and against the checkpoints its peers keep."""
        context.users.require(user, "read_audit")
        if context.manifest is None:
            return {"entries": verify_log(context.audit_path), "verified": True}
        outcome = control.verify_own_log(context)
        if not outcome["verified"]:
            raise AuditError(outcome["problem"])
        return outcome

    @app.get("/audit/witnessed")
    def audit_witnessed(user: Caller, node: str | None = None) -> list[dict[str, Any]]:
        """The peers' checkpoints this node co-signed and keeps (for an auditor's
        ``concilium audit verify LOG --against FILE``)."""
        context.users.require(user, "read_audit")
        return [w.as_dict() for w in context.audit.witnessed(node)]

    @app.post("/peer/witness", include_in_schema=False)
    async def peer_witness(request: Request) -> dict[str, Any]:
        node, body = await _peer(request)
        data = json.loads(body)
        try:
            held = context.audit.witness(node, int(data["size"]), str(data["root"]))
        except AuditError as alarm:
            context.audit.record(events.AuditAlert(str(alarm), [node]))
            raise
        except (KeyError, TypeError, ValueError):
            raise InputError("a checkpoint is {size, root}") from None
        return {"signer": held.signer, "signature": held.signature}

    @app.post("/peer/witnessed", include_in_schema=False)
    async def peer_witnessed(request: Request) -> list[dict[str, Any]]:
        node, _ = await _peer(request)
        return [w.as_dict() for w in context.audit.witnessed(node)]

    return app
