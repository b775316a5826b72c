"""Verifying an audit log (:mod:`concilium.governance.audit`): its hash chain, every
entry's signature under the key in force when it was signed (the log's first key,
then the new key of each ``signing_key_rotated`` entry), its co-signed Merkle
checkpoints, and the checkpoints of it that peers keep. Every check names the
first bad index in an :class:`~concilium.errors.AuditError`.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature

from concilium.errors import AuditError, ConfigurationError
from concilium.governance.approval import public_key
from concilium.governance.audit import (
    GENESIS,
    ROTATED,
    Witnessed,
    checkpoint_message,
    entry_hash,
    merkle_root,
)
from concilium.governance.audit_events import ManifestAmended

__all__ = ["Signers", "load_witnessed", "log_keys", "retired_keys", "signed_by_any",
           "verify_against", "verify_log", "verify_records"]

#: who signed what: a node's current key, or every key it has held
Signers = Mapping[str, str | Sequence[str]]


def retired_keys(rows: Sequence[Sequence[Any]]) -> dict[str, dict[str, int]]:
    """signer -> key -> the last size it may co-sign: the signing keys that the log's
    ``manifest_amended`` entries say an amendment replaced (a rotation, a revocation)
    or removed (a member leaving). A key replaced at entry ``i`` signed checkpoints of
    at most ``i`` entries (the node refuses it from then on), so those still verify
    and later ones do not. Read from the log itself: a node trusts the amendments in
    its own log (it checked their signatures before applying them); an auditor who
    holds the manifests passes them instead."""
    found: dict[str, dict[str, int]] = {}
    for row in rows:
        if row[2] != ManifestAmended.KIND:
            continue
        try:
            replaced = dict(json.loads(row[3]).get("replaced_keys") or {})
        except (ValueError, TypeError, AttributeError):
            continue
        for name, key in replaced.items():
            found.setdefault(str(name), {}).setdefault(str(key), int(row[0]))
    return found


def _histories(signers: Signers) -> dict[str, tuple[str, ...]]:
    return {name: (keys,) if isinstance(keys, str) else tuple(keys)
            for name, keys in signers.items()}


def signed_by_any(keys: Sequence[str], signature: str, message: bytes) -> bool:
    """Whether any of ``keys`` made ``signature`` over ``message``."""
    for key in keys:
        try:
            public_key(key).verify(bytes.fromhex(signature), message)
        except (InvalidSignature, ValueError):
            continue
        return True
    return False


def _cosigned(histories: Mapping[str, Sequence[str]], retired: Mapping[str, Mapping[str, int]],
              signer: str, size: int, root: str, signature: str) -> bool:
    """Whether ``signer`` co-signed the checkpoint of ``size`` entries with ``root``:
    under a key it is known to hold, or under one it held until entry ``size`` of the
    log or later (:func:`retired_keys`)."""
    keys = [*histories.get(signer, ()),
            *(key for key, last in retired.get(signer, {}).items() if size <= last)]
    return signed_by_any(keys, signature, checkpoint_message(size, root))


def verify_log(path: str | Path, signers: Signers | None = None,
               against: Sequence[Witnessed] = (), *, own_amendments: bool = False) -> int:
    """Check every entry and co-signed checkpoint; return the number of entries.

    ``signers`` maps node names to ``ed25519:`` public keys (from the manifest), or to
    every key each has held (its key history), to check the log's own keys and the
    co-signers against. ``against``: checkpoints of this log that peers keep
    (:func:`load_witnessed`); a log shorter than one of them, or whose history
    differs, fails. ``own_amendments``: also accept the co-signatures made under keys
    that the log's own ``manifest_amended`` entries retired, up to the entry that
    retired them (:func:`retired_keys`; a node verifying its own log). Raises
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
                          signers, against, own_amendments=own_amendments)


def log_keys(first_key: str, rows: Sequence[Sequence[Any]]) -> list[str]:
    """The keys that signed a log, in order: its first key, then the new key of each
    ``signing_key_rotated`` entry (not checked here: :func:`verify_records` does)."""
    keys = [first_key]
    for row in rows:
        if row[2] == ROTATED:
            try:
                keys.append(str(json.loads(row[3])["new_key"]))
            except (ValueError, KeyError, TypeError):
                continue
    return keys


def _rotation(body: str, key: str, index: int) -> str:
    """The new key of a ``signing_key_rotated`` entry whose old key is ``key``."""
    try:
        data = json.loads(body)
        old, new = str(data["old_key"]), str(data["new_key"])
        public_key(new)
    except (ValueError, KeyError, TypeError, ConfigurationError):
        raise AuditError(f"entry {index} rotates the signing key to no valid key",
                         index=index) from None
    if old != key:
        raise AuditError(f"entry {index} rotates a signing key that was not the log's key "
                         "in force", index=index)
    return new


def verify_records(node: str, key_text: str, rows: Sequence[Sequence[Any]],
                   checkpoints: Sequence[Sequence[Any]],
                   signers: Signers | None = None,
                   against: Sequence[Witnessed] = (), *, own_amendments: bool = False) -> int:
    """What :func:`verify_log` checks, on a log's records wherever they come from (its
    SQLite file, or an auditor's bundle: :mod:`concilium.governance.audit_bundle`):
    ``rows`` are (index, time, kind, body as JSON text, previous hash, hash,
    signature) in order, ``checkpoints`` (size, root, signer, signature), ``key_text``
    the log's first ``ed25519:`` key (each ``signing_key_rotated`` entry, signed by
    the key in force, hands over to the next); ``own_amendments`` as for
    :func:`verify_log`. Returns the number of entries; raises AuditError naming the
    first bad index."""
    histories = None if signers is None else _histories(signers)
    if histories is not None:
        known = set(histories.get(str(node), ()))
        if not known & set(log_keys(key_text, rows)):
            raise AuditError(f"none of the log's keys is {node!r}'s key in the manifest",
                             index=None)
    current = key_text
    key = public_key(current)
    previous = GENESIS
    hashes = []
    for expected, (position, time, kind, body, prior, digest, signature) in enumerate(rows):
        if position != expected:
            raise AuditError(f"entry {expected} is missing (the next entry is {position}): "
                             "entries were deleted or reordered", index=expected)
        if prior != previous:
            raise AuditError(f"entry {expected} does not chain to entry {expected - 1}: "
                             "entries were deleted, inserted or reordered", index=expected)
        if entry_hash(position, time, kind, body, prior) != digest:
            raise AuditError(f"entry {expected} was edited (its hash does not match)",
                             index=expected)
        try:
            key.verify(bytes.fromhex(signature), bytes.fromhex(digest))
        except (InvalidSignature, ValueError):
            raise AuditError(f"entry {expected} has a bad signature (not by the log's key "
                             f"in force, {current[:24]}...)", index=expected) from None
        if kind == ROTATED:
            current = _rotation(body, current, expected)
            key = public_key(current)
        previous = digest
        hashes.append(digest)
    retired = retired_keys(rows) if own_amendments else {}
    for size, root, signer, signature in checkpoints:
        if size > len(hashes) or merkle_root(hashes[:size]) != root:
            raise AuditError(f"the checkpoint at {size} entries co-signed by {signer!r} does "
                             "not match the log: its history was rewritten",
                             index=min(size, len(hashes)))
        if histories is not None and not _cosigned(histories, retired, signer, size, root,
                                                   signature):
            raise AuditError(f"the checkpoint at {size} entries has a bad co-signature "
                             f"from {signer!r} (under none of the keys {signer!r} is known "
                             "to have held; if it rotated its key or left, give the "
                             "manifests from before and after)", index=size)
    verify_against(node, hashes, against, signers, retired)
    return len(hashes)


def verify_against(node: str, hashes: Sequence[str], against: Sequence[Witnessed],
                   signers: Signers | None = None,
                   retired: Mapping[str, Mapping[str, int]] | None = None) -> None:
    """The log (its entry hashes) agrees with every checkpoint of it that peers keep:
    it is at least that long and has that history (each signed by its keeper under
    a key in ``signers``, or in ``retired`` up to that size)."""
    histories = None if signers is None else _histories(signers)
    for held in against:
        if held.node != node:
            continue
        if histories is not None and not _cosigned(histories, retired or {}, held.signer,
                                                   held.size, held.root, held.signature):
            raise AuditError(f"the checkpoint of {held.size} entries said to be kept by "
                             f"{held.signer!r} is not signed by it")
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
