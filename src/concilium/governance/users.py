"""Users, roles and API tokens of one node, and who may use which dataset.

Roles: ``admin`` (users, datasets, policies), ``analyst`` (proposes
computations), ``approver`` (approves or rejects them for the node's
datasets), ``recipient`` (receives results), ``monitor`` (reads the node's
metrics, ``GET /metrics``, for a Prometheus server). A token is 32 random bytes
from ``secrets``, shown once; the node stores only its SHA-256 (a token has 256
bits of entropy, so a fast hash cannot be brute-forced). Every action checks
the caller's role (:meth:`UserStore.require`), and each data owner decides
which roles may use each of its datasets (:meth:`UserStore.grant`).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from concilium.errors import AccessDenied, ConfigurationError

__all__ = ["ACTIONS", "ROLES", "User", "UserStore"]

ROLES = ("admin", "analyst", "approver", "recipient", "monitor")
#: Which roles may do what.
ACTIONS: dict[str, frozenset[str]] = {
    "manage_users": frozenset({"admin"}),
    "register_dataset": frozenset({"admin"}),
    "set_policy": frozenset({"admin"}),
    "propose": frozenset({"analyst"}),
    "approve": frozenset({"approver"}),
    "receive": frozenset({"recipient", "analyst"}),
    "read_audit": frozenset({"admin", "approver"}),
    "read_metrics": frozenset({"monitor", "admin"}),
}
_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (name TEXT PRIMARY KEY, role TEXT NOT NULL,
                                  token_hash TEXT NOT NULL, active INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS grants (dataset TEXT NOT NULL, role TEXT NOT NULL,
                                   PRIMARY KEY (dataset, role));
"""


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class User:
    name: str
    role: str


class UserStore:
    """A node's users (SQLite)."""

    def __init__(self, path: str | Path) -> None:
        # the API serves requests from worker threads; sqlite3 serializes each call
        self._connection = sqlite3.connect(Path(path), check_same_thread=False)
        self._connection.executescript(_SCHEMA)

    def close(self) -> None:
        self._connection.close()

    def add_user(self, name: str, role: str) -> str:
        """Create a user; returns their API token, which is not stored and shown once."""
        if role not in ROLES:
            raise ConfigurationError(f"role must be one of {', '.join(ROLES)}")
        if not name or not name.replace("-", "").replace("_", "").isalnum():
            raise ConfigurationError("user names are letters, digits, '-' and '_'")
        token = secrets.token_urlsafe(32)
        try:
            with self._connection:
                self._connection.execute("INSERT INTO users VALUES (?, ?, ?, 1)",
                                         (name, role, _hash(token)))
        except sqlite3.IntegrityError:
            raise ConfigurationError(f"user {name!r} exists already") from None
        return token

    def revoke(self, name: str) -> None:
        with self._connection:
            changed = self._connection.execute("UPDATE users SET active = 0 WHERE name = ?",
                                               (name,)).rowcount
        if not changed:
            raise ConfigurationError(f"there is no user {name!r}")

    def authenticate(self, token: str) -> User:
        """The user a token belongs to; :class:`AccessDenied` if unknown or revoked."""
        digest = _hash(token)
        for name, role, stored, active in self._connection.execute(
                "SELECT name, role, token_hash, active FROM users"):
            if hmac.compare_digest(stored, digest):
                if not active:
                    raise AccessDenied(f"user {name!r} has been revoked")
                return User(name, role)
        raise AccessDenied("unknown API token")

    def active(self, name: str) -> User:
        """The user called ``name`` if still active (a web session re-checks this on
        every request); :class:`AccessDenied` if revoked or unknown."""
        row = self._connection.execute("SELECT role, active FROM users WHERE name = ?",
                                       (name,)).fetchone()
        if row is None or not row[1]:
            raise AccessDenied(f"user {name!r} has been revoked; sign in again")
        return User(name, row[0])

    def require(self, user: User, action: str) -> None:
        """A role check; every action of the node calls it."""
        allowed = ACTIONS.get(action)
        if allowed is None:
            raise ConfigurationError(f"unknown action {action!r}")
        if user.role not in allowed:
            raise AccessDenied(f"{user.name!r} ({user.role}) may not {action.replace('_', ' ')}; "
                               f"that needs the role {' or '.join(sorted(allowed))}")

    def grant(self, dataset: str, role: str) -> None:
        """Let users with ``role`` use ``dataset`` in computations (owner's decision)."""
        if role not in ROLES:
            raise ConfigurationError(f"role must be one of {', '.join(ROLES)}")
        with self._connection:
            self._connection.execute("INSERT OR IGNORE INTO grants VALUES (?, ?)",
                                     (dataset, role))

    def require_dataset(self, user: User, dataset: str) -> None:
        granted = self._connection.execute("SELECT 1 FROM grants WHERE dataset = ? AND role = ?",
                                           (dataset, user.role)).fetchone()
        if granted is None:
            raise AccessDenied(f"{user.name!r} ({user.role}) may not use dataset {dataset!r}; "
                               "its owner has not granted that role")
