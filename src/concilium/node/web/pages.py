"""The node's web pages for approvers, analysts and recipients, under ``/ui``:
server-rendered (Jinja2, autoescaped), no JavaScript.

- ``GET /ui/sign-in`` and ``POST /ui/sign-in``: an API token becomes a session
  cookie (:mod:`concilium.node.web.sessions`); ``POST /ui/sign-out``.
- ``GET /ui/``: the inbox, waiting decisions first.
- ``GET /ui/computations/{id}``: what the approver signs (the job, the plan, the
  datasets and owners, the recipients, the protocol and its threat model, the
  policy's rules and what they do, the privacy cost and budgets, the approvals
  with their verified signatures, how it differs from earlier approved
  computations), live status while it runs (the page refreshes itself), and for
  recipients the result: a table with suppressed cells and their reasons, noise
  intervals, and a chart.
- ``POST /ui/computations/{id}/approve`` and ``/reject``: the decision with a
  comment, signed by the node and written to the audit log.
- ``GET /ui/computations/{id}/result.csv``: the result as CSV.
- ``GET /ui/audit``: the audit log, filterable, with its verification and its
  co-signed checkpoints.

Every response carries a strict Content-Security-Policy and no-store caching.
Every form has a CSRF token. A page that needs a session and has none redirects
to the sign-in page. A refusal is a page saying why, with the right status
code, never a stack trace.
"""

from __future__ import annotations

import csv
import io
import re
import urllib.parse
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup
from starlette.concurrency import run_in_threadpool

from concilium.errors import AccessDenied, AuditError, ConciliumError
from concilium.governance.users import User
from concilium.node.context import NodeContext
from concilium.node.routes import audit as audit_routes
from concilium.node.routes import computations as api
from concilium.node.web import charts, views
from concilium.node.web.sessions import (
    COOKIE,
    PRE_COOKIE,
    SessionStore,
    WebSession,
    clear_cookie,
    pre_session_token,
    set_cookie,
)

__all__ = ["CONTENT_SECURITY_POLICY", "error_page", "router", "security_headers"]

#: The pages load their one style sheet from the node and nothing else.
CONTENT_SECURITY_POLICY = ("default-src 'none'; style-src 'self'; img-src 'self' data:; "
                           "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
_HERE = Path(__file__).resolve().parent
_TEMPLATES = Environment(loader=FileSystemLoader(_HERE / "templates"),
                         autoescape=select_autoescape(["html"]), trim_blocks=True,
                         lstrip_blocks=True)
_HEX = re.compile(r"^[0-9a-f]{1,64}$")

router = APIRouter(prefix="/ui", include_in_schema=False)


R = TypeVar("R", bound=Response)


def security_headers(response: R) -> R:
    """The headers every page and refusal of ``/ui`` carries."""
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Cache-Control"] = "no-store"
    return response


def _context(request: Request) -> NodeContext:
    context: NodeContext = request.app.state.context
    return context


def _sessions(request: Request) -> SessionStore:
    store: SessionStore | None = getattr(request.app.state, "web_sessions", None)
    if store is None:
        store = request.app.state.web_sessions = SessionStore()
    return store


def _render(template: str, status: int = 200, **values: Any) -> HTMLResponse:
    page = _TEMPLATES.get_template(template).render(**values)
    return security_headers(HTMLResponse(page, status_code=status))


def error_page(request: Request, status: int, title: str, message: str) -> HTMLResponse:
    """A refusal or a missing page, as a page (the API's JSON errors stay JSON)."""
    session = _sessions(request).find(request.cookies.get(COOKIE))
    return _render("error.html", status, title=title, message=message,
                   node=_context(request).name, session=session, user=None)


def _signed_in(request: Request) -> tuple[WebSession, User] | None:
    context = _context(request)
    session = _sessions(request).find(request.cookies.get(COOKIE))
    if session is None:
        return None
    try:
        return session, context.users.active(session.user)
    except AccessDenied:
        _sessions(request).end_user(session.user)
        return None


def _to_sign_in(request: Request) -> RedirectResponse:
    target = urllib.parse.quote(request.url.path, safe="/")
    return security_headers(RedirectResponse(f"/ui/sign-in?next={target}", status_code=303))


async def _form(request: Request) -> dict[str, str]:
    """An urlencoded form's fields (one value each)."""
    body = (await request.body()).decode("utf-8", errors="replace")
    return {key: values[-1] for key, values in urllib.parse.parse_qs(
        body, keep_blank_values=True).items()}


Handler = Callable[[Request, WebSession, User], Awaitable[Response]]


async def _page(request: Request, handler: Handler, *, post: bool = False) -> Response:
    """Run a page's handler for a signed-in user: sign-in redirect without a session,
    the CSRF check on a form, and a refusal page for any Concilium error."""
    signed_in = _signed_in(request)
    if signed_in is None:
        return _to_sign_in(request)
    session, user = signed_in
    try:
        if post:
            session.check_csrf((await _form(request)).get("csrf"))
        return await handler(request, session, user)
    except ConciliumError as error:
        status = 403 if isinstance(error, AccessDenied) else 404 if type(
            error).__name__ == "NotFound" else 400
        return _render("error.html", status, title="Refused" if status == 403 else
                       "Not found" if status == 404 else "Could not do that",
                       message=str(error), node=_context(request).name, session=session,
                       user=user)


def _common(request: Request, session: WebSession, user: User) -> dict[str, Any]:
    context = _context(request)
    return {"node": context.name, "session": session, "user": user,
            "can_audit": user.role in ("admin", "approver")}


# -- sign-in ------------------------------------------------------------------------------
@router.get("/sign-in")
async def sign_in_page(request: Request, next: str = "/ui/") -> Response:
    token = pre_session_token()
    response = _render("sign_in.html", node=_context(request).name, csrf=token,
                       next=_safe_next(next), session=None, user=None, problem=None)
    set_cookie(response, PRE_COOKIE, token, 600)
    return response


def _safe_next(target: str) -> str:
    """Only this node's own pages (no open redirect)."""
    return target if target.startswith("/ui/") and "//" not in target else "/ui/"


@router.post("/sign-in")
async def sign_in(request: Request) -> Response:
    context = _context(request)
    form = await _form(request)
    expected = request.cookies.get(PRE_COOKIE)
    if not expected or form.get("csrf") != expected:
        return error_page(request, 403, "Refused", "the sign-in form was not sent from this "
                          "node's own page; open the sign-in page again")
    address = request.client.host if request.client is not None else "unknown"
    try:
        context.attempts.check(address)
        user = context.users.authenticate(form.get("token", "").strip())
    except AccessDenied as error:
        if "too many" not in str(error):
            context.attempts.failed(address)
        token = pre_session_token()
        page = _render("sign_in.html", 401, node=context.name, csrf=token,
                       next=_safe_next(form.get("next", "/ui/")), session=None, user=None,
                       problem=str(error))
        set_cookie(page, PRE_COOKIE, token, 600)
        return page
    response = security_headers(RedirectResponse(_safe_next(form.get("next", "/ui/")),
                                                 status_code=303))
    set_cookie(response, COOKIE, _sessions(request).start(user))
    clear_cookie(response, PRE_COOKIE)
    return response


@router.post("/sign-out")
async def sign_out(request: Request) -> Response:
    async def handler(request: Request, session: WebSession, user: User) -> Response:
        _sessions(request).end(request.cookies.get(COOKIE))
        response = security_headers(RedirectResponse("/ui/sign-in", status_code=303))
        clear_cookie(response, COOKIE)
        return response
    return await _page(request, handler, post=True)


# -- pages --------------------------------------------------------------------------------
@router.get("")
async def root(request: Request) -> Response:
    return security_headers(RedirectResponse("/ui/", status_code=307))


@router.get("/")
async def inbox_page(request: Request, page: int = 0) -> Response:
    async def handler(request: Request, session: WebSession, user: User) -> Response:
        listing = await run_in_threadpool(views.inbox, _context(request), user, page)
        return _render("inbox.html", **_common(request, session, user), **listing)
    return await _page(request, handler)


@router.get("/computations/{identifier}")
async def computation_page(request: Request, identifier: str) -> Response:
    async def handler(request: Request, session: WebSession, user: User) -> Response:
        review = await run_in_threadpool(views.review, _context(request), user, identifier)
        result = review.result
        chart = None
        if result is not None and result["roc"]:
            chart = Markup(charts.roc_chart(result["roc"]))
        elif result is not None and result["bars"]:
            bars = result["bars"]
            chart = Markup(charts.bar_chart(bars["groups"], bars["values"], bars["label"]))
        running = review.record.status in ("approved", "running")
        return _render("computation.html", **_common(request, session, user), review=review,
                       spec=review.record.spec, chart=chart, refresh=running,
                       notice=request.query_params.get("done"))
    return await _page(request, handler)


async def _decide(request: Request, identifier: str, decision: str) -> Response:
    async def handler(request: Request, session: WebSession, user: User) -> Response:
        comment = (await _form(request)).get("comment", "")
        await run_in_threadpool(api.decide, _context(request), identifier, decision,
                                api.DecisionIn(comment=comment), user)
        done = "approved" if decision == "approve" else "rejected"
        return security_headers(RedirectResponse(
            f"/ui/computations/{identifier}?done={done}", status_code=303))
    return await _page(request, handler, post=True)


@router.post("/computations/{identifier}/approve")
async def approve(request: Request, identifier: str) -> Response:
    return await _decide(request, identifier, "approve")


@router.post("/computations/{identifier}/reject")
async def reject(request: Request, identifier: str) -> Response:
    return await _decide(request, identifier, "reject")


@router.get("/computations/{identifier}/result.csv")
async def result_csv(request: Request, identifier: str) -> Response:
    async def handler(request: Request, session: WebSession, user: User) -> Response:
        view = await run_in_threadpool(views.result_view, _context(request), user, identifier)
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(view["columns"])
        writer.writerows([["" if v is None else v for v in row] for row in view["rows"]])
        for cell in view["suppressed"]:
            writer.writerow([f"suppressed: {cell['group']}: {cell['rule']}"])
        response = Response(buffer.getvalue(), media_type="text/csv")
        response.headers["Content-Disposition"] = (
            f'attachment; filename="result-{identifier[:12]}.csv"')
        return security_headers(response)
    return await _page(request, handler)


@router.get("/audit")
async def audit(request: Request, kind: str = "", computation: str = "", page: int = 0
                ) -> Response:
    async def handler(request: Request, session: WebSession, user: User) -> Response:
        wanted = computation.strip().lower()
        if wanted and not _HEX.match(wanted):
            raise AccessDenied("a computation id is hexadecimal")
        listing = await run_in_threadpool(
            lambda: views.audit_page(_context(request), user, kind=kind or None,
                                     computation=wanted or None, page=max(0, page)))
        return _render("audit.html", **_common(request, session, user), **listing)
    return await _page(request, handler)


@router.post("/audit/verify")
async def audit_verify(request: Request) -> Response:
    """Run ``verify`` on the whole log now (hash chain, signatures, and the peers'
    co-signed checkpoints) and show the outcome above the log."""
    async def handler(request: Request, session: WebSession, user: User) -> Response:
        context = _context(request)
        try:
            outcome = await run_in_threadpool(audit_routes.verify, context, user)
            checked = {"verified": True, "entries": outcome["entries"],
                       "peers": outcome.get("peers", [])}
        except AuditError as error:
            checked = {"verified": False, "problem": str(error)}
        listing = await run_in_threadpool(lambda: views.audit_page(context, user))
        return _render("audit.html", **_common(request, session, user), **listing,
                       checked=checked)
    return await _page(request, handler, post=True)


@router.get("/static/style.css")
async def style() -> Response:
    return security_headers(Response((_HERE / "static" / "style.css").read_text(),
                                     media_type="text/css"))
