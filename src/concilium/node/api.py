"""The node's HTTP API (FastAPI): datasets (schemas and rules; never rows), the
consortium catalog, computations (propose, list, show, approve, reject,
retry, result), audit (entries, checkpoints, verify), health; and the signed
peer endpoints of the control plane (``/peer/...``). One router per resource
in :mod:`concilium.node.routes`; this module assembles them.

Every endpoint but ``/health`` needs ``Authorization: Bearer <token>`` and
checks the caller's role (:mod:`concilium.governance.users`). Errors are JSON
``{"error": <type>, "message": <what to do>}`` with the matching status code
(401 no or unknown token, 403 role or policy, 404 unknown thing, 400 bad
input, 422 unsupported SQL, 409 state conflicts such as missing approvals or a
failed audit, 429 too many failed token attempts). The OpenAPI description is
at ``/openapi.json``. The web pages for people (:mod:`concilium.node.web`) are
under ``/ui``.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

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
from concilium.node import web
from concilium.node.context import FailedAttempts, NodeContext
from concilium.node.routes import audit, computations, consortium, datasets, metrics, peers
from concilium.node.routes.common import Context
from concilium.node.store import NotFound

__all__ = ["FailedAttempts", "NodeContext", "create_app"]

_STATUS = ((TooManyAttempts, 429), (AccessDenied, 403), (PolicyViolation, 403), (NotFound, 404),
           (UnsupportedQuery, 422), (ApprovalMissing, 409), (AuditError, 409),
           (InputError, 400), (ConciliumError, 400))


def _page(request: Request) -> bool:
    """A request for one of the web pages (refusals are pages there, not JSON)."""
    return request.url.path == "/ui" or request.url.path.startswith("/ui/")


async def _refused(request: Request, error: Exception) -> Response:
    """A Concilium error as JSON with its status code (as a page under ``/ui``)."""
    status = next(code for kind, code in _STATUS if isinstance(error, kind))
    if isinstance(error, AccessDenied) and "token" in str(error) and not isinstance(
            error, TooManyAttempts):
        status = 401
    if _page(request):
        return web.error_page(request, status, "Refused", str(error))
    return JSONResponse({"error": type(error).__name__, "message": str(error)},
                        status_code=status)


async def _malformed(request: Request, error: Exception) -> Response:
    """A request FastAPI could not parse or validate (a body that is not JSON, a
    field of the wrong type), in the same JSON shape as every other refusal (a page
    under ``/ui``)."""
    if _page(request):
        status = error.status_code if isinstance(error, StarletteHTTPException) else 422
        return web.error_page(request, status, "Not found" if status == 404 else
                              "Could not do that", "there is no such page" if status == 404
                              else "the request was not understood")
    if isinstance(error, RequestValidationError):
        problems = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}"
                             for e in error.errors()[:5])
        return JSONResponse({"error": "InputError", "message": f"invalid request: {problems}"},
                            status_code=422)
    assert isinstance(error, StarletteHTTPException)
    return JSONResponse({"error": "InputError" if error.status_code < 500 else "ConciliumError",
                         "message": str(error.detail)}, status_code=error.status_code)


def health(context: NodeContext) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "status": "ok", "node": context.name,
        "consortium": None if context.manifest is None else context.manifest.hash}
    if context.audit_status is not None:
        answer["audit"] = {k: context.audit_status[k] for k in ("verified", "peers")}
        if not context.audit_status["verified"]:
            answer["audit"]["problem"] = context.audit_status["problem"]
    return answer


def create_app(context: NodeContext) -> FastAPI:
    """The API of one node."""
    app = FastAPI(title=f"Concilium node {context.name}", version="0.1.0")
    app.state.context = context
    app.add_exception_handler(ConciliumError, _refused)
    app.add_exception_handler(RequestValidationError, _malformed)
    app.add_exception_handler(StarletteHTTPException, _malformed)

    @app.get("/health")
    def health_route(context: Context) -> dict[str, Any]:
        return health(context)

    for module in (datasets, computations, audit, peers, consortium, metrics):
        app.include_router(module.router)
    app.include_router(web.router)
    return app
