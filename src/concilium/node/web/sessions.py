"""Browser sessions of the node's web pages: a user signs in once with their API
token and then holds an opaque session cookie instead.

- The cookie is ``__Host-concilium-session``: ``HttpOnly`` (no script reads it),
  ``Secure`` (HTTPS only; the node serves nothing else), ``SameSite=Strict`` (no
  cross-site request carries it), ``Path=/`` and no ``Domain`` (the ``__Host-``
  prefix makes the browser enforce the last three).
- The node keeps only the SHA-256 of each session identifier, in memory, with the
  user's name, a CSRF token, and the times it was made and last used. A session
  ends after :data:`IDLE_SECONDS` unused or :data:`MAX_SECONDS` in all, at sign-out,
  at a node restart, and when the user is revoked (checked on every request).
- Every form carries the session's CSRF token in a hidden field, and every POST is
  refused without it (:meth:`WebSession.check_csrf`). The sign-in form, before any
  session exists, uses a pre-session token in a second
  ``__Host-`` cookie (double submit), so a sign-in cannot be forced either.

Neither the token nor the session identifier is ever logged or put in a page or
a URL.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass

from starlette.responses import Response

from concilium.errors import AccessDenied
from concilium.governance.users import User

__all__ = ["COOKIE", "IDLE_SECONDS", "MAX_SECONDS", "PRE_COOKIE", "SessionStore", "WebSession",
           "clear_cookie", "pre_session_token", "set_cookie"]

COOKIE = "__Host-concilium-session"
PRE_COOKIE = "__Host-concilium-sign-in"
IDLE_SECONDS = 30 * 60
MAX_SECONDS = 12 * 60 * 60


def set_cookie(response: Response, name: str, value: str, max_age: int | None = None) -> None:
    """Set a cookie with the flags every cookie of the pages has."""
    response.set_cookie(name, value, max_age=max_age, path="/", secure=True, httponly=True,
                        samesite="strict")


def clear_cookie(response: Response, name: str) -> None:
    response.delete_cookie(name, path="/", secure=True, httponly=True, samesite="strict")


def _digest(identifier: str) -> str:
    return hashlib.sha256(identifier.encode()).hexdigest()


@dataclass
class WebSession:
    """One signed-in browser: whose it is and its CSRF token."""

    user: str
    csrf: str
    created: float
    used: float

    def check_csrf(self, token: str | None) -> None:
        """Refuse a form without this session's CSRF token."""
        if not token or not hmac.compare_digest(token, self.csrf):
            raise AccessDenied("this form was not sent from this node's own page (its CSRF "
                               "token is missing or wrong); reload the page and try again")


class SessionStore:
    """The node's live sessions (in memory: a restart signs everyone out)."""

    def __init__(self) -> None:
        self._sessions: dict[str, WebSession] = {}
        self._lock = threading.Lock()

    def start(self, user: User) -> str:
        """A new session for ``user``; returns the identifier for the cookie."""
        identifier = secrets.token_urlsafe(32)
        now = time.monotonic()
        with self._lock:
            self._expire(now)
            self._sessions[_digest(identifier)] = WebSession(user.name,
                                                             secrets.token_urlsafe(32), now, now)
        return identifier

    def find(self, identifier: str | None) -> WebSession | None:
        """The live session of a cookie's identifier (and mark it used), or None."""
        if not identifier:
            return None
        now = time.monotonic()
        with self._lock:
            self._expire(now)
            session = self._sessions.get(_digest(identifier))
            if session is not None:
                session.used = now
            return session

    def end(self, identifier: str | None) -> None:
        if identifier:
            with self._lock:
                self._sessions.pop(_digest(identifier), None)

    def end_user(self, name: str) -> None:
        """Sign a user out everywhere (revoked)."""
        with self._lock:
            for key in [k for k, s in self._sessions.items() if s.user == name]:
                del self._sessions[key]

    def _expire(self, now: float) -> None:
        for key in [k for k, s in self._sessions.items()
                    if now - s.used > IDLE_SECONDS or now - s.created > MAX_SECONDS]:
            del self._sessions[key]


def pre_session_token() -> str:
    """The sign-in form's double-submit token (cookie and hidden field)."""
    return secrets.token_urlsafe(32)
