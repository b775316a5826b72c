"""The audit log: entries, checkpoints, verification (entry by entry and against
the checkpoints the peers keep), the peers' checkpoints this node keeps, and the
incidents read from it (:mod:`concilium.node.incidents`)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from concilium.errors import AuditError
from concilium.governance.audit_verify import verify_log
from concilium.governance.users import User
from concilium.node import control
from concilium.node.context import NodeContext
from concilium.node.incidents import incidents
from concilium.node.routes.common import Caller, Context

__all__ = ["router", "verify"]

router = APIRouter(tags=["audit"])


def verify(context: NodeContext, user: User) -> dict[str, Any]:
    context.users.require(user, "read_audit")
    if context.manifest is None:
        return {"entries": verify_log(context.audit_path), "verified": True}
    outcome = control.verify_own_log(context)
    if not outcome["verified"]:
        raise AuditError(outcome["problem"])
    return outcome


@router.get("/audit/entries")
def audit_entries(context: Context, user: Caller) -> list[dict[str, Any]]:
    context.users.require(user, "read_audit")
    return [{"index": e.index, "time": e.time, "kind": e.kind, "body": e.body, "hash": e.hash}
            for e in context.audit.entries()]


@router.get("/audit/checkpoints")
def audit_checkpoints(context: Context, user: Caller) -> list[dict[str, Any]]:
    context.users.require(user, "read_audit")
    return [{"size": c.size, "root": c.root, "signer": c.signer, "signature": c.signature}
            for c in context.audit.checkpoints()]


@router.get("/audit/verify")
def audit_verify(context: Context, user: Caller) -> dict[str, Any]:
    """The log checked entry by entry, and against the checkpoints its peers keep."""
    return verify(context, user)


@router.get("/audit/witnessed")
def audit_witnessed(context: Context, user: Caller, node: str | None = None
                    ) -> list[dict[str, Any]]:
    """The peers' checkpoints this node co-signed and keeps (for an auditor's
    ``concilium audit verify LOG --against FILE``)."""
    context.users.require(user, "read_audit")
    return [w.as_dict() for w in context.audit.witnessed(node)]


@router.get("/incidents")
def audit_incidents(context: Context, user: Caller) -> list[dict[str, Any]]:
    """Every abort, refusal, audit alert and incident in this node's audit log, newest
    first: its entry's index and time, the kind, the reason, the peers involved and
    the computation."""
    context.users.require(user, "read_audit")
    return incidents(context)
