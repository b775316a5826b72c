"""An auditor's bundle of one node's audit log: a self-contained JSON file that is
verified on another machine, with no node directory.

``export_bundle`` reads a node's ``audit.sqlite`` (read-only, one consistent
snapshot, while the node runs) into::

    {"format": "concilium-audit-bundle", "version": 1, "exported": TIME,
     "node": NAME, "public_key": "ed25519:...",        # the log's own key
     "entries": [{"index", "time", "kind", "body", "previous", "hash", "signature"}],
     "checkpoints": [{"size", "root", "signer", "signature"}],  # the peers' co-signatures
     "witnessed": [{"node", "size", "root", "signer", "signature"}],  # what it keeps
     "manifest": {...} | null, "manifest_hash": HEX | null}  # the consortium's manifest

``verify_bundle`` runs the checks of :func:`concilium.governance.audit_verify.verify_log`
(:func:`~concilium.governance.audit.verify_records`) on the bundle's entries: the
hash chain, every entry's signature under the node's key, every checkpoint's Merkle
root against the entries and, under the co-signer's key from the bundled manifest
(or one the auditor holds), every co-signature; then the signatures of the
checkpoints of other nodes' logs it keeps. An edited, deleted or inserted entry
fails naming the first bad index; an altered co-signature names its checkpoint.

A bundle proves its log consistent under the keys it carries: an auditor who
wants to know the keys are the consortium's compares the manifest hash (which
every proposal's spec names as ``consortium``) or verifies with their own copy of
the manifest (``signers``).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import sqlite3
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from concilium.errors import AuditError, ConciliumError
from concilium.governance.audit import Witnessed, checkpoint_message
from concilium.governance.audit_verify import (
    Signers,
    load_witnessed,
    log_keys,
    signed_by_any,
    verify_records,
)
from concilium.governance.consortium import Manifest
from concilium.governance.spec import canonical_json

__all__ = ["FORMAT", "VERSION", "BundleReport", "export_bundle", "is_bundle", "load_bundle",
           "signers_of", "verify_bundle", "witnessed_of", "write_bundle"]

FORMAT = "concilium-audit-bundle"
VERSION = 1
_SQLITE = b"SQLite format 3\x00"


def export_bundle(log_path: str | Path, manifest: Manifest | None = None) -> dict[str, Any]:
    """The bundle of the audit log at ``log_path`` (SQLite), with ``manifest`` if given."""
    path = Path(log_path)
    if not path.is_file():
        raise AuditError(f"no audit log at {path}")
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        connection.execute("BEGIN")  # one snapshot, whatever the node appends meanwhile
        meta = dict(connection.execute("SELECT key, value FROM meta").fetchall())
        rows = connection.execute("SELECT position, time, kind, body, previous, hash, "
                                  "signature FROM entries ORDER BY position").fetchall()
        checkpoints = connection.execute("SELECT size, root, signer, signature FROM "
                                         "checkpoints ORDER BY size, signer").fetchall()
        witnessed = connection.execute("SELECT node, size, root, signer, signature FROM "
                                       "witnessed ORDER BY node, size").fetchall()
        connection.execute("COMMIT")
    except sqlite3.Error as error:
        raise AuditError(f"{path} is not a Concilium audit log ({error})") from None
    finally:
        connection.close()
    entries = []
    for position, time, kind, body, previous, digest, signature in rows:
        try:
            content = json.loads(body)
        except ValueError:
            raise AuditError(f"entry {position} of {path} has a body that is not JSON",
                             index=position) from None
        entries.append({"index": position, "time": time, "kind": kind, "body": content,
                        "previous": previous, "hash": digest, "signature": signature})
    return {
        "format": FORMAT, "version": VERSION,
        "exported": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "node": meta.get("node"), "public_key": meta.get("public_key"),
        "entries": entries,
        "checkpoints": [{"size": s, "root": r, "signer": n, "signature": g}
                        for s, r, n, g in checkpoints],
        "witnessed": [Witnessed(*row).as_dict() for row in witnessed],
        "manifest": None if manifest is None else manifest.as_dict(),
        "manifest_hash": None if manifest is None else manifest.hash,
    }


def write_bundle(log_path: str | Path, out: str | Path,
                 manifest: Manifest | None = None) -> dict[str, Any]:
    """Export the log at ``log_path`` to the file ``out`` (written whole or not at
    all); the bundle."""
    bundle = export_bundle(log_path, manifest)
    target = Path(out)
    text = json.dumps(bundle, indent=1, sort_keys=True, allow_nan=False) + "\n"
    handle, temporary = tempfile.mkstemp(dir=target.parent,
                                         prefix=f".{target.name}.")
    try:
        with os.fdopen(handle, "w") as sink:
            sink.write(text)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return bundle


def _read(path: str | Path) -> Any:
    file = Path(path)
    if not file.is_file():
        raise AuditError(f"no file at {path}")
    data = file.read_bytes()
    if data[:16] == _SQLITE:
        return None
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None


def is_bundle(path: str | Path) -> bool:
    """Whether the file is an audit bundle (by its content, not its name)."""
    data = _read(path)
    return isinstance(data, dict) and data.get("format") == FORMAT


def load_bundle(path: str | Path) -> dict[str, Any]:
    """The bundle in the file (AuditError if it is not one)."""
    data = _read(path)
    if not (isinstance(data, dict) and data.get("format") == FORMAT):
        raise AuditError(f"{path} is not an audit bundle ('concilium audit export')")
    if data.get("version") != VERSION:
        raise AuditError(f"{path} is an audit bundle of version {data.get('version')!r}; "
                         f"this Concilium reads version {VERSION}")
    return data


def witnessed_of(path: str | Path) -> list[Witnessed]:
    """The checkpoints a peer keeps, from its bundle, its audit log or their JSON export."""
    if is_bundle(path):
        items = load_bundle(path).get("witnessed")
        if not isinstance(items, list):
            raise AuditError(f"{path}: the bundle's witnessed checkpoints are not a list")
        return [Witnessed.from_dict(item) for item in items]
    return load_witnessed(path)


@dataclass(frozen=True)
class BundleReport:
    """What a verified bundle holds."""

    node: str
    public_key: str  # the log's first key
    entries: int
    checkpoints: int
    cosigners: tuple[str, ...]
    witnessed: int
    manifest_hash: str | None  # of the manifest whose keys were used (None: none)
    keys: str  # "bundled" (the bundle's own manifest), "given" (the auditor's), "none"
    against: int = 0
    notes: tuple[str, ...] = field(default=())
    log_keys: tuple[str, ...] = field(default=())  # the keys that signed it, in order


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"its {what} is not a string")
    return value


def _count(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"its {what} is not an integer")
    return value


def _rows(entries: Any) -> list[tuple[Any, ...]]:
    if not isinstance(entries, list):
        raise AuditError("the bundle's entries are not a list")
    rows = []
    for position, entry in enumerate(entries):
        try:
            if not isinstance(entry, dict):
                raise TypeError("it is not an object")
            rows.append((_count(entry.get("index"), "index"), _text(entry.get("time"), "time"),
                         _text(entry.get("kind"), "kind"),
                         canonical_json(entry.get("body")).decode(),
                         _text(entry.get("previous"), "previous hash"),
                         _text(entry.get("hash"), "hash"),
                         _text(entry.get("signature"), "signature")))
        except (TypeError, ConciliumError) as error:
            raise AuditError(f"entry {position} of the bundle is malformed: {error}",
                             index=position) from None
    return rows


def _checkpoints(items: Any) -> list[tuple[int, str, str, str]]:
    if not isinstance(items, list):
        raise AuditError("the bundle's checkpoints are not a list")
    found = []
    for position, item in enumerate(items):
        try:
            if not isinstance(item, dict):
                raise TypeError("it is not an object")
            found.append((_count(item.get("size"), "size"), _text(item.get("root"), "root"),
                          _text(item.get("signer"), "signer"),
                          _text(item.get("signature"), "signature")))
        except TypeError as error:
            raise AuditError(f"checkpoint {position} of the bundle is malformed: {error}"
                             ) from None
    return sorted(found)


def _bundled_signers(bundle: Mapping[str, Any]) -> tuple[dict[str, str] | None, str | None]:
    """The bundled manifest's signing keys and its hash (recomputed), or (None, None)."""
    manifest = bundle.get("manifest")
    if manifest is None:
        return None, None
    try:
        parties = manifest["party"]
        signers = {str(p["name"]): str(p["signing_key"]) for p in parties}
        digest = hashlib.sha256(canonical_json(manifest)).hexdigest()
    except (KeyError, TypeError, ConciliumError) as error:
        raise AuditError(f"the bundle's manifest is malformed: {error}") from None
    if bundle.get("manifest_hash") not in (None, digest):
        raise AuditError("the bundle's manifest does not match the manifest hash it states: "
                         "it was edited")
    return signers, digest


def signers_of(manifests: Sequence[Manifest]) -> dict[str, tuple[str, ...]]:
    """Every signing key each party holds in any of ``manifests`` (an auditor's copies
    from before and after a key rotation)."""
    found: dict[str, list[str]] = {}
    for manifest in manifests:
        for party in manifest.parties:
            keys = found.setdefault(party.name, [])
            if party.signing_key not in keys:
                keys.append(party.signing_key)
    return {name: tuple(keys) for name, keys in found.items()}


def verify_bundle(bundle: Mapping[str, Any] | str | Path, *,
                  manifest: Manifest | Sequence[Manifest] | None = None,
                  against: Sequence[Witnessed] = ()) -> BundleReport:
    """Verify a bundle (or the bundle file): see the module docstring. ``manifest``:
    the auditor's own copy (or copies: from before and after a key rotation), whose
    keys are used instead of the bundled ones; ``against``: checkpoints of this log
    that peers keep (:func:`witnessed_of`). Raises AuditError naming the first bad
    entry or checkpoint."""
    data = load_bundle(bundle) if isinstance(bundle, str | Path) else bundle
    node, key_text = data.get("node"), data.get("public_key")
    if not isinstance(node, str) or not isinstance(key_text, str):
        raise AuditError("the bundle names no node or no public key")
    given = [manifest] if isinstance(manifest, Manifest) else list(manifest or [])
    notes = []
    rows = _rows(data.get("entries"))
    bundled, bundled_hash = _bundled_signers(data)
    manifest_hash: str | None
    signers: Signers | None
    if given:
        signers = signers_of(given)
        manifest_hash, keys = given[-1].hash, "given"
        if bundled_hash is not None and bundled_hash not in {m.hash for m in given}:
            notes.append(f"the bundle carries another manifest ({bundled_hash[:16]}...) "
                         "than the one given")
    else:
        manifest_hash, keys = bundled_hash, "bundled"
        signers = bundled
        if bundled is None:
            keys = "none"
            notes.append("the bundle holds no manifest: the co-signatures were not checked "
                         "(export it with --manifest, or verify with --manifest)")
    checkpoints = _checkpoints(data.get("checkpoints"))
    count = verify_records(node, key_text, rows, checkpoints, signers, against,
                           own_amendments=keys == "bundled")
    held = data.get("witnessed") or []
    if not isinstance(held, list):
        raise AuditError("the bundle's witnessed checkpoints are not a list")
    own = log_keys(key_text, rows)
    for item in held:
        witnessed = Witnessed.from_dict(item)
        if witnessed.signer != node or not signed_by_any(
                own, witnessed.signature, checkpoint_message(witnessed.size, witnessed.root)):
            raise AuditError(f"the checkpoint of {witnessed.node!r}'s log at "
                             f"{witnessed.size} entries that {node!r} keeps is not signed "
                             f"by {node!r}")
    if len(own) > 1:
        notes.append(f"{node} rotated its signing key {len(own) - 1} time(s); every entry "
                     "verified under the key in force when it was signed")
    return BundleReport(node, key_text, count, len(checkpoints),
                        tuple(sorted({c[2] for c in checkpoints})), len(held), manifest_hash,
                        keys, len([w for w in against if w.node == node]), tuple(notes),
                        tuple(own))

