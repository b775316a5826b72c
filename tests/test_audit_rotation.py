"""A node's signing key rotates and its audit log records which key signed what: a
``signing_key_rotated`` entry, signed by the old key, hands the log to the new key.
Entries from before the rotation still verify; an entry signed by the wrong key, an
edited or forged rotation, or a log reopened under a key it never handed over to
fails, naming the entry."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from concilium.errors import AuditError, ConfigurationError
from concilium.governance import audit_events as events
from concilium.governance.audit import ROTATED, AuditLog, cosign, entry_hash, key_text
from concilium.governance.audit_bundle import export_bundle, verify_bundle
from concilium.governance.audit_verify import verify_log
from concilium.governance.consortium import Manifest
from concilium.governance.identity import load_signing_key
from tests.helpers_tls import make_consortium


def _key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


def _rotated_log(path: Path) -> tuple[ed25519.Ed25519PrivateKey, ed25519.Ed25519PrivateKey]:
    """alpha's log: two entries under the old key, the rotation (entry 2), two under
    the new key."""
    old, new = _key(), _key()
    log = AuditLog(path, "alpha", old)
    log.record(events.Proposal("c1", {"query": "SELECT 1"}, "alpha"))
    log.record(events.Retry("c1"))
    rotation = log.rotate_key(new, "amendment-1")
    assert (rotation.index, rotation.kind) == (2, ROTATED)
    assert rotation.body == {"old_key": key_text(old), "new_key": key_text(new),
                             "amendment": "amendment-1"}
    log.record(events.Retry("c2"))
    log.record(events.Retry("c3"))
    assert log.key_in_force() == key_text(new)
    log.close()
    return old, new


def _forge(path: Path, kind: str, body: str, key: ed25519.Ed25519PrivateKey) -> None:
    """Append a correctly chained entry signed by ``key`` (what someone holding that
    key and write access to the file could do)."""
    with sqlite3.connect(path) as connection:
        index, previous = connection.execute(
            "SELECT position, hash FROM entries ORDER BY position DESC LIMIT 1").fetchone()
        time = "2026-12-04T00:00:00.000000+00:00"
        digest = entry_hash(index + 1, time, kind, body, previous)
        connection.execute("INSERT INTO entries VALUES (?, ?, ?, ?, ?, ?, ?)",
                           (index + 1, time, kind, body, previous, digest,
                            key.sign(bytes.fromhex(digest)).hex()))


def test_entries_on_both_sides_of_a_rotation_verify_under_the_key_in_force(
        tmp_path: Path) -> None:
    path = tmp_path / "audit.sqlite"
    old, new = _rotated_log(path)
    assert verify_log(path) == 5
    assert verify_log(path, {"alpha": (key_text(new), key_text(old))}) == 5
    # the manifest after the rotation names only the new key: it is one of the log's
    assert verify_log(path, {"alpha": key_text(new)}) == 5
    with pytest.raises(AuditError, match="none of the log's keys is 'alpha''s key"):
        verify_log(path, {"alpha": key_text(_key())})


def test_an_entry_signed_by_the_old_key_after_the_rotation_fails_naming_it(
        tmp_path: Path) -> None:
    path = tmp_path / "audit.sqlite"
    old, _ = _rotated_log(path)
    _forge(path, "retry", '{"computation_id":"c4"}', old)
    with pytest.raises(AuditError, match="entry 5 has a bad signature") as caught:
        verify_log(path)
    assert caught.value.index == 5


def test_an_edited_rotation_entry_fails_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "audit.sqlite"
    _rotated_log(path)
    thief = key_text(_key())
    with sqlite3.connect(path) as connection:
        body = connection.execute("SELECT body FROM entries WHERE position = 2").fetchone()[0]
        edited = {**json.loads(body), "new_key": thief}
        connection.execute("UPDATE entries SET body = ? WHERE position = 2",
                           (json.dumps(edited),))
    with pytest.raises(AuditError, match="entry 2 was edited") as caught:
        verify_log(path)
    assert caught.value.index == 2


def test_a_rotation_forged_under_the_old_key_cannot_take_the_log_over(
        tmp_path: Path) -> None:
    """Whoever stole the old key cannot sign later entries: after the real rotation
    the old key is no longer in force, so its own 'rotation' is refused."""
    path = tmp_path / "audit.sqlite"
    old, _ = _rotated_log(path)
    thief = _key()
    body = json.dumps({"amendment": "", "new_key": key_text(thief), "old_key": key_text(old)})
    _forge(path, ROTATED, body, old)
    with pytest.raises(AuditError, match="entry 5 has a bad signature"):
        verify_log(path)


def test_a_rotation_of_a_key_not_in_force_fails(tmp_path: Path) -> None:
    path = tmp_path / "audit.sqlite"
    _, new = _rotated_log(path)
    body = json.dumps({"amendment": "", "new_key": key_text(_key()),
                       "old_key": key_text(_key())})
    _forge(path, ROTATED, body, new)
    with pytest.raises(AuditError, match="entry 5 rotates a signing key that was not the "
                                         "log's key in force"):
        verify_log(path)


def test_the_log_refuses_an_old_key_and_a_rotation_by_append(tmp_path: Path) -> None:
    path = tmp_path / "audit.sqlite"
    old, new = _rotated_log(path)
    with pytest.raises(ConfigurationError, match="under another key"):
        AuditLog(path, "alpha", old)
    log = AuditLog(path, "alpha", new)
    with pytest.raises(AuditError, match="logged by rotate_key"):
        log.append(ROTATED, {"old_key": key_text(new), "new_key": key_text(_key()),
                             "amendment": ""})
    assert len(log.entries()) == 5  # nothing appended
    log.close()


def test_a_node_that_stopped_mid_rotation_hands_its_log_over_at_start(
        tmp_path: Path) -> None:
    """The new key file is in place but the rotation was never logged: opening the log
    with the previous keys at hand logs the hand-over (amendment '')."""
    path = tmp_path / "audit.sqlite"
    old, new = _key(), _key()
    AuditLog(path, "alpha", old).record(events.Retry("c1"))
    log = AuditLog(path, "alpha", new, previous_keys=[_key(), old])
    last = log.entries()[-1]
    assert (last.kind, last.body["old_key"], last.body["new_key"], last.body["amendment"]) == (
        ROTATED, key_text(old), key_text(new), "")
    log.record(events.Retry("c2"))
    log.close()
    assert verify_log(path, {"alpha": key_text(new)}) == 3


def test_a_peer_cosignature_under_a_retired_key_verifies_up_to_its_retirement(
        tmp_path: Path) -> None:
    """bravo co-signed alpha's log under its old key, then rotated: the amendment in
    alpha's log (entry 1) retires the old key. Its co-signature of one entry verifies;
    one of a later checkpoint under the old key does not."""
    path = tmp_path / "audit.sqlite"
    alpha, bravo_old, bravo_new = _key(), _key(), _key()
    log = AuditLog(path, "alpha", alpha)
    log.record(events.Retry("c1"))
    log.add_cosignature(cosign(*log.checkpoint(), "bravo", bravo_old))
    log.record(events.ManifestAmended("a1", "b" * 64, "c" * 64, "rotation",
                                      "bravo rotates its signing key", ["bravo"],
                                      {"bravo": key_text(bravo_old)}))
    log.add_cosignature(cosign(*log.checkpoint(), "bravo", bravo_new))
    current = {"alpha": key_text(alpha), "bravo": key_text(bravo_new)}
    assert verify_log(path, current, own_amendments=True) == 2
    # an auditor holding both manifests passes both keys instead
    assert verify_log(path, {**current, "bravo": (key_text(bravo_new),
                                                  key_text(bravo_old))}) == 2
    with pytest.raises(AuditError, match=r"bad co-signature from 'bravo'.*manifests from "
                                         r"before and after") as caught:
        verify_log(path, current)
    assert caught.value.index == 1
    log.record(events.Retry("c2"))
    log.add_cosignature(cosign(*log.checkpoint(), "bravo", bravo_old))  # after retirement
    log.close()
    with pytest.raises(AuditError, match="checkpoint at 3 entries has a bad co-signature"):
        verify_log(path, current, own_amendments=True)


def test_a_bundle_of_a_rotated_log_verifies_with_the_manifests_of_both_keys(
        tmp_path: Path) -> None:
    consortium = make_consortium(tmp_path / "nodes")
    alpha, bravo, _ = consortium.nodes
    old, new = load_signing_key(alpha), _key()
    log_path = alpha.directory / "audit.sqlite"
    log = AuditLog(log_path, "alpha", old)
    log.record(events.Retry("c1"))
    log.add_cosignature(cosign(*log.checkpoint(), "bravo", load_signing_key(bravo)))
    rotated = dataclasses.replace(consortium.manifest, parties=tuple(
        dataclasses.replace(p, signing_key=key_text(new)) if p.name == "alpha" else p
        for p in consortium.manifest.parties))
    log.record(events.ManifestAmended("a1", consortium.manifest.hash, rotated.hash,
                                      "rotation", "alpha rotates its signing key", ["alpha"],
                                      {"alpha": key_text(old)}))
    log.rotate_key(new, "a1")
    log.record(events.Retry("c2"))
    log.close()

    report = verify_bundle(export_bundle(log_path, rotated))  # its own (new) manifest
    assert (report.entries, report.keys, report.log_keys) == (
        4, "bundled", (key_text(old), key_text(new)))
    assert any("rotated its signing key 1 time(s)" in note for note in report.notes)
    both: list[Manifest] = [consortium.manifest, rotated]
    assert verify_bundle(export_bundle(log_path), manifest=both).entries == 4
    assert verify_bundle(export_bundle(log_path), manifest=rotated).entries == 4
    stranger = dataclasses.replace(rotated, parties=tuple(
        dataclasses.replace(p, signing_key=key_text(_key())) if p.name == "alpha" else p
        for p in rotated.parties))
    with pytest.raises(AuditError, match="none of the log's keys"):
        verify_bundle(export_bundle(log_path), manifest=stranger)
