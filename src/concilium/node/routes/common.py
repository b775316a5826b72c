"""What the routers share: the node context and the authenticated caller as
FastAPI dependencies, the signed-peer check and small response helpers."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Header, Request

from concilium import errors as error_types
from concilium.errors import AccessDenied, ConciliumError
from concilium.governance.users import User
from concilium.node import control
from concilium.node.context import NodeContext
from concilium.node.incidents import record_incident
from concilium.node.store import ComputationRecord

__all__ = ["Caller", "Context", "peer_request", "raise_refusal", "summary"]


def _context(request: Request) -> NodeContext:
    context: NodeContext = request.app.state.context
    return context


Context = Annotated[NodeContext, Depends(_context)]


#: What a ``monitor`` token may read: the metrics (a scraper's token sits in its
#: configuration; it sees no computation, dataset, catalog, outbox or manifest).
MONITOR_PATHS = frozenset({"/metrics"})


def _caller(request: Request, authorization: Annotated[str | None, Header()] = None) -> User:
    """The authenticated user of a request (every endpoint but /health); an address
    with too many failed token attempts is refused whatever it sends, and a monitor
    token anything but :data:`MONITOR_PATHS`."""
    context = _context(request)
    address = request.client.host if request.client is not None else "unknown"
    context.attempts.check(address)
    if not authorization or not authorization.startswith("Bearer "):
        raise AccessDenied("send your API token as 'Authorization: Bearer <token>'")
    try:
        user = context.users.authenticate(authorization.removeprefix("Bearer ").strip())
    except AccessDenied:
        context.attempts.failed(address)
        raise
    if user.role == "monitor" and request.url.path not in MONITOR_PATHS:
        raise AccessDenied(f"{user.name!r} is a monitor: it reads "
                           f"{', '.join(sorted(MONITOR_PATHS))} and /health only")
    return user


Caller = Annotated[User, Depends(_caller)]


async def peer_request(context: NodeContext, request: Request) -> tuple[str, bytes]:
    """The sending node and the body of a signed control-plane request (refused
    unless signed by a member of the manifest within the allowed clock skew; each
    refusal is an ``incident`` entry of the audit log, :mod:`concilium.node.incidents`)."""
    body = await request.body()
    address = request.client.host if request.client is not None else "unknown"

    def incident(kind: str, reason: str, peers: list[str]) -> None:
        record_incident(context, kind, f"{reason} (from {address})", peers)

    node = control.verify_peer(context.manifest, request.method, request.url.path,
                               request.headers.get("X-Concilium-Node"),
                               request.headers.get("X-Concilium-Time"),
                               request.headers.get("X-Concilium-Signature"), body,
                               incident=incident)
    return node, body


def summary(record: ComputationRecord) -> dict[str, Any]:
    return {"id": record.id, "status": record.status, "progress": record.progress,
            "analyst": record.spec.analyst, "query": record.spec.query}


def raise_refusal(identifier: str, node: str, kind: str, message: str) -> None:
    """A peer's refusal, re-raised as the error type it gave."""
    error = getattr(error_types, kind, ConciliumError)
    if not (isinstance(error, type) and issubclass(error, ConciliumError)):
        error = ConciliumError
    raise error(f"{node} refused computation {identifier[:16]}...: {message}")
