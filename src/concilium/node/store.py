"""A node's state in SQLite under its directory: datasets (schemas, rules and
where the data lives), the consortium's catalog (what the other nodes
published about their datasets), computations (spec, status, progress,
result) and the approvals they have collected. Secret data never enters this
store: a dataset row holds the path of the owner's own file, not its content.
"""

from __future__ import annotations

import datetime
import functools
import json
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

from concilium.errors import ConfigurationError
from concilium.governance.approval import Approval
from concilium.governance.proposal import DatasetEntry, DatasetRules
from concilium.governance.spec import ComputationSpec, canonical_json

__all__ = ["STATUSES", "ComputationRecord", "DatasetRecord", "NodeStore", "NotFound"]

STATUSES = ("proposed", "approved", "running", "completed", "failed", "refused")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS datasets (name TEXT PRIMARY KEY, schema TEXT NOT NULL,
    source TEXT NOT NULL, rows INTEGER NOT NULL, registered TEXT NOT NULL,
    rules TEXT NOT NULL DEFAULT '{}', format TEXT NOT NULL DEFAULT 'csv');
CREATE TABLE IF NOT EXISTS catalog (node TEXT NOT NULL, dataset TEXT NOT NULL,
    entry TEXT NOT NULL, received TEXT NOT NULL, PRIMARY KEY (node, dataset));
CREATE TABLE IF NOT EXISTS computations (id TEXT PRIMARY KEY, spec TEXT NOT NULL,
    status TEXT NOT NULL, progress REAL NOT NULL, result TEXT, error TEXT,
    created TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS approvals (computation TEXT NOT NULL, approver TEXT NOT NULL,
    node TEXT NOT NULL, body TEXT NOT NULL, PRIMARY KEY (computation, approver, node, body));
CREATE TABLE IF NOT EXISTS amendments (id TEXT PRIMARY KEY, body TEXT NOT NULL,
    status TEXT NOT NULL, received TEXT NOT NULL, applied TEXT);
CREATE TABLE IF NOT EXISTS amendment_signatures (amendment TEXT NOT NULL, node TEXT NOT NULL,
    signature TEXT NOT NULL, PRIMARY KEY (amendment, node));
"""


T = TypeVar("T")
P = ParamSpec("P")


def _locked(method: Callable[Concatenate[NodeStore, P], T]
            ) -> Callable[Concatenate[NodeStore, P], T]:
    """One thread at a time on the store's connection (API requests, jobs, and the
    background threads share it), so that no transaction interleaves another."""
    @functools.wraps(method)
    def wrapper(self: NodeStore, *args: P.args, **options: P.kwargs) -> T:
        with self._lock:
            return method(self, *args, **options)
    return wrapper


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
    rules: DatasetRules
    format: str = "csv"  # how the file is read: "csv" or "parquet", stated at registration

    def entry(self, node: str) -> DatasetEntry:
        """What the node publishes about this dataset (no path, no row count)."""
        return DatasetEntry(self.name, node, self.schema, self.rules)


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
        self._lock = threading.RLock()
        self._connection = sqlite3.connect(Path(path), check_same_thread=False)
        self._connection.executescript(_SCHEMA)
        columns = {row[1] for row in self._connection.execute("PRAGMA table_info(datasets)")}
        if "rules" not in columns:  # a store from before datasets had rules
            with self._connection:
                self._connection.execute("ALTER TABLE datasets ADD COLUMN rules TEXT NOT NULL "
                                         "DEFAULT '{}'")
        if "format" not in columns:  # from before the format was stored: as it was read
            with self._connection:
                self._connection.execute("ALTER TABLE datasets ADD COLUMN format TEXT NOT NULL "
                                         "DEFAULT 'csv'")
                self._connection.execute("UPDATE datasets SET format = 'parquet' "
                                         "WHERE source LIKE '%.parquet'")

    @_locked
    def close(self) -> None:
        self._connection.close()

    # -- datasets -------------------------------------------------------------------
    @_locked
    def add_dataset(self, name: str, schema: dict[str, Any], source: str, rows: int,
                    rules: DatasetRules | None = None, file_format: str = "csv") -> None:
        text = canonical_json((rules or DatasetRules()).as_dict()).decode()
        try:
            with self._connection:
                self._connection.execute(
                    "INSERT INTO datasets (name, schema, source, rows, registered, rules, "
                    "format) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (name, canonical_json(schema).decode(), source, rows, _now(), text,
                     file_format))
        except sqlite3.IntegrityError:
            raise ConfigurationError(f"dataset {name!r} is registered already") from None

    @_locked
    def set_rules(self, name: str, rules: DatasetRules) -> None:
        self.dataset(name)
        with self._connection:
            self._connection.execute("UPDATE datasets SET rules = ? WHERE name = ?",
                                     (canonical_json(rules.as_dict()).decode(), name))

    @_locked
    def datasets(self) -> list[DatasetRecord]:
        return [DatasetRecord(n, json.loads(s), src, r, t,
                              DatasetRules.from_mapping(json.loads(rules)), kind)
                for n, s, src, r, t, rules, kind in self._connection.execute(
                    "SELECT name, schema, source, rows, registered, rules, format "
                    "FROM datasets ORDER BY name")]

    # -- the consortium's catalog ------------------------------------------------------
    @_locked
    def replace_catalog(self, node: str, entries: list[DatasetEntry]) -> None:
        """What ``node`` published about its datasets (all of them, replacing the last)."""
        with self._connection:
            self._connection.execute("DELETE FROM catalog WHERE node = ?", (node,))
            self._connection.executemany(
                "INSERT INTO catalog VALUES (?, ?, ?, ?)",
                [(node, e.dataset, canonical_json(e.as_dict()).decode(), _now())
                 for e in entries])

    @_locked
    def catalog(self) -> list[DatasetEntry]:
        """Every other node's published datasets, as last received."""
        return [DatasetEntry.from_dict(json.loads(text)) for (text,) in self._connection.execute(
            "SELECT entry FROM catalog ORDER BY node, dataset")]

    @_locked
    def dataset(self, name: str) -> DatasetRecord:
        for record in self.datasets():
            if record.name == name:
                return record
        raise NotFound(f"this node has no dataset {name!r}")

    # -- computations ---------------------------------------------------------------
    @_locked
    def add_computation(self, spec: ComputationSpec) -> ComputationRecord:
        with self._connection:
            self._connection.execute(
                "INSERT OR IGNORE INTO computations VALUES (?, ?, 'proposed', 0, NULL, NULL, ?)",
                (spec.computation_id, spec.canonical_json().decode(), _now()))
        return self.computation(spec.computation_id)

    @_locked
    def computation(self, identifier: str) -> ComputationRecord:
        row = self._connection.execute("SELECT * FROM computations WHERE id = ?",
                                       (identifier,)).fetchone()
        if row is None:
            raise NotFound(f"this node has no computation {identifier[:16]}...")
        key, spec, status, progress, result, error, created = row
        return ComputationRecord(key, ComputationSpec.from_dict(json.loads(spec)), status,
                                 progress, None if result is None else json.loads(result),
                                 error, created)

    @_locked
    def computations(self) -> list[ComputationRecord]:
        """Every computation, oldest first (one query)."""
        return [ComputationRecord(key, ComputationSpec.from_dict(json.loads(spec)), status,
                                  progress, None if result is None else json.loads(result),
                                  error, created)
                for key, spec, status, progress, result, error, created in
                self._connection.execute("SELECT * FROM computations ORDER BY created, id")]

    @_locked
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
    @_locked
    def add_approval(self, approval: Approval) -> None:
        self.computation(approval.computation_id)
        with self._connection:
            self._connection.execute("INSERT OR IGNORE INTO approvals VALUES (?, ?, ?, ?)",
                                     (approval.computation_id, approval.approver,
                                      approval.node, json.dumps(approval.as_dict())))

    @_locked
    def approvals(self, identifier: str) -> list[Approval]:
        return [Approval(**json.loads(body)) for (body,) in self._connection.execute(
            "SELECT body FROM approvals WHERE computation = ? ORDER BY rowid", (identifier,))]

    # -- manifest amendments -------------------------------------------------------------
    @_locked
    def add_amendment(self, identifier: str, body: dict[str, Any]) -> None:
        """Keep a proposed amendment (once; its body is what its id hashes)."""
        with self._connection:
            self._connection.execute(
                "INSERT OR IGNORE INTO amendments VALUES (?, ?, 'proposed', ?, NULL)",
                (identifier, json.dumps(body), _now()))

    @_locked
    def add_amendment_signature(self, identifier: str, node: str, signature: str) -> None:
        with self._connection:
            self._connection.execute(
                "INSERT OR IGNORE INTO amendment_signatures VALUES (?, ?, ?)",
                (identifier, node, signature))

    @_locked
    def amendment_applied(self, identifier: str) -> None:
        with self._connection:
            self._connection.execute(
                "UPDATE amendments SET status = 'applied', applied = ? WHERE id = ?",
                (_now(), identifier))

    @_locked
    def amendments(self) -> list[dict[str, Any]]:
        """Every amendment this node knows, oldest first: id, body, status, times and
        the signatures collected (node -> hex signature)."""
        signatures: dict[str, dict[str, str]] = {}
        for amendment, node, signature in self._connection.execute(
                "SELECT amendment, node, signature FROM amendment_signatures"):
            signatures.setdefault(amendment, {})[node] = signature
        return [{"id": key, "body": json.loads(body), "status": status, "received": received,
                 "applied": applied, "signatures": signatures.get(key, {})}
                for key, body, status, received, applied in self._connection.execute(
                    "SELECT * FROM amendments ORDER BY received, id")]
