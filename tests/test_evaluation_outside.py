"""A model evaluation with outside parties (the outsourced model): a vendor that does
not compute shares its model into the compute parties, an outside owner shares its
rows, and an outside recipient gets exactly the metrics a compute recipient gets,
in memory and between node processes over TLS."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, confusion_matrix, roc_auc_score
from typer.testing import CliRunner

from concilium.cli import app
from concilium.data import OutsideParty, SecretArray
from concilium.evaluation import from_sklearn
from concilium.evaluation.inference import contribute_model, share_model
from concilium.evaluation.job import EvaluationJob, evaluate
from concilium.evaluation.release import receive_release
from concilium.governance.audit_verify import verify_log
from concilium.governance.consortium import load_manifest
from concilium.governance.policy import OutputPolicy
from concilium.node.cluster import LocalCluster
from concilium.testing import run_parties
from tests.test_evaluation_job import FEATURES, HOSPITALS, LABELS, MODELS, PUBLIC, _scaled

VENDOR, OUTSIDE_OWNER = 3, 4  # network indices after the compute parties 0, 1, 2
JOB = EvaluationJob(("accuracy", "confusion_matrix", "roc_auc", "calibration", "roc_curve"),
                    "binary", bins=5)


def _outsourced(estimator: Any, policy: OutputPolicy, rows: np.ndarray, labels: np.ndarray
                ) -> list[Any]:
    """Compute party 0 and the outside owner hold half the rows each; the vendor is
    outside; compute party 0 and the outside owner receive the metrics."""
    description = from_sklearn(estimator)
    shape = description.shape()
    half = len(rows) // 2

    def compute(session: Any) -> Any:
        model = share_model(session, VENDOR, None, shape)
        mine = session.party == 0
        parts = [(session.input(0, rows[:half] if mine else None, fixed=True),
                  session.input(0, labels[:half] if mine else None)),
                 (session.input(OUTSIDE_OWNER, None, fixed=True),
                  session.input(OUTSIDE_OWNER, None))]
        features = SecretArray.concatenate([p[0] for p in parts], axis=0)
        target = SecretArray.concatenate([p[1] for p in parts], axis=0)
        return evaluate(session, model, features, target, JOB, policy, [0, OUTSIDE_OWNER])

    def vendor(outside: OutsideParty) -> None:
        contribute_model(outside, description, shape)

    def owner(outside: OutsideParty) -> Any:
        outside.contribute(rows[half:], fixed=True)
        outside.contribute(labels[half:])
        return receive_release(outside)
    return run_parties(3, compute, outside=[vendor, owner], timeout=300)


def test_an_outside_vendor_owner_and_recipient_get_the_same_metrics() -> None:
    rows, labels = _scaled(FEATURES[HOSPITALS]), LABELS[HOSPITALS]
    estimator = MODELS["boosting"]().fit(_scaled(FEATURES[PUBLIC]), LABELS[PUBLIC])
    results = _outsourced(estimator, OutputPolicy(min_cohort=5), rows, labels)
    inside, outside = results[0], results[4]
    assert results[1] is None and results[2] is None and results[3] is None
    assert inside is not None and outside == inside  # metrics, suppressions, rows
    predicted = estimator.predict(rows)
    assert outside.metrics["confusion_matrix"] == confusion_matrix(labels, predicted).tolist()
    assert outside.metrics["accuracy"] == pytest.approx(accuracy_score(labels, predicted),
                                                        abs=1e-4)
    assert outside.metrics["roc_auc"] == pytest.approx(
        roc_auc_score(labels, estimator.predict_proba(rows)[:, 1]), abs=1e-4)
    assert len(outside.metrics["calibration"]) == 5 and outside.metrics["roc_curve"]


def test_an_outside_recipient_learns_why_everything_was_suppressed() -> None:
    rows, labels = _scaled(FEATURES[HOSPITALS]), LABELS[HOSPITALS]
    estimator = MODELS["logistic"]().fit(_scaled(FEATURES[PUBLIC]), LABELS[PUBLIC])
    results = _outsourced(estimator, OutputPolicy(min_cohort=1000), rows, labels)
    assert results[4] == results[0]
    assert results[4].metrics == {} and set(results[4].suppressed) == set(JOB.metrics)
    assert results[4].suppressed["accuracy"] == "class 0 has fewer than 1000 rows"


# -- between node processes -----------------------------------------------------------
NAMES = ("hospital-a", "hospital-b", "hospital-c", "vendor")
COLUMNS = [f"x{k}" for k in range(6)]
DATA = pd.DataFrame(_scaled(FEATURES)[:, :6], columns=COLUMNS)
DATA["malignant"] = 1 - LABELS
SCHEMA = {"columns": {**{name: {"type": "fixed", "low": 0, "high": 100} for name in COLUMNS},
                      "malignant": {"type": "int", "low": 0, "high": 1}}}


def test_an_outside_vendor_node_registers_shares_and_receives_over_tls(
        tmp_path: Path) -> None:
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    public, hospital_a, hospital_b = DATA[:269], DATA[269:420], DATA[420:]
    model = LogisticRegression(max_iter=5000).fit(public[COLUMNS], public["malignant"])
    cluster = LocalCluster(tmp_path, NAMES, roles={"vendor": ("recipient",)})
    try:
        assert [p.is_compute for p in load_manifest(cluster.manifest_path).parties] == [
            True, True, True, False]
        cluster.register("patients", {"hospital-a": hospital_a, "hospital-b": hospital_b},
                         SCHEMA, {"policy": {"min_cohort": 10}})
        model_file = tmp_path / "model.onnx"
        model_file.write_bytes(to_onnx(model, public[COLUMNS].to_numpy()[:1].astype(
            "float32"), options={"zipmap": False}).SerializeToString())

        def cli(name: str, role: str, *arguments: str) -> str:
            outcome = CliRunner().invoke(app, [*arguments, "--node", str(cluster.dirs[name]),
                                               "--token", cluster.tokens[name][role]])
            assert outcome.exit_code == 0, outcome.output
            return outcome.output

        cli("vendor", "admin", "model", "add", str(model_file))
        proposal = cli("hospital-a", "analyst", "propose", "--evaluate", str(model_file),
                       "--vendor", "vendor", "--dataset", "patients", "--features",
                       ",".join(COLUMNS), "--label", "malignant", "--metric", "accuracy",
                       "--metric", "confusion_matrix", "--recipient", "hospital-a",
                       "--recipient", "vendor")
        identifier = proposal.split()[0]
        cluster.approve(identifier, ["hospital-a", "hospital-b", "vendor"])
        cluster.wait([identifier], timeout=300)
        rows = pd.concat([hospital_a, hospital_b])
        predicted = model.predict(rows[COLUMNS])
        for name in ("hospital-a", "vendor"):
            released = dict(cluster.result(identifier, name)["rows"])
            assert released["confusion_matrix"] == confusion_matrix(rows["malignant"],
                                                                    predicted).tolist()
            assert released["accuracy"] == pytest.approx(accuracy_score(rows["malignant"],
                                                                        predicted), abs=1e-4)
        signing = {p.name: p.signing_key for p in load_manifest(cluster.manifest_path).parties}
        for name in NAMES:
            assert verify_log(cluster.dirs[name] / "audit.sqlite", signing) > 0
    finally:
        cluster.close()
