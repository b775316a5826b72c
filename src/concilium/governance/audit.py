"""The audit log: append-only, hash-chained, signed entries in SQLite, with
Merkle checkpoints (RFC 6962) that peers co-sign.

Entry ``i`` stores its kind (``proposal``, ``approval``, ``run_start``,
``input_commitment``, ``policy_decision``, ``result``, ``run_end``, ``abort``,
...), a JSON body, the previous entry's hash, its own hash (SHA-256 of the
canonical JSON of index, time, kind, body and previous hash) and the node's
Ed25519 signature of that hash. Verification
(:func:`concilium.governance.audit_verify.verify_log`) recomputes everything and
names the first bad index: an edited entry breaks its hash, a deleted or
inserted one the index sequence or the chain, a reordered one both.

The log records which key signed what. A node whose signing key rotates (a
manifest amendment announces the new key) appends a ``signing_key_rotated`` entry
naming the old and the new key, signed by the old key; every later entry is signed
by the new one. Verification follows that chain from the log's first key
(``meta.public_key``), so entries signed before a rotation still verify, and an
entry signed by any other key fails. Co-signatures are checked against every key
a signer has held (``signers`` may map a node to its key history).

A checkpoint is the RFC 6962 Merkle tree hash of the first ``size`` entry
hashes; peers sign it (:func:`cosign`), so a node cannot later rewrite its
history without its peers' signatures failing. The peers also *keep* what they
signed (:meth:`AuditLog.witness`, the ``witnessed`` table of their own log):
a node that cuts the tail of its log, deletes its checkpoints, or rebuilds
its history under its own key is caught by verifying its log against the
checkpoints its peers hold (``verify_log(..., against=...)``), which it
cannot edit. A peer asked to witness a root that contradicts one it holds
(the same size, another root) refuses: the log was rewritten.

Secrets never enter the log: bodies are JSON of names, counts, hashes and
commitments; :func:`commitment` hashes data for an input commitment.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import sqlite3
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from concilium.errors import AuditError, ConfigurationError
from concilium.governance.audit_events import SigningKeyRotated
from concilium.governance.spec import canonical_json

if TYPE_CHECKING:
    from concilium.governance.audit_events import AuditEvent

__all__ = ["GENESIS", "ROTATED", "AuditEntry", "AuditLog", "Checkpoint", "Witnessed",
           "checkpoint_message", "commitment", "cosign", "entry_hash", "key_text",
           "merkle_root"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS entries (
    position INTEGER PRIMARY KEY, time TEXT NOT NULL, kind TEXT NOT NULL,
    body TEXT NOT NULL, previous TEXT NOT NULL, hash TEXT NOT NULL, signature TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS checkpoints (
    size INTEGER NOT NULL, root TEXT NOT NULL, signer TEXT NOT NULL, signature TEXT NOT NULL,
    PRIMARY KEY (size, signer));
CREATE TABLE IF NOT EXISTS witnessed (
    node TEXT NOT NULL, size INTEGER NOT NULL, root TEXT NOT NULL, signer TEXT NOT NULL,
    signature TEXT NOT NULL, PRIMARY KEY (node, size));
"""
GENESIS = "0" * 64
ROTATED = SigningKeyRotated.KIND


def commitment(data: bytes) -> str:
    """A SHA-256 commitment to data (for input commitments): the hash, never the data."""
    return hashlib.sha256(data).hexdigest()


def key_text(key: ed25519.Ed25519PrivateKey) -> str:
    """``ed25519:<hex>`` of a private key's public key."""
    return "ed25519:" + key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()


@dataclass(frozen=True)
class AuditEntry:
    index: int
    time: str
    kind: str
    body: dict[str, Any]
    previous: str
    hash: str
    signature: str


@dataclass(frozen=True)
class Checkpoint:
    size: int
    root: str
    signer: str
    signature: str


@dataclass(frozen=True)
class Witnessed:
    """A checkpoint of ``node``'s log that ``signer`` co-signed and keeps."""

    node: str
    size: int
    root: str
    signer: str
    signature: str

    def as_dict(self) -> dict[str, Any]:
        return {"node": self.node, "size": self.size, "root": self.root,
                "signer": self.signer, "signature": self.signature}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Witnessed:
        try:
            return cls(str(data["node"]), int(data["size"]), str(data["root"]),
                       str(data["signer"]), str(data["signature"]))
        except (KeyError, TypeError, ValueError) as error:
            raise AuditError(f"a malformed witnessed checkpoint: {error}") from None


def entry_hash(index: int, time: str, kind: str, body: str, previous: str) -> str:
    return hashlib.sha256(canonical_json({"index": index, "time": time, "kind": kind,
                                          "body": json.loads(body), "previous": previous})
                          ).hexdigest()


def _leaf(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def merkle_root(hashes: Sequence[str]) -> str:
    """RFC 6962 Merkle tree hash of the entry hashes (hex); the empty tree hashes ''."""
    def tree(items: Sequence[bytes]) -> bytes:
        if len(items) == 1:
            return _leaf(items[0])
        split = 1 << ((len(items) - 1).bit_length() - 1)  # largest power of 2 below n
        return hashlib.sha256(b"\x01" + tree(items[:split]) + tree(items[split:])).digest()

    if not hashes:
        return hashlib.sha256(b"").hexdigest()
    return tree([bytes.fromhex(h) for h in hashes]).hex()


def checkpoint_message(size: int, root: str) -> bytes:
    """What a co-signer signs for a checkpoint of ``size`` entries with ``root``."""
    return canonical_json({"checkpoint": {"size": size, "root": root}})


def cosign(size: int, root: str, signer: str, key: ed25519.Ed25519PrivateKey) -> Checkpoint:
    """A peer's signature over a checkpoint it has recomputed itself."""
    return Checkpoint(size, root, signer, key.sign(checkpoint_message(size, root)).hex())


class AuditLog:
    """One node's audit log in a SQLite file."""

    def __init__(self, path: str | Path, node: str, key: ed25519.Ed25519PrivateKey,
                 previous_keys: Sequence[ed25519.Ed25519PrivateKey] = ()) -> None:
        """Open (or create) the log of ``node`` signed by ``key``. ``previous_keys``:
        keys the node held before; if the log's key in force is one of them (the node
        stopped between putting a rotated key in place and logging it), the log is
        handed over to ``key`` by a ``signing_key_rotated`` entry signed by that key."""
        self.path = Path(path)
        self.node = node
        self._key = key
        self._connection = sqlite3.connect(self.path, check_same_thread=False)
        self._lock = threading.Lock()  # appends from several threads stay one chain
        self._connection.executescript(_SCHEMA)
        mine = key_text(key)
        stored = dict(self._connection.execute("SELECT key, value FROM meta").fetchall())
        if stored and stored.get("node") != node:
            raise ConfigurationError(f"{self.path} is the audit log of {stored.get('node')!r}, "
                                     f"not of {node!r}")
        with self._connection:
            self._connection.executemany("INSERT OR IGNORE INTO meta VALUES (?, ?)",
                                         [("node", node), ("public_key", mine)])
        in_force = self.key_in_force()
        if in_force != mine:
            older = {key_text(k): k for k in previous_keys}
            if in_force not in older:
                raise ConfigurationError(f"{self.path} is the audit log of {node!r} under "
                                         f"another key ({in_force[:24]}...), not this node's "
                                         f"({mine[:24]}...)")
            self._key = older[in_force]
            self.rotate_key(key, "")

    def key_in_force(self) -> str:
        """The public key that signs the next entry: the log's first key, or the new
        key of its last ``signing_key_rotated`` entry."""
        row = self._connection.execute(
            "SELECT body FROM entries WHERE kind = ? ORDER BY position DESC LIMIT 1",
            (ROTATED,)).fetchone()
        if row is not None:
            return str(json.loads(row[0])["new_key"])
        return str(self._connection.execute(
            "SELECT value FROM meta WHERE key = 'public_key'").fetchone()[0])

    def rotate_key(self, key: ed25519.Ed25519PrivateKey, amendment: str) -> AuditEntry:
        """Hand the log over to a new signing key: a ``signing_key_rotated`` entry
        signed by the current key, after which ``key`` signs every entry (one step
        under the append lock, so no entry is signed by the wrong key)."""
        event = SigningKeyRotated(key_text(self._key), key_text(key), amendment)
        with self._lock:
            entry = self._append(event.KIND, event.body(), None)
            self._key = key
        return entry

    def close(self) -> None:
        self._connection.close()

    def record(self, event: AuditEvent) -> AuditEntry:
        """Add an event (:mod:`concilium.governance.audit_events`): its kind and body."""
        return self.append(event.KIND, event.body())

    def append(self, kind: str, body: Mapping[str, Any],
               time: datetime.datetime | None = None) -> AuditEntry:
        """Add a signed entry chained to the last one (in one SQLite transaction)."""
        if kind == ROTATED:
            raise AuditError("a signing key rotation is logged by rotate_key")
        with self._lock:
            return self._append(kind, body, time)

    def _append(self, kind: str, body: Mapping[str, Any],
                time: datetime.datetime | None) -> AuditEntry:
        text = canonical_json(dict(body)).decode()
        when = (time or datetime.datetime.now(datetime.UTC)).isoformat(timespec="microseconds")
        with self._connection:
            last = self._connection.execute(
                "SELECT position, hash FROM entries ORDER BY position DESC LIMIT 1").fetchone()
            index, previous = (0, GENESIS) if last is None else (last[0] + 1, last[1])
            digest = entry_hash(index, when, kind, text, previous)
            signature = self._key.sign(bytes.fromhex(digest)).hex()
            self._connection.execute("INSERT INTO entries VALUES (?, ?, ?, ?, ?, ?, ?)",
                                     (index, when, kind, text, previous, digest, signature))
        return AuditEntry(index, when, kind, json.loads(text), previous, digest, signature)

    def entries(self) -> list[AuditEntry]:
        return [AuditEntry(p, t, k, json.loads(b), prev, h, s) for p, t, k, b, prev, h, s in
                self._connection.execute("SELECT * FROM entries ORDER BY position")]

    def page(self, *, offset: int = 0, limit: int = 50, kind: str | None = None,
             computation: str | None = None) -> tuple[int, list[AuditEntry]]:
        """(how many entries match, one page of them, newest first): entries of one
        ``kind`` and/or about one ``computation`` (its id, or the start of it)."""
        where, arguments = [], []
        if kind:
            where.append("kind = ?")
            arguments.append(kind)
        if computation:
            where.append("instr(body, ?) > 0")
            arguments.append(f'"computation_id":"{computation}')
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        total = self._connection.execute(f"SELECT count(*) FROM entries{clause}",
                                         arguments).fetchone()[0]
        rows = self._connection.execute(
            f"SELECT * FROM entries{clause} ORDER BY position DESC LIMIT ? OFFSET ?",
            [*arguments, max(0, limit), max(0, offset)])
        return int(total), [AuditEntry(p, t, k, json.loads(b), prev, h, s)
                            for p, t, k, b, prev, h, s in rows]

    def since(self, position: int, kinds: Sequence[str] | None = None,
              limit: int | None = None) -> list[AuditEntry]:
        """The entries after index ``position`` (-1: from the first), oldest first, only
        of ``kinds`` if given, at most ``limit``: an append-only log read incrementally
        (the node's metrics tally it this way, by its primary key)."""
        where = "position > ?"
        arguments: list[Any] = [position]
        if kinds is not None:
            where += f" AND kind IN ({', '.join('?' * len(kinds))})" if kinds else " AND 0"
            arguments.extend(kinds)
        rows = self._connection.execute(
            f"SELECT * FROM entries WHERE {where} ORDER BY position LIMIT ?",
            [*arguments, -1 if limit is None else max(0, limit)])
        return [AuditEntry(p, t, k, json.loads(b), prev, h, s) for p, t, k, b, prev, h, s in rows]

    def kinds(self) -> list[str]:
        """The kinds of entry in this log."""
        return [row[0] for row in self._connection.execute(
            "SELECT DISTINCT kind FROM entries ORDER BY kind")]

    def checkpoint(self) -> tuple[int, str]:
        """(size, Merkle root) of the log now, for peers to recompute and co-sign."""
        hashes = [e.hash for e in self.entries()]
        return len(hashes), merkle_root(hashes)

    def checkpoints(self) -> list[Checkpoint]:
        return [Checkpoint(*row) for row in self._connection.execute(
            "SELECT size, root, signer, signature FROM checkpoints ORDER BY size, signer")]

    def add_cosignature(self, checkpoint: Checkpoint) -> None:
        with self._lock, self._connection:
            self._connection.execute("INSERT OR REPLACE INTO checkpoints VALUES (?, ?, ?, ?)",
                                     (checkpoint.size, checkpoint.root, checkpoint.signer,
                                      checkpoint.signature))

    def cosigned_size(self, signer: str) -> int:
        """The largest size of this log that ``signer`` has co-signed (0 if none)."""
        row = self._connection.execute("SELECT MAX(size) FROM checkpoints WHERE signer = ?",
                                       (signer,)).fetchone()
        return int(row[0] or 0)

    def witness(self, node: str, size: int, root: str) -> Witnessed:
        """Co-sign peer ``node``'s checkpoint and keep it. Refuses (AuditError) a root
        that contradicts one already witnessed at the same size: that log was
        rewritten."""
        if size < 0 or len(root) != 64:
            raise AuditError(f"{node!r} sent a malformed checkpoint")
        with self._lock, self._connection:
            held = self._connection.execute(
                "SELECT root FROM witnessed WHERE node = ? AND size = ?", (node, size)
            ).fetchone()
            if held is not None and held[0] != root:
                raise AuditError(f"{node!r} presented another root for its log at {size} "
                                 f"entries than the one {self.node!r} co-signed before: its "
                                 "history was rewritten", index=size)
            signed = cosign(size, root, self.node, self._key)
            self._connection.execute("INSERT OR REPLACE INTO witnessed VALUES (?, ?, ?, ?, ?)",
                                     (node, size, root, self.node, signed.signature))
        return Witnessed(node, size, root, self.node, signed.signature)

    def witnessed(self, node: str | None = None) -> list[Witnessed]:
        """The peers' checkpoints this log's node co-signed and keeps."""
        query = "SELECT node, size, root, signer, signature FROM witnessed"
        rows = (self._connection.execute(query + " WHERE node = ? ORDER BY size", (node,))
                if node is not None else self._connection.execute(query + " ORDER BY node, size"))
        return [Witnessed(*row) for row in rows]
