"""An evaluation job end to end on secret shares: the breast-cancer example (shipped with
scikit-learn) split across hospitals, a vendor's three models, the released metrics
equal to scikit-learn's, and the output policy: minimum counts per class and per
calibration bin, rounding, and no per-record output by any spelling."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import (
    accuracy_score,
    brier_score_loss,
    confusion_matrix,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)
from sklearn.neural_network import MLPClassifier

from concilium.data import SecretArray
from concilium.errors import PolicyViolation
from concilium.evaluation import from_sklearn
from concilium.evaluation.inference import share_model
from concilium.evaluation.job import EvaluationJob, EvaluationResult, evaluate
from concilium.governance.policy import OutputPolicy
from concilium.testing import run_parties

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

FEATURES, LABELS = load_breast_cancer(return_X_y=True)  # four decimals at most
PUBLIC, HOSPITALS = slice(0, 269), slice(269, None)  # the vendor trains on a public split
VENDOR = 2
ALL = ("accuracy", "precision", "recall", "f1", "confusion_matrix", "roc_auc", "brier",
       "calibration")


def _scaled(rows: np.ndarray) -> np.ndarray:
    """Raw breast-cancer features span 0.001 to 4000: scaled by public constants (the
    vendor's documented preprocessing), still on a coarse grid."""
    return rows / np.array([10.0 ** np.floor(np.log10(v)) for v in FEATURES.max(axis=0)])


MODELS = {
    "logistic": lambda: LogisticRegression(max_iter=5000),
    "mlp": lambda: MLPClassifier(hidden_layer_sizes=(10,), max_iter=800, random_state=0),
    "boosting": lambda: GradientBoostingClassifier(n_estimators=15, max_depth=3,
                                                   random_state=0),
}


def _run(estimator: Any, job: EvaluationJob, policy: OutputPolicy,
         rows: np.ndarray, labels: np.ndarray, recipients: list[int] | None = None
         ) -> list[EvaluationResult | None]:
    """Hospitals 0 and 1 hold half the rows and labels each; party 2 is the vendor."""
    description = from_sklearn(estimator)
    shape = description.shape()
    half = len(rows) // 2

    def program(session: Any) -> Any:
        model = share_model(session, VENDOR, description if session.party == VENDOR else None,
                            shape)
        parts = [(session.input(owner, part if session.party == owner else None, fixed=True),
                  session.input(owner, target if session.party == owner else None))
                 for owner, part, target in ((0, rows[:half], labels[:half]),
                                             (1, rows[half:], labels[half:]))]
        features = SecretArray.concatenate([p[0] for p in parts], axis=0)
        target = SecretArray.concatenate([p[1] for p in parts], axis=0)
        return evaluate(session, model, features, target, job, policy, recipients)
    return run_parties(program)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_the_breast_cancer_example_matches_scikit_learn(name: str) -> None:
    rows, labels = _scaled(FEATURES[HOSPITALS]), LABELS[HOSPITALS]
    estimator = MODELS[name]().fit(_scaled(FEATURES[PUBLIC]), LABELS[PUBLIC])
    [result, *_] = _run(estimator, EvaluationJob(ALL, "binary"), OutputPolicy(), rows, labels)
    assert result is not None and result.rows == len(rows) and not result.suppressed
    predicted = estimator.predict(rows)
    probability = estimator.predict_proba(rows)[:, 1]
    released = result.metrics
    assert released["confusion_matrix"] == confusion_matrix(labels, predicted).tolist()
    expected = {"accuracy": accuracy_score(labels, predicted),
                "precision": precision_score(labels, predicted),
                "recall": recall_score(labels, predicted), "f1": f1_score(labels, predicted),
                "roc_auc": roc_auc_score(labels, probability),
                "brier": brier_score_loss(labels, probability)}
    for metric, value in expected.items():  # released to 4 decimals
        assert released[metric] == pytest.approx(value, abs=1e-4 + 1e-9), metric
    counts = [0 if bin_ is None else bin_[0] for bin_ in released["calibration"]]
    assert sum(counts) == len(rows)


def test_a_class_below_the_minimum_suppresses_every_metric() -> None:
    rows, labels = _scaled(FEATURES[HOSPITALS]), LABELS[HOSPITALS].copy()
    keep = np.flatnonzero(labels == 1).tolist() + np.flatnonzero(labels == 0)[:9].tolist()
    estimator = MODELS["logistic"]().fit(_scaled(FEATURES[PUBLIC]), LABELS[PUBLIC])
    [result, *_] = _run(estimator, EvaluationJob(("accuracy", "roc_auc"), "binary"),
                        OutputPolicy(min_cohort=10), rows[keep], labels[keep])
    assert result is not None and result.metrics == {}
    assert result.suppressed == {"accuracy": "class 0 has fewer than 10 rows",
                                 "roc_auc": "class 0 has fewer than 10 rows"}


def test_small_calibration_bins_are_suppressed_and_counts_rounded() -> None:
    rows, labels = _scaled(FEATURES[HOSPITALS]), LABELS[HOSPITALS]
    estimator = MODELS["logistic"]().fit(_scaled(FEATURES[PUBLIC]), LABELS[PUBLIC])
    policy = OutputPolicy(min_cohort=15, rounding=5)
    [result, *_] = _run(estimator, EvaluationJob(("calibration", "confusion_matrix"), "binary",
                                                 bins=10), policy, rows, labels)
    assert result is not None
    probability = estimator.predict_proba(rows)[:, 1]
    exact = np.histogram(probability, bins=10, range=(0.0, 1.0))[0]
    for index, (bin_, count) in enumerate(zip(result.metrics["calibration"], exact,
                                              strict=True)):
        if count < 15:
            assert bin_ is None and f"calibration bin {index}" in result.suppressed
        else:
            assert bin_ is not None and bin_[0] == 5 * np.floor(count / 5 + 0.5)
    cells = np.array(result.metrics["confusion_matrix"])
    assert np.all(cells % 5 == 0)
    assert np.abs(cells - confusion_matrix(labels, estimator.predict(rows))).max() <= 2.5


@pytest.mark.parametrize("spelling", ["scores", "predictions", "predict_proba", "decision",
                                      "ROC_AUC ", "accuracy;scores", "rows"])
def test_no_spelling_of_a_job_releases_per_record_values(spelling: str) -> None:
    with pytest.raises(PolicyViolation, match="only aggregate metrics"):
        EvaluationJob(("accuracy", spelling), "binary")
    with pytest.raises(PolicyViolation, match="only aggregate metrics"):
        EvaluationJob((spelling,), "regression")


def test_only_the_recipients_get_the_metrics() -> None:
    rows, labels = _scaled(FEATURES[HOSPITALS]), LABELS[HOSPITALS]
    estimator = MODELS["logistic"]().fit(_scaled(FEATURES[PUBLIC]), LABELS[PUBLIC])
    results = _run(estimator, EvaluationJob(("accuracy",), "binary"), OutputPolicy(), rows,
                   labels, recipients=[1])
    assert results[0] is None and results[2] is None
    assert results[1] is not None and results[1].metrics["accuracy"] == pytest.approx(
        accuracy_score(labels, estimator.predict(rows)), abs=1e-4)
