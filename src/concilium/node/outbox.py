"""The node's outbox: control-plane messages (proposals, approvals, rejections,
retries) that a peer could not receive yet, kept in SQLite (``outbox.sqlite`` in
the node directory) and re-sent with backoff until delivered.

Messages to one peer are delivered in the order they were made: while a peer
has undelivered messages, new ones queue behind them. Each attempt is signed
afresh (the peer checks the signature's time), and delivery is idempotent at the
receiver (a proposal or approval it already has changes nothing), so a message
sent twice after a crash is harmless. A peer that answers with a refusal (4xx)
has received the message: it is dropped from the outbox with the refusal noted
in the node's log.
"""

from __future__ import annotations

import datetime
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Outbox", "OutboxItem"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, peer TEXT NOT NULL,
    path TEXT NOT NULL, body BLOB NOT NULL, created TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0, next_attempt REAL NOT NULL,
    last_error TEXT NOT NULL DEFAULT '');
"""
_MAX_DELAY = 30.0


@dataclass(frozen=True)
class OutboxItem:
    """One undelivered message."""

    id: int
    peer: str
    path: str
    body: bytes
    created: str
    attempts: int
    last_error: str

    def summary(self) -> dict[str, object]:
        return {"peer": self.peer, "path": self.path, "created": self.created,
                "attempts": self.attempts, "last_error": self.last_error}


class Outbox:
    """Undelivered messages per peer, oldest first (thread-safe)."""

    def __init__(self, path: str | Path) -> None:
        self._lock = threading.Lock()
        self._connection = sqlite3.connect(Path(path), check_same_thread=False)
        self._connection.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._connection.close()

    def add(self, peer: str, path: str, body: bytes, error: str) -> None:
        """Queue a message that could not be sent now (tried again at once)."""
        created = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        with self._lock, self._connection:
            self._connection.execute(
                "INSERT INTO outbox (peer, path, body, created, attempts, next_attempt, "
                "last_error) VALUES (?, ?, ?, ?, 1, ?, ?)",
                (peer, path, body, created, time.time() + 0.5, error))

    def has_pending(self, peer: str) -> bool:
        with self._lock:
            row = self._connection.execute("SELECT 1 FROM outbox WHERE peer = ? LIMIT 1",
                                           (peer,)).fetchone()
        return row is not None

    def pending(self) -> list[OutboxItem]:
        """Every undelivered message, oldest first."""
        with self._lock:
            rows = self._connection.execute(
                "SELECT id, peer, path, body, created, attempts, last_error FROM outbox "
                "ORDER BY id").fetchall()
        return [OutboxItem(*row) for row in rows]

    def due(self) -> dict[str, list[OutboxItem]]:
        """Per peer whose oldest message is due for another attempt: its messages in
        order (a later message never overtakes an earlier one)."""
        now = time.time()
        by_peer: dict[str, list[OutboxItem]] = {}
        ready: dict[str, bool] = {}
        with self._lock:
            rows = self._connection.execute(
                "SELECT id, peer, path, body, created, attempts, last_error, next_attempt "
                "FROM outbox ORDER BY id").fetchall()
        for *fields, next_attempt in rows:
            item = OutboxItem(*fields)
            ready.setdefault(item.peer, next_attempt <= now)
            by_peer.setdefault(item.peer, []).append(item)
        return {peer: items for peer, items in by_peer.items() if ready[peer]}

    def delivered(self, item: OutboxItem) -> None:
        with self._lock, self._connection:
            self._connection.execute("DELETE FROM outbox WHERE id = ?", (item.id,))

    def failed(self, item: OutboxItem, error: str) -> None:
        """Back off: the next attempt after 0.5 s, doubling up to 30 s."""
        delay = min(_MAX_DELAY, 0.5 * 2.0 ** item.attempts)
        with self._lock, self._connection:
            self._connection.execute(
                "UPDATE outbox SET attempts = attempts + 1, next_attempt = ?, last_error = ? "
                "WHERE id = ?", (time.time() + delay, error, item.id))
