"""The control plane's signed endpoints (``/peer/...``, left out of the OpenAPI
document): proposals, catalogs, approvals, retries and audit witnesses from the
other nodes of the manifest. Each request is signed by the sending node
(:func:`concilium.node.routes.common.peer_request`); delivering one twice
changes nothing."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool

from concilium.errors import AccessDenied, AuditError, ConciliumError, InputError
from concilium.governance import audit_events as events
from concilium.governance.approval import Approval, verify_approval
from concilium.governance.spec import ComputationSpec
from concilium.node import control, jobs
from concilium.node.planning import participants
from concilium.node.routes.common import Context, peer_request
from concilium.node.routes.computations import record_approval, reset, validate_here
from concilium.node.store import NotFound

__all__ = ["router"]

router = APIRouter(include_in_schema=False)


@router.post("/peer/computations", status_code=201)
async def peer_computation(request: Request, context: Context) -> dict[str, Any]:
    node, body = await peer_request(context, request)
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
        await run_in_threadpool(validate_here, context, spec)
    except ConciliumError as error:
        await run_in_threadpool(control.refuse, context, spec, error)
        raise
    return {"id": record.id}


@router.post("/peer/catalog")
async def peer_catalog(request: Request, context: Context) -> dict[str, Any]:
    node, body = await peer_request(context, request)
    control.accept_catalog(context, node, json.loads(body))
    return {"node": context.name, "datasets": [e.as_dict() for e in control.own_entries(context)]}


@router.post("/peer/approvals", status_code=201)
async def peer_approval(request: Request, context: Context) -> dict[str, Any]:
    node, body = await peer_request(context, request)
    approval = Approval(**json.loads(body))
    assert context.manifest is not None
    verify_approval(approval, context.manifest)
    if approval.node != node:
        raise AccessDenied(f"{node!r} forwarded an approval of {approval.node!r}")
    await run_in_threadpool(record_approval, context, approval)
    await run_in_threadpool(jobs.maybe_start, context, approval.computation_id)
    return {"id": approval.computation_id, "from": node}


@router.post("/peer/retry")
async def peer_retry(request: Request, context: Context) -> dict[str, Any]:
    node, body = await peer_request(context, request)
    identifier = str(json.loads(body)["id"])
    reset(context, identifier)
    jobs.maybe_start(context, identifier)
    return {"id": identifier, "from": node}


@router.post("/peer/witness")
async def peer_witness(request: Request, context: Context) -> dict[str, Any]:
    node, body = await peer_request(context, request)
    data = json.loads(body)
    try:
        held = context.audit.witness(node, int(data["size"]), str(data["root"]))
    except AuditError as alarm:
        context.audit.record(events.AuditAlert(str(alarm), [node]))
        raise
    except (KeyError, TypeError, ValueError):
        raise InputError("a checkpoint is {size, root}") from None
    return {"signer": held.signer, "signature": held.signature}


@router.post("/peer/witnessed")
async def peer_witnessed(request: Request, context: Context) -> list[dict[str, Any]]:
    node, _ = await peer_request(context, request)
    return [w.as_dict() for w in context.audit.witnessed(node)]


@router.post("/peer/status")
async def peer_status(request: Request, context: Context) -> dict[str, Any]:
    """A computation's status here, for a participant that waits for its peers."""
    node, body = await peer_request(context, request)
    try:
        identifier = str(json.loads(body)["id"])
    except (KeyError, TypeError, ValueError):
        raise InputError("a status request is {id}") from None
    record = context.store.computation(identifier)
    if context.manifest is None or context.manifest.index(node) not in participants(
            record.spec, context.manifest):
        raise AccessDenied(f"{node!r} takes no part in this computation")
    return {"id": identifier, "status": record.status, "error": record.error}
