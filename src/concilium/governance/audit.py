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
history without its peers' signatures failing.

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
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from concilium.errors import AuditError, ConfigurationError
from concilium.governance.approval import public_key
from concilium.governance.spec import canonical_json

__all__ = ["AuditEntry", "AuditLog", "Checkpoint", "commitment", "cosign", "merkle_root",
           "verify_log"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS entries (
    position INTEGER PRIMARY KEY, time TEXT NOT NULL, kind TEXT NOT NULL,
    body TEXT NOT NULL, previous TEXT NOT NULL, hash TEXT NOT NULL, signature TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS checkpoints (
    size INTEGER NOT NULL, root TEXT NOT NULL, signer TEXT NOT NULL, signature TEXT NOT NULL,
    PRIMARY KEY (size, signer));
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


def _checkpoint_message(size: int, root: str) -> bytes:
    return canonical_json({"checkpoint": {"size": size, "root": root}})


def cosign(size: int, root: str, signer: str, key: ed25519.Ed25519PrivateKey) -> Checkpoint:
    """A peer's signature over a checkpoint it has recomputed itself."""
    return Checkpoint(size, root, signer, key.sign(_checkpoint_message(size, root)).hex())


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

    def checkpoint(self) -> tuple[int, str]:
        """(size, Merkle root) of the log now, for peers to recompute and co-sign."""
        hashes = [e.hash for e in self.entries()]
        return len(hashes), merkle_root(hashes)

    def checkpoints(self) -> list[Checkpoint]:
        return [Checkpoint(*row) for row in self._connection.execute(
            "SELECT size, root, signer, signature FROM checkpoints ORDER BY size, signer")]

    def add_cosignature(self, checkpoint: Checkpoint) -> None:
        with self._connection:
            self._connection.execute("INSERT OR REPLACE INTO checkpoints VALUES (?, ?, ?, ?)",
                                     (checkpoint.size, checkpoint.root, checkpoint.signer,
                                      checkpoint.signature))


def verify_log(path: str | Path, signers: Mapping[str, str] | None = None) -> int:
    """Check every entry and co-signed checkpoint; return the number of entries.

    ``signers`` maps node names to ``ed25519:`` public keys (from the manifest) to
    check the log's own key and the co-signers against. Raises
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
    node, key_text = meta.get("node"), meta.get("public_key", "")
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
                                                   _checkpoint_message(size, root))
            except (KeyError, InvalidSignature, ValueError):
                raise AuditError(f"the checkpoint at {size} entries has a bad co-signature "
                                 f"from {signer!r}", index=size) from None
    return len(hashes)
