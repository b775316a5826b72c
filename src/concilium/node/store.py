"""A node's state in SQLite under its directory: datasets (schemas and where
the data lives), computations (spec, status, progress, result) and the
approvals they have collected. Secret data never enters this store: a
dataset row holds the path of the owner's own file, not its content.
"""

from __future__ import annotations

import datetime
import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from concilium.errors import ConfigurationError
from concilium.governance.approval import Approval
from concilium.governance.spec import ComputationSpec, canonical_json

__all__ = ["STATUSES", "ComputationRecord", "DatasetRecord", "NodeStore", "NotFound"]

STATUSES = ("proposed", "approved", "running", "completed", "failed", "refused")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS datasets (name TEXT PRIMARY KEY, schema TEXT NOT NULL,
    source TEXT NOT NULL, rows INTEGER NOT NULL, registered TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS computations (id TEXT PRIMARY KEY, spec TEXT NOT NULL,
    status TEXT NOT NULL, progress REAL NOT NULL, result TEXT, error TEXT,
    created TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS approvals (computation TEXT NOT NULL, approver TEXT NOT NULL,
    node TEXT NOT NULL, body TEXT NOT NULL, PRIMARY KEY (computation, approver, node, body));
"""


class NotFound(ConfigurationError):
    """A dataset or computation that this node does not know."""


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class DatasetRecord:
    name: str
    schema: dict[str, Any]
    source: str
    rows: int
    registered: str


@dataclass(frozen=True)
class ComputationRecord:
    id: str
    spec: ComputationSpec
    status: str
    progress: float
    result: dict[str, Any] | None
    error: str | None
    created: str


class NodeStore:
    """The node's SQLite state (one file, ``state.sqlite`` in the node directory)."""

    def __init__(self, path: str | Path) -> None:
        self._connection = sqlite3.connect(Path(path), check_same_thread=False)
        self._connection.executescript(_SCHEMA)

    def close(self) -> None:
        self._connection.close()

    # -- datasets -------------------------------------------------------------------
    def add_dataset(self, name: str, schema: dict[str, Any], source: str, rows: int) -> None:
        try:
            with self._connection:
                self._connection.execute("INSERT INTO datasets VALUES (?, ?, ?, ?, ?)",
                                         (name, canonical_json(schema).decode(), source,
                                          rows, _now()))
        except sqlite3.IntegrityError:
            raise ConfigurationError(f"dataset {name!r} is registered already") from None

    def datasets(self) -> list[DatasetRecord]:
        return [DatasetRecord(n, json.loads(s), src, r, t) for n, s, src, r, t in
                self._connection.execute("SELECT * FROM datasets ORDER BY name")]

    def dataset(self, name: str) -> DatasetRecord:
        for record in self.datasets():
            if record.name == name:
                return record
        raise NotFound(f"this node has no dataset {name!r}")

    # -- computations ---------------------------------------------------------------
    def add_computation(self, spec: ComputationSpec) -> ComputationRecord:
        with self._connection:
            self._connection.execute(
                "INSERT OR IGNORE INTO computations VALUES (?, ?, 'proposed', 0, NULL, NULL, ?)",
                (spec.computation_id, spec.canonical_json().decode(), _now()))
        return self.computation(spec.computation_id)

    def computation(self, identifier: str) -> ComputationRecord:
        row = self._connection.execute("SELECT * FROM computations WHERE id = ?",
                                       (identifier,)).fetchone()
        if row is None:
            raise NotFound(f"this node has no computation {identifier[:16]}...")
        key, spec, status, progress, result, error, created = row
        return ComputationRecord(key, ComputationSpec.from_dict(json.loads(spec)), status,
                                 progress, None if result is None else json.loads(result),
                                 error, created)

    def computations(self) -> list[ComputationRecord]:
        ids = [r[0] for r in self._connection.execute(
            "SELECT id FROM computations ORDER BY created, id")]
        return [self.computation(i) for i in ids]

    def update(self, identifier: str, *, status: str | None = None,
               progress: float | None = None, result: dict[str, Any] | None = None,
               error: str | None = None) -> None:
        if status is not None and status not in STATUSES:
            raise ConfigurationError(f"unknown status {status!r}")
        self.computation(identifier)
        with self._connection:
            if status is not None:
                self._connection.execute("UPDATE computations SET status = ? WHERE id = ?",
                                         (status, identifier))
            if progress is not None:
                self._connection.execute("UPDATE computations SET progress = ? WHERE id = ?",
                                         (progress, identifier))
            if result is not None:
                self._connection.execute("UPDATE computations SET result = ? WHERE id = ?",
                                         (json.dumps(result), identifier))
            if error is not None:
                self._connection.execute("UPDATE computations SET error = ? WHERE id = ?",
                                         (error, identifier))

    # -- approvals --------------------------------------------------------------------
    def add_approval(self, approval: Approval) -> None:
        self.computation(approval.computation_id)
        with self._connection:
            self._connection.execute("INSERT OR IGNORE INTO approvals VALUES (?, ?, ?, ?)",
                                     (approval.computation_id, approval.approver,
                                      approval.node, json.dumps(approval.as_dict())))

    def approvals(self, identifier: str) -> list[Approval]:
        return [Approval(**json.loads(body)) for (body,) in self._connection.execute(
            "SELECT body FROM approvals WHERE computation = ? ORDER BY rowid", (identifier,))]
