"""A governed run: no shares without approvals, and every step in the audit log."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from concilium.data.dataset import Dataset
from concilium.data.schema import Schema
from concilium.errors import ApprovalMissing, PolicyViolation
from concilium.governance.approval import ApprovalPolicy, sign_approval
from concilium.governance.audit import AuditLog, verify_log
from concilium.governance.policy import OutputPolicy
from concilium.governance.spec import ComputationSpec
from concilium.node.runner import run_computation
from concilium.query.plan import TableEntry
from concilium.testing import run_parties
from tests.test_queries import OWNERS, SCHEMA

NAMES = ("hospital-a", "hospital-b", "hospital-c")
SQL = "SELECT condition, COUNT(*) AS n, AVG(stay) AS s FROM admissions GROUP BY condition"


def _setup(manifest: object) -> tuple:
    spec = ComputationSpec(query=SQL, datasets=("admissions",), consortium=manifest.hash,
                           protocol="rep3", recipients=("hospital-a",), analyst="dr-lee",
                           policy={"min_cohort": 5})
    schema = Schema.from_mapping(SCHEMA)
    tables = {"admissions": TableEntry(schema, (0, 1, 2))}
    datasets = [Dataset.from_frame("admissions", frame, schema) for frame in OWNERS]
    policies = {"admissions": ApprovalPolicy("admissions", "hospital-a", required=1)}
    return spec, tables, datasets, policies


def _run(tmp_path: Path, signing_consortium: tuple, approvals_for: object, policy: OutputPolicy,
         spec_change: dict | None = None) -> list:
    manifest, keys, _ = signing_consortium
    spec, tables, datasets, policies = _setup(manifest)
    approvals = [sign_approval(approvals_for or spec, "approve", "officer-1", "hospital-a",
                               keys["hospital-a"])] if approvals_for is not False else []
    if spec_change:
        spec = dataclasses.replace(spec, **spec_change)

    def program(session):
        log = AuditLog(tmp_path / f"audit-{session.party}.sqlite", NAMES[session.party],
                       keys[NAMES[session.party]])
        try:
            return run_computation(session, spec, approvals, manifest, policies, tables,
                                   {"admissions": datasets[session.party]}, policy, log,
                                   key=keys[NAMES[session.party]], names=dict(enumerate(NAMES)))
        finally:
            log.close()

    return run_parties(3, program, timeout=60)


def _entries(path: Path, keys: dict, name: str = "hospital-a") -> list:
    log = AuditLog(path, name, keys[name])
    try:
        return log.entries()
    finally:
        log.close()


def _kinds(path: Path, keys: dict, name: str = "hospital-a") -> list[str]:
    return [entry.kind for entry in _entries(path, keys, name)]


def test_an_approved_run_is_logged_end_to_end(tmp_path: Path, signing_consortium: tuple) -> None:
    results = _run(tmp_path, signing_consortium, None, OutputPolicy(min_cohort=5))
    assert sorted(results[0]["condition"]) == ["asthma", "copd", "diabetes"]
    _, keys, _ = signing_consortium
    kinds = _kinds(tmp_path / "audit-0.sqlite", keys)
    assert kinds == ["proposal", "approval", "run_start", "input_commitment",
                     "policy_decision", "result", "run_end"]
    signers = {p.name: p.signing_key for p in signing_consortium[0].parties}
    assert verify_log(tmp_path / "audit-0.sqlite", signers) == 7
    # the peers co-signed the checkpoint of all 7 entries at the end of the run
    import sqlite3

    with sqlite3.connect(tmp_path / "audit-0.sqlite") as connection:
        cosigners = connection.execute("SELECT size, signer FROM checkpoints").fetchall()
    assert sorted(cosigners) == [(7, "hospital-b"), (7, "hospital-c")]
    # inputs are committed by hash and size; no value of the data enters the log
    commitment = _entries(tmp_path / "audit-0.sqlite", keys)[3].body
    assert set(commitment) == {"computation_id", "dataset", "rows", "hash", "schema_hash"}
    assert commitment["rows"] == len(OWNERS[0]) and len(commitment["hash"]) == 64


def test_running_without_approval_is_refused_before_sharing(tmp_path: Path,
                                                           signing_consortium: tuple) -> None:
    with pytest.raises(ApprovalMissing, match="needs 1 approval"):
        _run(tmp_path, signing_consortium, False, OutputPolicy())
    _, keys, _ = signing_consortium
    assert _kinds(tmp_path / "audit-0.sqlite", keys) == ["proposal", "refusal"]


def test_an_approval_for_another_spec_is_refused_and_logged(tmp_path: Path,
                                                           signing_consortium: tuple) -> None:
    with pytest.raises(ApprovalMissing, match="the spec changed"):
        _run(tmp_path, signing_consortium, None, OutputPolicy(),
             spec_change={"recipients": ("hospital-a", "hospital-b")})
    _, keys, _ = signing_consortium
    assert _kinds(tmp_path / "audit-1.sqlite", keys, "hospital-b")[-1] == "refusal"


def test_a_policy_violation_aborts_and_is_logged(tmp_path: Path, signing_consortium: tuple) -> None:
    with pytest.raises(PolicyViolation, match="does not allow AVG"):
        _run(tmp_path, signing_consortium, None,
             OutputPolicy(allowed_aggregates=frozenset({"count"})))
    _, keys, _ = signing_consortium
    assert _kinds(tmp_path / "audit-0.sqlite", keys)[-1] == "abort"
