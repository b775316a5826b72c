"""A model evaluation as a governed computation: proposed in a spec the owners and the
vendor sign, refused before sharing when the model does not fit the schema or an
approval is missing, run, and logged like a query."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, confusion_matrix, roc_auc_score

from concilium.data.dataset import Dataset
from concilium.data.schema import Schema
from concilium.errors import ApprovalMissing, ModelError, PolicyViolation
from concilium.evaluation import from_sklearn
from concilium.evaluation.governed import evaluation_section, model_digest
from concilium.evaluation.job import EvaluationJob
from concilium.governance.approval import sign_approval
from concilium.governance.audit import AuditLog
from concilium.governance.audit_verify import verify_log
from concilium.governance.policy import OutputPolicy
from concilium.governance.proposal import DatasetEntry, DatasetRules, build_spec
from concilium.node.runner import run_computation
from concilium.testing import run_parties
from tests.test_governed_runs import _entries

NAMES = ("hospital-a", "hospital-b", "hospital-c")
VENDOR = "hospital-c"
DATA = load_breast_cancer(as_frame=True)
COLUMNS = {"radius": "mean radius", "texture": "mean texture", "smoothness": "mean smoothness",
           "concavity": "mean concavity", "symmetry": "mean symmetry"}
FRAME = pd.DataFrame({short: DATA.frame[long] for short, long in COLUMNS.items()})
FRAME["malignant"] = 1 - DATA.target  # scikit-learn's 0 is malignant
SCHEMA = {**{name: {"type": "fixed", "low": 0, "high": 100} for name in COLUMNS},
          "malignant": {"type": "int", "low": 0, "high": 1}}
PUBLIC, HOSPITAL_A, HOSPITAL_B = FRAME[:200], FRAME[200:400], FRAME[400:]
MODEL = LogisticRegression(max_iter=5000).fit(PUBLIC[list(COLUMNS)], PUBLIC["malignant"])
JOB = EvaluationJob(("accuracy", "confusion_matrix", "roc_auc"), "binary")


def _catalog() -> list[DatasetEntry]:
    schema = Schema.from_mapping(SCHEMA).as_mapping()
    return [DatasetEntry("patients", name, schema, DatasetRules(OutputPolicy(min_cohort=10)))
            for name in NAMES[:2]]


def _spec(manifest: Any, features: list[str] | None = None, label: str = "malignant",
          vendor_approves: bool = True) -> Any:
    description = from_sklearn(MODEL)
    section = evaluation_section(description, model_digest(b"the vendor's model file"),
                                 VENDOR, "patients", features or list(COLUMNS), label, JOB)
    return build_spec("", ["patients"], ["hospital-a", VENDOR], "dr-lee", manifest,
                      _catalog(), OutputPolicy(), evaluation=section,
                      also_approving=(VENDOR,) if vendor_approves else ())


def _run(tmp_path: Path, consortium: tuple, spec: Any, signers: tuple[str, ...] = NAMES
         ) -> list[Any]:
    manifest, keys, _ = consortium
    tmp_path.mkdir(parents=True, exist_ok=True)
    schema = Schema.from_mapping(SCHEMA)
    data = {0: Dataset.from_frame("patients", HOSPITAL_A, schema),
            1: Dataset.from_frame("patients", HOSPITAL_B, schema)}
    approvals = [sign_approval(spec, "approve", "officer-1", name, keys[name])
                 for name in signers]
    models = {spec.evaluation["model"]["sha256"]: from_sklearn(MODEL)}
    own = _catalog()

    def program(session: Any) -> Any:
        name = NAMES[session.party]
        log = AuditLog(tmp_path / f"audit-{session.party}.sqlite", name, keys[name])
        try:
            return run_computation(
                session, spec, approvals, manifest,
                {"patients": data[session.party]} if session.party in data else {}, log,
                me=name, own=own[session.party:session.party + 1] if session.party < 2 else [],
                models=models if name == VENDOR else None)
        finally:
            log.close()
    return run_parties(3, program, timeout=120)


def test_a_governed_evaluation_releases_the_approved_metrics_only(
        tmp_path: Path, signing_consortium: tuple) -> None:
    manifest, keys, _ = signing_consortium
    spec = _spec(manifest)
    assert spec.approvers == {"hospital-a": 1, "hospital-b": 1, VENDOR: 1}
    assert spec.evaluation["model"]["shape"] == from_sklearn(MODEL).shape()
    results = _run(tmp_path, signing_consortium, spec)
    assert results[1] is None  # hospital-b is not a recipient
    rows = pd.concat([HOSPITAL_A, HOSPITAL_B])
    predicted = MODEL.predict(rows[list(COLUMNS)])
    expected = {"accuracy": round(accuracy_score(rows["malignant"], predicted), 4),
                "confusion_matrix": confusion_matrix(rows["malignant"], predicted).tolist(),
                "roc_auc": roc_auc_score(rows["malignant"],
                                         MODEL.decision_function(rows[list(COLUMNS)]))}
    for frame in (results[0], results[2]):
        released = dict(zip(frame["metric"], frame["value"], strict=True))
        assert set(released) == set(JOB.metrics)
        assert released["confusion_matrix"] == expected["confusion_matrix"]
        assert released["accuracy"] == pytest.approx(expected["accuracy"], abs=1e-4)
        assert released["roc_auc"] == pytest.approx(expected["roc_auc"], abs=1e-4)
        assert frame.attrs["threat_model"]["protocol"] == "rep3"
    kinds = [entry.kind for entry in _entries(tmp_path / "audit-0.sqlite", keys)]
    assert kinds == ["proposal", "approval", "approval", "approval", "run_start",
                     "input_commitment", "policy_decision", "result", "run_end"]
    signing = {p.name: p.signing_key for p in manifest.parties}
    assert verify_log(tmp_path / "audit-2.sqlite", signing) == 8  # the vendor has no input


def test_a_model_that_does_not_fit_the_schema_is_refused_before_sharing(
        tmp_path: Path, signing_consortium: tuple) -> None:
    manifest, keys, _ = signing_consortium
    with pytest.raises(ModelError, match="takes 5 features; the evaluation names 4"):
        _run(tmp_path, signing_consortium, _spec(manifest, list(COLUMNS)[:4]))
    assert [e.kind for e in _entries(tmp_path / "audit-0.sqlite", keys)][-1] == "abort"
    with pytest.raises(ModelError, match="has no column 'weight'"):
        _run(tmp_path / "b", signing_consortium,
             _spec(manifest, [*list(COLUMNS)[:4], "weight"]))
    with pytest.raises(ModelError, match="whole-number column"):
        _run(tmp_path / "c", signing_consortium, _spec(
            manifest, ["radius", "smoothness", "concavity", "symmetry", "malignant"],
            label="texture"))
    kinds = [e.kind for e in _entries(tmp_path / "audit-0.sqlite", keys)]
    assert "input_commitment" in kinds and "result" not in kinds


def test_the_vendor_must_approve_and_the_owners_policy_holds(
        tmp_path: Path, signing_consortium: tuple) -> None:
    manifest, _, _ = signing_consortium
    with pytest.raises(ApprovalMissing, match="hospital-c"):
        _run(tmp_path, signing_consortium, _spec(manifest), signers=NAMES[:2])
    with pytest.raises(PolicyViolation, match="only aggregate metrics"):
        EvaluationJob(("accuracy", "scores"), "binary")
    spec = _spec(manifest)
    assert OutputPolicy.from_mapping(spec.policy).min_cohort == 10  # the owners' minimum
