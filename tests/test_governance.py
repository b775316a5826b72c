"""Computation specs, signed approvals and the audit log: the attacks must fail."""

from __future__ import annotations

import dataclasses
import datetime
import sqlite3
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from typer.testing import CliRunner

from concilium.cli import app
from concilium.errors import ApprovalMissing, AuditError, ConfigurationError
from concilium.governance.approval import (
    require_approvals,
    sign_approval,
    verify_approval,
)
from concilium.governance.audit import AuditLog, Checkpoint, commitment, cosign, merkle_root
from concilium.governance.audit_verify import load_witnessed, verify_log
from concilium.governance.consortium import Manifest
from concilium.governance.spec import ComputationSpec

NAMES = ("hospital-a", "hospital-b", "hospital-c")


SCHEMA = {"condition": {"type": "category", "domain": ["a", "b"]}}


def _spec(manifest: Manifest, **changes: object) -> ComputationSpec:
    spec = ComputationSpec(query="SELECT condition, COUNT(*) FROM admissions GROUP BY "
                                 "condition", datasets=("admissions-a", "admissions-b"),
                           consortium=manifest.hash, protocol="rep3",
                           recipients=("hospital-a",), analyst="dr-lee",
                           policy={"min_cohort": 10},
                           tables={"admissions-a": {"owners": ["hospital-a"], "schema": SCHEMA},
                                   "admissions-b": {"owners": ["hospital-b"], "schema": SCHEMA}},
                           approvers={"hospital-a": 2, "hospital-b": 1})
    return dataclasses.replace(spec, **changes)


def test_the_computation_id_covers_every_field(signing_consortium: tuple) -> None:
    manifest, _, _ = signing_consortium
    spec = _spec(manifest)
    assert len(spec.computation_id) == 64
    assert spec.computation_id == _spec(manifest).computation_id  # canonical
    assert spec.computation_id == dataclasses.replace(
        spec, datasets=("admissions-b", "admissions-a")).computation_id  # order-free sets
    for change in ({"query": spec.query + " "}, {"recipients": ("hospital-a", "hospital-b")},
                   {"policy": {"min_cohort": 5}}, {"analyst": "mallory"},
                   {"approvers": {"hospital-a": 1, "hospital-b": 1}},
                   {"tables": {**spec.tables, "admissions-b": {"owners": ["hospital-c"],
                                                                "schema": SCHEMA}}}):
        assert _spec(manifest, **change).computation_id != spec.computation_id
    with pytest.raises(ConfigurationError, match="at least one recipient"):
        _spec(manifest, recipients=())


def _approvals(manifest: Manifest, keys: dict, spec: ComputationSpec) -> list:
    return [sign_approval(spec, "approve", "officer-1", "hospital-a", keys["hospital-a"]),
            sign_approval(spec, "approve", "officer-2", "hospital-a", keys["hospital-a"]),
            sign_approval(spec, "approve", "officer-9", "hospital-b", keys["hospital-b"])]


def test_valid_approvals_let_the_run_proceed(signing_consortium: tuple) -> None:
    manifest, keys, _ = signing_consortium
    spec = _spec(manifest)
    require_approvals(spec, _approvals(manifest, keys, spec), manifest)


def test_a_forged_approval_is_refused(signing_consortium: tuple) -> None:
    manifest, keys, _ = signing_consortium
    spec = _spec(manifest)
    approvals = _approvals(manifest, keys, spec)
    # signed by hospital-c's key but claiming hospital-b
    forged = sign_approval(spec, "approve", "officer-9", "hospital-c", keys["hospital-c"])
    approvals[2] = dataclasses.replace(forged, node="hospital-b")
    with pytest.raises(ApprovalMissing, match="forged or damaged signature"):
        require_approvals(spec, approvals, manifest)
    outsider = ed25519.Ed25519PrivateKey.generate()
    with pytest.raises(ApprovalMissing, match="forged"):
        verify_approval(sign_approval(spec, "approve", "x", "hospital-a", outsider), manifest)
    tampered = dataclasses.replace(approvals[0], decision="approve", comment="edited")
    with pytest.raises(ApprovalMissing, match="forged"):
        verify_approval(tampered, manifest)


def test_missing_too_few_rejected_and_revoked_approvals_are_refused(
        signing_consortium: tuple) -> None:
    manifest, keys, _ = signing_consortium
    spec = _spec(manifest)
    approvals = _approvals(manifest, keys, spec)
    with pytest.raises(ApprovalMissing, match=r"needs 2 approval.*has 1"):
        require_approvals(spec, approvals[1:], manifest)
    with pytest.raises(ApprovalMissing, match=r"'hospital-b' \(owner of admissions-b\) needs 1"):
        require_approvals(spec, approvals[:2], manifest)
    rejected = sign_approval(spec, "reject", "officer-3", "hospital-a", keys["hospital-a"])
    with pytest.raises(ApprovalMissing, match="rejected by officer-3"):
        require_approvals(spec, [*approvals, rejected], manifest)
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(minutes=5)
    revoked = sign_approval(spec, "revoke", "officer-2", "hospital-a", keys["hospital-a"],
                            time=later)
    with pytest.raises(ApprovalMissing, match="officer-2 revoked"):
        require_approvals(spec, [*approvals, revoked], manifest)
    with pytest.raises(ApprovalMissing, match="names no approvers"):
        require_approvals(dataclasses.replace(spec, approvers={}), approvals, manifest)


def test_an_approval_cannot_be_reused_for_a_changed_spec(signing_consortium: tuple) -> None:
    manifest, keys, _ = signing_consortium
    spec = _spec(manifest)
    approvals = _approvals(manifest, keys, spec)
    changed = _spec(manifest, recipients=("hospital-a", "hospital-c"))
    with pytest.raises(ApprovalMissing, match="another computation: the spec changed"):
        require_approvals(changed, approvals, manifest)
    other = dataclasses.replace(spec, consortium="0" * 64)
    with pytest.raises(ApprovalMissing, match="another consortium"):
        require_approvals(other, approvals, manifest)


def _log(tmp_path: Path, keys: dict) -> Path:
    log = AuditLog(tmp_path / "audit.sqlite", "hospital-a", keys["hospital-a"])
    log.append("proposal", {"computation_id": "ab" * 32, "analyst": "dr-lee"})
    log.append("approval", {"approver": "officer-1", "decision": "approve"})
    log.append("input_commitment", {"dataset": "admissions-a", "rows": 1000,
                                    "hash": commitment(b"rows"), "schema_hash": "cd" * 32})
    log.append("run_end", {"result_hash": "ef" * 32, "recipients": ["hospital-a"]})
    size, root = log.checkpoint()
    for peer in ("hospital-b", "hospital-c"):
        log.add_cosignature(cosign(size, root, peer, keys[peer]))
    log.append("abort", {"reason": "peer unavailable"})
    log.close()
    return tmp_path / "audit.sqlite"


def _signers(manifest: Manifest) -> dict[str, str]:
    return {p.name: p.signing_key for p in manifest.parties}


def test_the_audit_log_verifies_and_refuses_another_key(signing_consortium: tuple,
                                                        tmp_path: Path) -> None:
    manifest, keys, _ = signing_consortium
    path = _log(tmp_path, keys)
    assert verify_log(path, _signers(manifest)) == 5
    with pytest.raises(ConfigurationError, match="under another key"):
        AuditLog(path, "hospital-a", keys["hospital-b"])
    with pytest.raises(AuditError, match="none of the log's keys is 'hospital-a''s"):
        verify_log(path, {**_signers(manifest), "hospital-a": _signers(manifest)["hospital-b"]})


@pytest.mark.parametrize(("attack", "index", "message"), [
    ("UPDATE entries SET body = '{\"analyst\":\"nobody\"}' WHERE position = 0", 0, "edited"),
    ("DELETE FROM entries WHERE position = 2", 2, "missing"),
    ("UPDATE entries SET position = 10 WHERE position = 1; "
     "UPDATE entries SET position = 1 WHERE position = 2; "
     "UPDATE entries SET position = 2 WHERE position = 10", 1, "does not chain"),
    ("INSERT INTO entries SELECT 5, time, kind, body, hash, hash, signature FROM entries "
     "WHERE position = 4", 5, "edited"),
    ("UPDATE entries SET signature = substr(signature, 3) || '00' WHERE position = 3", 3,
     "bad signature"),
    # the tail after the last co-signed checkpoint is only as safe as the next
    # checkpoint: the node co-signs one at the end of every run
    ("DELETE FROM entries WHERE position = 4", None, None),
])
def test_tampering_is_detected_and_the_first_bad_index_named(
        signing_consortium: tuple, tmp_path: Path, attack: str, index: int | None,
        message: str | None) -> None:
    manifest, keys, _ = signing_consortium
    path = _log(tmp_path, keys)
    with sqlite3.connect(path) as connection:
        connection.executescript(attack)
    if index is None:
        assert verify_log(path, _signers(manifest)) == 4
        return
    with pytest.raises(AuditError, match=message) as caught:
        verify_log(path, _signers(manifest))
    assert caught.value.index == index


def test_rewriting_history_behind_a_checkpoint_is_detected(signing_consortium: tuple,
                                                          tmp_path: Path) -> None:
    manifest, keys, _ = signing_consortium
    path = _log(tmp_path, keys)
    # rebuild a consistent chain from entry 1 with the node's own key: only the
    # peers' co-signed checkpoint reveals the rewrite
    entries = AuditLog(path, "hospital-a", keys["hospital-a"]).entries()
    with sqlite3.connect(path) as connection:
        connection.execute("DELETE FROM entries WHERE position >= 1")
    log = AuditLog(path, "hospital-a", keys["hospital-a"])
    for entry in entries[1:]:
        log.append(entry.kind, {**entry.body, "rewritten": True})
    log.close()
    with pytest.raises(AuditError, match="history was rewritten"):
        verify_log(path, _signers(manifest))


def test_merkle_roots_follow_rfc_6962() -> None:
    import hashlib

    a, b, c = ("11" * 32, "22" * 32, "33" * 32)

    def leaf(h: str) -> bytes:
        return hashlib.sha256(b"\x00" + bytes.fromhex(h)).digest()

    def node(x: bytes, y: bytes) -> bytes:
        return hashlib.sha256(b"\x01" + x + y).digest()

    assert merkle_root([a]) == leaf(a).hex()
    assert merkle_root([a, b, c]) == node(node(leaf(a), leaf(b)), leaf(c)).hex()
    assert merkle_root([]) == hashlib.sha256(b"").hexdigest()


def test_audit_verify_on_the_command_line(signing_consortium: tuple, tmp_path: Path) -> None:
    _, keys, manifest_path = signing_consortium
    path = _log(tmp_path, keys)
    runner = CliRunner()
    result = runner.invoke(app, ["audit", "verify", str(path), "--manifest",
                                 str(manifest_path)])
    assert result.exit_code == 0 and "5 entries" in result.output
    with sqlite3.connect(path) as connection:
        connection.execute("UPDATE entries SET kind = 'result' WHERE position = 1")
    result = runner.invoke(app, ["audit", "verify", str(path)])
    assert result.exit_code == 2 and "entry 1 was edited" in result.output


def _witnessed_log(tmp_path: Path, keys: dict) -> tuple[Path, Path]:
    """hospital-a's log (5 entries), and hospital-b's log keeping the checkpoints of
    hospital-a's log it co-signed (at 4 and at 5 entries)."""
    path = _log(tmp_path, keys)
    log = AuditLog(path, "hospital-a", keys["hospital-a"])
    peer = AuditLog(tmp_path / "peer.sqlite", "hospital-b", keys["hospital-b"])
    hashes = [e.hash for e in log.entries()]
    for size in (4, 5):
        held = peer.witness("hospital-a", size, merkle_root(hashes[:size]))
        log.add_cosignature(Checkpoint(held.size, held.root, held.signer, held.signature))
    log.close()
    peer.close()
    return path, tmp_path / "peer.sqlite"


@pytest.mark.parametrize(("attack", "message"), [
    # the tail is cut together with the node's own checkpoints
    ("DELETE FROM entries WHERE position = 4; DELETE FROM checkpoints", "its tail was cut"),
    ("DELETE FROM entries WHERE position >= 2; DROP TABLE checkpoints; "
     "CREATE TABLE checkpoints (size INTEGER NOT NULL, root TEXT NOT NULL, signer TEXT NOT "
     "NULL, signature TEXT NOT NULL, PRIMARY KEY (size, signer))", "its tail was cut"),
])
def test_a_cut_tail_fails_against_the_checkpoints_a_peer_keeps(
        signing_consortium: tuple, tmp_path: Path, attack: str, message: str) -> None:
    manifest, keys, _ = signing_consortium
    path, peer = _witnessed_log(tmp_path, keys)
    held = load_witnessed(peer, "hospital-a")
    assert [w.size for w in held] == [4, 5]
    assert verify_log(path, _signers(manifest), against=held) == 5
    with sqlite3.connect(path) as connection:
        connection.executescript(attack)
    verify_log(path, _signers(manifest))  # alone, the cut log looks fine
    with pytest.raises(AuditError, match=message):
        verify_log(path, _signers(manifest), against=held)


def test_a_history_rebuilt_with_the_nodes_own_key_fails_against_a_peer(
        signing_consortium: tuple, tmp_path: Path) -> None:
    manifest, keys, _ = signing_consortium
    path, peer = _witnessed_log(tmp_path, keys)
    entries = AuditLog(path, "hospital-a", keys["hospital-a"]).entries()
    with sqlite3.connect(path) as connection:
        connection.executescript("DELETE FROM entries; DELETE FROM checkpoints")
    log = AuditLog(path, "hospital-a", keys["hospital-a"])
    for entry in entries:
        log.append(entry.kind, {**entry.body, "rewritten": True})
    log.close()
    assert verify_log(path, _signers(manifest)) == 5  # consistent, and signed by its key
    with pytest.raises(AuditError, match="history was rewritten"):
        verify_log(path, _signers(manifest), against=load_witnessed(peer))
    # the peer will not co-sign another root for a size it co-signed before
    rebuilt = AuditLog(path, "hospital-a", keys["hospital-a"])
    size, root = rebuilt.checkpoint()
    rebuilt.close()
    witness = AuditLog(peer, "hospital-b", keys["hospital-b"])
    with pytest.raises(AuditError, match=r"another root .* its history was rewritten"):
        witness.witness("hospital-a", size, root)
    witness.close()


def test_peer_checkpoints_come_from_a_json_export_too(signing_consortium: tuple,
                                                      tmp_path: Path) -> None:
    import json

    manifest, keys, manifest_path = signing_consortium
    path, peer = _witnessed_log(tmp_path, keys)
    exported = tmp_path / "kept-by-b.json"
    exported.write_text(json.dumps([w.as_dict() for w in load_witnessed(peer)]))
    forged = [{**w.as_dict(), "signer": "hospital-c"} for w in load_witnessed(peer)]
    (tmp_path / "forged.json").write_text(json.dumps(forged))
    with pytest.raises(AuditError, match="not signed by it"):
        verify_log(path, _signers(manifest), against=load_witnessed(tmp_path / "forged.json"))
    with sqlite3.connect(path) as connection:
        connection.executescript("DELETE FROM entries WHERE position = 4; "
                                 "DELETE FROM checkpoints")
    runner = CliRunner()
    alone = runner.invoke(app, ["audit", "verify", str(path), "--manifest", str(manifest_path)])
    assert alone.exit_code == 0
    for source in (exported, peer):
        caught = runner.invoke(app, ["audit", "verify", str(path), "--manifest",
                                     str(manifest_path), "--against", str(source)])
        assert caught.exit_code == 2 and "keeps a checkpoint of 5 entries of 'hospital-a'" \
            in caught.output and "its tail was cut" in caught.output, caught.output
