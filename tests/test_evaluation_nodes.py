"""A vendor's model evaluated by three node processes over mutual TLS: two hospitals
hold the breast-cancer rows, the vendor registers its ONNX model at its node, an
analyst proposes with ``concilium propose --evaluate``, all three approve, and the
released metrics equal scikit-learn's; the audit logs verify."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from skl2onnx import to_onnx
from sklearn.datasets import load_breast_cancer
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.metrics import accuracy_score, confusion_matrix, roc_auc_score
from typer.testing import CliRunner

from concilium.cli import app
from concilium.governance.audit_verify import verify_log
from concilium.governance.consortium import load_manifest
from concilium.node.cluster import LocalCluster

NAMES = ("hospital-a", "hospital-b", "vendor")
DATA = load_breast_cancer(as_frame=True)
COLUMNS = ["mean radius", "mean texture", "mean smoothness", "mean concavity",
           "worst area", "worst symmetry"]
FRAME = pd.DataFrame({name.replace(" ", "_"): DATA.frame[name] for name in COLUMNS})
FEATURES = list(FRAME.columns)
FRAME["malignant"] = 1 - DATA.target
SCHEMA = {"columns": {**{name: {"type": "fixed", "low": 0, "high": 5000} for name in FEATURES},
                      "malignant": {"type": "int", "low": 0, "high": 1}}}
RULES = {"policy": {"min_cohort": 20}}
PUBLIC, HOSPITAL_A, HOSPITAL_B = FRAME[:200], FRAME[200:380], FRAME[380:]
MODEL = GradientBoostingClassifier(n_estimators=10, max_depth=3, random_state=0).fit(
    PUBLIC[FEATURES].to_numpy(), PUBLIC["malignant"])
METRICS = ("accuracy", "confusion_matrix", "roc_auc", "roc_curve")


@pytest.fixture(scope="module")
def consortium(tmp_path_factory: pytest.TempPathFactory) -> LocalCluster:
    running = LocalCluster(tmp_path_factory.mktemp("evaluation"), NAMES)
    running.register("patients", {"hospital-a": HOSPITAL_A, "hospital-b": HOSPITAL_B},
                     SCHEMA, RULES)
    yield running
    running.close()


def _cli(cluster: LocalCluster, name: str, role: str, *arguments: str) -> str:
    outcome = CliRunner().invoke(app, [*arguments, "--node", str(cluster.dirs[name]),
                                       "--token", cluster.tokens[name][role]])
    assert outcome.exit_code == 0, outcome.output
    return outcome.output


def test_a_vendor_model_is_evaluated_over_tls_and_only_metrics_released(
        consortium: LocalCluster, tmp_path: Path) -> None:
    model_file = tmp_path / "model.onnx"
    onnx = to_onnx(MODEL, PUBLIC[FEATURES].to_numpy()[:1].astype("float32"),
                   options={"zipmap": False})
    model_file.write_bytes(onnx.SerializeToString())
    registered = _cli(consortium, "vendor", "admin", "model", "add", str(model_file))
    assert "sha256" in registered and "tree_ensemble" in registered
    proposal = _cli(consortium, "hospital-a", "analyst", "propose", "--evaluate",
                    str(model_file), "--vendor", "vendor", "--dataset", "patients",
                    "--features", ",".join(FEATURES), "--label", "malignant",
                    *[part for metric in METRICS for part in ("--metric", metric)],
                    "--recipient", "hospital-a")
    identifier = proposal.split()[0]
    shown = consortium.status("hospital-b", identifier)
    assert shown is not None and shown["approvers"] == {name: 1 for name in NAMES}
    assert "releases only accuracy, confusion_matrix, roc_auc, roc_curve" in shown["plan"]
    assert "which feature each node tests" in shown["plan"]
    consortium.approve(identifier)
    consortium.wait([identifier], timeout=300)
    result = consortium.result(identifier)
    released = dict(result["rows"])
    rows = pd.concat([HOSPITAL_A, HOSPITAL_B])
    predicted = MODEL.predict(rows[FEATURES].to_numpy())
    assert released["confusion_matrix"] == confusion_matrix(rows["malignant"],
                                                            predicted).tolist()
    assert released["accuracy"] == pytest.approx(accuracy_score(rows["malignant"], predicted),
                                                 abs=1e-4)
    assert released["roc_auc"] == pytest.approx(roc_auc_score(
        rows["malignant"], MODEL.decision_function(rows[FEATURES].to_numpy())), abs=1e-4)
    assert result["threat_model"]["protocol"] == "rep3"
    probability = MODEL.predict_proba(rows[FEATURES].to_numpy())[:, 1]
    for threshold, fpr, tpr in released["roc_curve"]:  # points beside bands of >= 10 rows
        above = probability > threshold
        negatives, positives = rows["malignant"] == 0, rows["malignant"] == 1
        assert fpr == pytest.approx(above[negatives].mean(), abs=2 / negatives.sum())
        assert tpr == pytest.approx(above[positives].mean(), abs=2 / positives.sum())
    printed = _cli(consortium, "hospital-a", "analyst", "result", identifier)
    assert "roc_auc" in printed and "confusion_matrix" in printed
    assert "ROC curve (the released points)" in printed
    assert "true positive rate (up) against false positive rate (across)" in printed
    logged = [entry for entry in consortium.client("vendor", "admin").request(
        "GET", "/audit/entries") if entry["kind"] == "model_registered"]
    digest = registered.split("sha256 ")[1].split()[0]
    assert [entry["body"]["sha256"] for entry in logged] == [digest]
    assert logged[0]["body"]["by"] == "admin" and logged[0]["body"]["file"] == "model.onnx"
    signing = {p.name: p.signing_key for p in load_manifest(consortium.manifest_path).parties}
    for name in NAMES:
        assert verify_log(consortium.dirs[name] / "audit.sqlite", signing) > 0
