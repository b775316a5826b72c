"""A governed run: no shares without approvals, and every step in the audit log."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from concilium.data.dataset import Dataset
from concilium.data.schema import Schema
from concilium.errors import ApprovalMissing, PolicyViolation
from concilium.governance.approval import sign_approval
from concilium.governance.audit import AuditLog
from concilium.governance.audit_verify import verify_log
from concilium.governance.policy import OutputPolicy
from concilium.governance.proposal import DatasetEntry, DatasetRules, build_spec
from concilium.node.runner import run_computation
from concilium.testing import run_parties
from tests.test_queries import OWNERS, SCHEMA

NAMES = ("hospital-a", "hospital-b", "hospital-c")
SQL = "SELECT condition, COUNT(*) AS n, AVG(stay) AS s FROM admissions GROUP BY condition"


def _catalog(policy: OutputPolicy) -> list[DatasetEntry]:
    """Each hospital holds a partition of admissions, under ``policy``."""
    schema = Schema.from_mapping(SCHEMA).as_mapping()
    return [DatasetEntry("admissions", name, schema, DatasetRules(policy)) for name in NAMES]


def _run(tmp_path: Path, signing_consortium: tuple, approvals_for: object, policy: OutputPolicy,
         spec_change: dict | None = None, own_policy: OutputPolicy | None = None) -> list:
    """A governed run of SQL; ``policy``: each owner's policy when the spec is built;
    ``own_policy``: the owners' policy at run time (if changed since)."""
    manifest, keys, _ = signing_consortium
    spec = build_spec(SQL, ["admissions"], ["hospital-a"], "dr-lee", manifest,
                      _catalog(policy), OutputPolicy(min_cohort=5))
    schema = Schema.from_mapping(SCHEMA)
    datasets = [Dataset.from_frame("admissions", frame, schema) for frame in OWNERS]
    approvals = [sign_approval(approvals_for or spec, "approve", "officer-1", name, keys[name])
                 for name in NAMES] if approvals_for is not False else []
    if spec_change:
        spec = dataclasses.replace(spec, **spec_change)
    own = _catalog(own_policy or policy)

    def program(session):
        name = NAMES[session.party]
        log = AuditLog(tmp_path / f"audit-{session.party}.sqlite", name, keys[name])
        try:
            return run_computation(session, spec, approvals, manifest,
                                   {"admissions": datasets[session.party]}, log, me=name,
                                   own=[own[session.party]], checkpoints=True)
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
    assert kinds == ["proposal", "approval", "approval", "approval", "run_start",
                     "input_commitment", "policy_decision", "result", "run_end"]
    signers = {p.name: p.signing_key for p in signing_consortium[0].parties}
    assert verify_log(tmp_path / "audit-0.sqlite", signers) == 9
    # the peers co-signed the checkpoint of all 9 entries at the end of the run
    import sqlite3

    with sqlite3.connect(tmp_path / "audit-0.sqlite") as connection:
        cosigners = connection.execute("SELECT size, signer FROM checkpoints").fetchall()
    assert sorted(cosigners) == [(9, "hospital-b"), (9, "hospital-c")]
    # inputs are committed by hash and size; no value of the data enters the log
    commitment = _entries(tmp_path / "audit-0.sqlite", keys)[5].body
    assert set(commitment) == {"computation_id", "dataset", "rows", "hash", "schema_hash"}
    assert commitment["rows"] == len(OWNERS[0]) and len(commitment["hash"]) == 64


def test_running_without_approval_is_refused_before_sharing(tmp_path: Path,
                                                           signing_consortium: tuple) -> None:
    with pytest.raises(ApprovalMissing, match=r"'hospital-a' \(owner of admissions\) needs 1"):
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


def test_an_owner_whose_policy_tightened_since_the_approval_refuses_to_share(
        tmp_path: Path, signing_consortium: tuple) -> None:
    with pytest.raises(PolicyViolation, match=r"weaker than 'hospital-\w'.*min_cohort is 5 "
                                              "where the dataset's policy requires 50"):
        _run(tmp_path, signing_consortium, None, OutputPolicy(),
             own_policy=OutputPolicy(min_cohort=50))
    _, keys, _ = signing_consortium
    for party, name in enumerate(NAMES):
        assert _kinds(tmp_path / f"audit-{party}.sqlite", keys, name)[-1] == "refusal"


def test_a_spec_whose_policy_was_weakened_after_the_approvals_is_refused(
        tmp_path: Path, signing_consortium: tuple) -> None:
    # the analyst (or a node) replaces the effective policy by an empty one: a new id,
    # so the approvals do not match, and each owner's own check refuses it as well
    with pytest.raises((ApprovalMissing, PolicyViolation)):
        _run(tmp_path, signing_consortium, None, OutputPolicy(min_cohort=10),
             spec_change={"policy": OutputPolicy().as_dict()})
    _, keys, _ = signing_consortium
    entries = _entries(tmp_path / "audit-0.sqlite", keys)
    assert entries[-1].kind == "refusal" and "weaker" in entries[-1].body["reason"]
