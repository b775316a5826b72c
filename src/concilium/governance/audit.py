"""The audit log: append-only, hash-chained, signed entries in SQLite, with
Merkle checkpoints (RFC 6962) that peers co-sign.

Entry ``i`` stores its kind (``proposal``, ``approval``, ``run_start``,
``input_commitment``, ``policy_decision``, ``result``, ``run_end``, ``abort``,
...), a JSON body, the previous entry's hash, its own hash (SHA-256 of the
canonical JSON of index, time, kind, body and previous hash) and the node's
Ed25519 signature of that hash. :func:`verify_log` recomputes everything and
names the first bad index: an edited entry breaks its hash, a deleted or
inserted one the index sequence or the chain, a reordered one both.

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

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from concilium.errors import AuditError, ConfigurationError
from concilium.governance.approval import public_key
from concilium.governance.spec import canonical_json

if TYPE_CHECKING:
    from concilium.governance.audit_events import AuditEvent

__all__ = ["AuditEntry", "AuditLog", "Checkpoint", "Witnessed", "checkpoint_message",
           "commitment", "cosign",
           "load_witnessed", "merkle_root", "verify_against", "verify_log", "verify_records"]

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


def commitment(data: bytes) -> str:
    """A SHA-256 commitment to data (for input commitments): the hash, never the data."""
    return hashlib.sha256(data).hexdigest()


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


def _entry_hash(index: int, time: str, kind: str, body: str, previous: str) -> str:
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

    def __init__(self, path: str | Path, node: str, key: ed25519.Ed25519PrivateKey) -> None:
        self.path = Path(path)
        self.node = node
        self._key = key
        self._connection = sqlite3.connect(self.path, check_same_thread=False)
        self._lock = threading.Lock()  # appends from several threads stay one chain
        self._connection.executescript(_SCHEMA)
        mine = "ed25519:" + key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()
        stored = dict(self._connection.execute("SELECT key, value FROM meta").fetchall())
        if stored and (stored.get("node") != node or stored.get("public_key") != mine):
            raise ConfigurationError(f"{self.path} is the audit log of {stored.get('node')!r} "
                                     "under another key")
        with self._connection:
            self._connection.executemany("INSERT OR IGNORE INTO meta VALUES (?, ?)",
                                         [("node", node), ("public_key", mine)])

    def close(self) -> None:
        self._connection.close()

    def record(self, event: AuditEvent) -> AuditEntry:
        """Add an event (:mod:`concilium.governance.audit_events`): its kind and body."""
        return self.append(event.KIND, event.body())

    def append(self, kind: str, body: Mapping[str, Any],
               time: datetime.datetime | None = None) -> AuditEntry:
        """Add a signed entry chained to the last one (in one SQLite transaction)."""
        text = canonical_json(dict(body)).decode()
        when = (time or datetime.datetime.now(datetime.UTC)).isoformat(timespec="microseconds")
        with self._lock, self._connection:
            last = self._connection.execute(
                "SELECT position, hash FROM entries ORDER BY position DESC LIMIT 1").fetchone()
            index, previous = (0, GENESIS) if last is None else (last[0] + 1, last[1])
            digest = _entry_hash(index, when, kind, text, previous)
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


def verify_log(path: str | Path, signers: Mapping[str, str] | None = None,
               against: Sequence[Witnessed] = ()) -> int:
    """Check every entry and co-signed checkpoint; return the number of entries.

    ``signers`` maps node names to ``ed25519:`` public keys (from the manifest) to
    check the log's own key and the co-signers against. ``against``: checkpoints of
    this log that peers keep (:func:`load_witnessed`); a log shorter than one of
    them, or whose history differs, fails. Raises
    :class:`~concilium.errors.AuditError` naming the first bad index.
    """
    if not Path(path).is_file():
        raise AuditError(f"no audit log at {path}")
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        meta = dict(connection.execute("SELECT key, value FROM meta").fetchall())
        rows = connection.execute("SELECT * FROM entries ORDER BY position").fetchall()
        checkpoints = connection.execute("SELECT * FROM checkpoints").fetchall()
    except sqlite3.Error as error:
        raise AuditError(f"{path} is not a Concilium audit log ({error})") from None
    finally:
        connection.close()
    return verify_records(str(meta.get("node")), meta.get("public_key", ""), rows, checkpoints,
                          signers, against)


def verify_records(node: str, key_text: str, rows: Sequence[Sequence[Any]],
                   checkpoints: Sequence[Sequence[Any]],
                   signers: Mapping[str, str] | None = None,
                   against: Sequence[Witnessed] = ()) -> int:
    """What :func:`verify_log` checks, on a log's records wherever they come from (its
    SQLite file, or an auditor's bundle: :mod:`concilium.governance.audit_bundle`):
    ``rows`` are (index, time, kind, body as JSON text, previous hash, hash,
    signature) in order, ``checkpoints`` (size, root, signer, signature), ``key_text``
    the log's ``ed25519:`` key. Returns the number of entries; raises AuditError
    naming the first bad index."""
    if signers is not None and signers.get(str(node)) != key_text:
        raise AuditError(f"the log's key is not {node!r}'s key in the manifest", index=None)
    key = public_key(key_text)
    previous = GENESIS
    hashes = []
    for expected, (position, time, kind, body, prior, digest, signature) in enumerate(rows):
        if position != expected:
            raise AuditError(f"entry {expected} is missing (the next entry is {position}): "
                             "entries were deleted or reordered", index=expected)
        if prior != previous:
            raise AuditError(f"entry {expected} does not chain to entry {expected - 1}: "
                             "entries were deleted, inserted or reordered", index=expected)
        if _entry_hash(position, time, kind, body, prior) != digest:
            raise AuditError(f"entry {expected} was edited (its hash does not match)",
                             index=expected)
        try:
            key.verify(bytes.fromhex(signature), bytes.fromhex(digest))
        except (InvalidSignature, ValueError):
            raise AuditError(f"entry {expected} has a bad signature", index=expected) from None
        previous = digest
        hashes.append(digest)
    for size, root, signer, signature in checkpoints:
        if size > len(hashes) or merkle_root(hashes[:size]) != root:
            raise AuditError(f"the checkpoint at {size} entries co-signed by {signer!r} does "
                             "not match the log: its history was rewritten",
                             index=min(size, len(hashes)))
        if signers is not None:
            try:
                public_key(signers[signer]).verify(bytes.fromhex(signature),
                                                   checkpoint_message(size, root))
            except (KeyError, InvalidSignature, ValueError):
                raise AuditError(f"the checkpoint at {size} entries has a bad co-signature "
                                 f"from {signer!r}", index=size) from None
    verify_against(node, hashes, against, signers)
    return len(hashes)


def verify_against(node: str, hashes: Sequence[str], against: Sequence[Witnessed],
                   signers: Mapping[str, str] | None = None) -> None:
    """The log (its entry hashes) agrees with every checkpoint of it that peers keep:
    it is at least that long and has that history."""
    for held in against:
        if held.node != node:
            continue
        if signers is not None:
            try:
                public_key(signers[held.signer]).verify(bytes.fromhex(held.signature),
                                                        checkpoint_message(held.size,
                                                                            held.root))
            except (KeyError, InvalidSignature, ValueError):
                raise AuditError(f"the checkpoint of {held.size} entries said to be kept by "
                                 f"{held.signer!r} is not signed by it") from None
        if held.size > len(hashes):
            raise AuditError(f"{held.signer!r} keeps a checkpoint of {held.size} entries of "
                             f"{node!r}'s log, which now has {len(hashes)}: its tail was cut",
                             index=len(hashes))
        if merkle_root(hashes[:held.size]) != held.root:
            raise AuditError(f"the first {held.size} entries of {node!r}'s log are not the "
                             f"ones {held.signer!r} co-signed: its history was rewritten",
                             index=held.size)


def load_witnessed(path: str | Path, node: str | None = None) -> list[Witnessed]:
    """The checkpoints a peer keeps: its audit log (SQLite) or a JSON export of them
    (``GET /audit/witnessed``); only ``node``'s if given."""
    file = Path(path)
    if not file.is_file():
        raise AuditError(f"no file of peer checkpoints at {path}")
    if file.read_bytes()[:16] == b"SQLite format 3\x00":
        connection = sqlite3.connect(f"file:{file}?mode=ro", uri=True)
        try:
            rows = connection.execute(
                "SELECT node, size, root, signer, signature FROM witnessed").fetchall()
        except sqlite3.Error as error:
            raise AuditError(f"{path} holds no peer checkpoints ({error})") from None
        finally:
            connection.close()
        held = [Witnessed(*row) for row in rows]
    else:
        try:
            data = json.loads(file.read_text())
        except (ValueError, UnicodeDecodeError) as error:
            raise AuditError(f"{path} is neither an audit log nor JSON: {error}") from None
        if not isinstance(data, list):
            raise AuditError(f"{path}: expected a JSON list of checkpoints")
        held = [Witnessed.from_dict(item) for item in data]
    return [w for w in held if node is None or w.node == node]
