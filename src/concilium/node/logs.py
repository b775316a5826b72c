"""A node's structured log: one JSON object per line (``time``, ``level``, ``event``,
``node`` and the event's fields), for every HTTP request and every run.

:func:`event` writes a structured event (``http_request``, ``run_start``,
``run_end``, ``run_abort``, ...); any other log record is written as the event
``log`` with its ``logger`` and ``message`` (and ``exception``, a traceback, if it
has one). :class:`RequestLog` is the ASGI middleware that logs each request: the
method, the path without its query string, the status, the duration in
milliseconds, the caller's address and, when the request carried a valid API
token, the user's name. Fields are names, counts, sizes, times and error types:
never a token, a share, a value or a row (a request's headers, query string and
body are not logged).
"""

from __future__ import annotations

import datetime
import json
import logging
import sys
import time
from collections.abc import Callable
from typing import IO, Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["JsonFormatter", "RequestLog", "configure", "event", "install"]

#: the logger of structured events
EVENTS = logging.getLogger("concilium.events")


def event(name: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log the structured event ``name`` with its fields."""
    EVENTS.log(level, name, extra={"event": name, "fields": fields})


class JsonFormatter(logging.Formatter):
    """Each record as one line of JSON, labelled with the node's name."""

    def __init__(self, node: str) -> None:
        super().__init__()
        self.node = node

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(
                timespec="milliseconds"),
            "level": record.levelname.lower(), "event": getattr(record, "event", "log"),
            "node": self.node}
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            line.update({k: v for k, v in fields.items() if k not in line})
        else:
            line.update(logger=record.name, message=record.getMessage())
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


class RequestLog:
    """ASGI middleware: one ``http_request`` event per HTTP request. ``user``: the name
    of the user an API token belongs to (None if it belongs to none)."""

    def __init__(self, app: ASGIApp, user: Callable[[str], str | None] | None = None) -> None:
        self.app, self.user = app, user

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500  # unless the app answers

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            client = scope.get("client")
            event("http_request", logging.WARNING if status >= 500 else logging.INFO,
                  method=scope.get("method"), path=scope.get("path"), status=status,
                  duration_ms=round((time.perf_counter() - start) * 1000, 3),
                  user=self._user(scope), client=client[0] if client else None)

    def _user(self, scope: Scope) -> str | None:
        if self.user is None:
            return None
        for name, value in scope.get("headers", ()):
            if name == b"authorization" and value.startswith(b"Bearer "):
                try:
                    return self.user(value[7:].decode("latin-1").strip())
                except Exception:  # an unknown or revoked token: no name
                    return None
        return None


def install(app: Any, context: Any) -> None:
    """Log every request to ``app`` (a node's FastAPI app), with the caller's user name
    from ``context.users``."""
    def user(token: str) -> str | None:
        return str(context.users.authenticate(token).name)

    app.add_middleware(RequestLog, user=user)


def configure(node: str, stream: IO[str] | None = None,
              level: int = logging.INFO) -> logging.Handler:
    """Send every log record, as JSON lines, to ``stream`` (stderr): the node's own at
    ``level`` and up, other libraries' warnings and errors."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter(node))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    logging.getLogger("concilium").setLevel(level)
    return handler
