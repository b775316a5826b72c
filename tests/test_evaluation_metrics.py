"""Metrics on secret shares (concilium.evaluation.metrics) against scikit-learn.

Labels, scores and probabilities are input by different parties; the results stay
secret until the test reveals them. Scores are put on the fixed-point grid
(multiples of 2^-16) before both sides see them, so that scikit-learn and the
secure computation rank and threshold the same numbers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from sklearn import metrics as sk
from sklearn.calibration import calibration_curve
from sklearn.linear_model import LogisticRegression

from concilium.data import SecretArray, Session
from concilium.data.secret_array import Rounding
from concilium.errors import ConfigurationError
from concilium.evaluation.metrics import (
    CLASSIFICATION_METRICS,
    MULTICLASS_METRICS,
    REGRESSION_METRICS,
    binary_metrics,
    class_counts,
    multiclass_metrics,
    regression_metrics,
)
from concilium.testing import run_parties

GRID = 2.0**16
RATIO_TOLERANCE = 1e-4
LOG_LOSS_TOLERANCE = 1e-3
RNG = np.random.default_rng(20240611)


def on_grid(values: np.ndarray) -> np.ndarray:
    """Values as the fixed-point codec stores them."""
    return np.round(np.asarray(values, dtype=np.float64) * GRID) / GRID


def secret(session: Session, owner: int, values: np.ndarray, *, fixed: bool = False
           ) -> SecretArray:
    return session.input(owner, values if session.party == owner else None, fixed=fixed)


def revealed(results: dict[str, SecretArray]) -> dict[str, Any]:
    assert all(isinstance(value, SecretArray) for value in results.values())
    return {name: value.reveal() for name, value in results.items()}


def run(program: Callable[[Session], Any], backend: str = "rep3",
        truncation: Rounding = "reliable") -> Any:
    """Party 0's result of ``program`` on the protocol's own number of parties."""
    return run_parties(program, protocol=backend, truncation=truncation)[0]


def binary_run(labels: np.ndarray, decision: np.ndarray, names: tuple[str, ...] | list[str],
               *, probability: np.ndarray | None = None, threshold: float = 0.0,
               bins: int = 10, backend: str = "rep3") -> dict[str, Any]:
    def program(session: Session) -> dict[str, Any]:
        y = secret(session, 0, labels)
        score = secret(session, 1, decision, fixed=True)
        p = None if probability is None else secret(session, 2, probability, fixed=True)
        return revealed(binary_metrics(y, names, decision=score, threshold=threshold,
                                       probability=p, bins=bins))

    result: dict[str, Any] = run(program, backend)
    return result


def sklearn_counting(labels: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    return {
        "accuracy": sk.accuracy_score(labels, predicted),
        "precision": sk.precision_score(labels, predicted, zero_division=0),
        "recall": sk.recall_score(labels, predicted, zero_division=0),
        "f1": sk.f1_score(labels, predicted, zero_division=0),
    }


def sklearn_binary(labels: np.ndarray, predicted: np.ndarray, score: np.ndarray,
                   probability: np.ndarray) -> dict[str, float]:
    return {
        **sklearn_counting(labels, predicted),
        "roc_auc": sk.roc_auc_score(labels, score),
        "pr_auc": sk.average_precision_score(labels, score),
        "brier": sk.brier_score_loss(labels, probability),
        "log_loss": sk.log_loss(labels, y_proba=np.clip(probability, 2**-16, 1 - 2**-16)),
    }


def assert_calibration(table: np.ndarray, labels: np.ndarray, probability: np.ndarray,
                       bins: int) -> None:
    counts = np.bincount(np.searchsorted(np.linspace(0, 1, bins + 1)[1:-1], probability),
                         minlength=bins)
    assert table.shape == (bins, 3)
    assert np.array_equal(table[:, 0], counts)
    fraction, mean = calibration_curve(labels, probability, n_bins=bins, strategy="uniform")
    filled = counts > 0
    assert np.allclose(table[filled, 1], mean, atol=2 * RATIO_TOLERANCE)
    assert np.allclose(table[filled, 2], fraction, atol=2 * RATIO_TOLERANCE)
    assert np.all(table[~filled] == 0)


def logistic_data(rows: int, ties: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels, a logit rounded to multiples of ``ties`` (many ties) and its probability."""
    labels = RNG.integers(0, 2, rows)
    logit = np.round((RNG.normal(size=rows) + 1.2 * labels - 0.6) / ties) * ties
    return labels, on_grid(logit), on_grid(1 / (1 + np.exp(-logit)))


@pytest.mark.parametrize("backend", ["rep3", "rep4"])
def test_every_binary_metric_matches_sklearn(backend: str) -> None:
    labels, logit, probability = logistic_data(1200 if backend == "rep3" else 400, 0.05)
    got = binary_run(labels, logit, CLASSIFICATION_METRICS, probability=probability,
                     backend=backend)
    predicted = (logit > 0).astype(int)
    expected = sklearn_binary(labels, predicted, logit, probability)
    for name, value in expected.items():
        tolerance = LOG_LOSS_TOLERANCE if name == "log_loss" else RATIO_TOLERANCE
        assert got[name] == pytest.approx(value, abs=tolerance), name
    assert np.array_equal(got["confusion_matrix"], sk.confusion_matrix(labels, predicted))
    assert_calibration(got["calibration"], labels, probability, 10)
    assert list(got) == list(CLASSIFICATION_METRICS)


def test_thresholds_reproduce_a_fitted_models_predictions() -> None:
    rows = 900
    features = RNG.normal(size=(rows, 3))
    labels = (features @ np.array([1.5, -2.0, 0.5]) + RNG.normal(size=rows) > 0).astype(int)
    model = LogisticRegression().fit(features, labels)
    logit = on_grid(model.decision_function(features))
    probability = on_grid(model.predict_proba(features)[:, 1])
    predicted = model.predict(features)
    # the data's precondition: rounding to the grid moved no row across the threshold
    assert np.array_equal(logit > 0, predicted) and np.array_equal(probability > 0.5, predicted)
    names = ["accuracy", "confusion_matrix", "precision", "recall", "f1"]
    by_logit = binary_run(labels, logit, names)
    by_probability = binary_run(labels, probability, names, threshold=0.5)
    expected = sklearn_counting(labels, predicted)
    for got in (by_logit, by_probability):
        assert np.array_equal(got["confusion_matrix"], sk.confusion_matrix(labels, predicted))
        for name in ("accuracy", "precision", "recall", "f1"):
            assert got[name] == pytest.approx(expected[name], abs=RATIO_TOLERANCE), name


def test_threshold_between_grid_points_compares_the_stored_value_exactly() -> None:
    labels = np.array([0, 1, 1, 0, 1, 0])
    unit = 2.0**-16
    score = np.array([0.3 - unit, 0.3, 0.3 + unit, 0.30001, 0.2, 0.5])
    stored = on_grid(score)
    got = binary_run(labels, score, ["confusion_matrix"], threshold=0.3)
    predicted = (stored > 0.3).astype(int)
    assert np.array_equal(got["confusion_matrix"],
                          sk.confusion_matrix(labels, predicted, labels=[0, 1]))


def _assert_ranking_matches(labels: np.ndarray, score: np.ndarray,
                            got: dict[str, Any]) -> None:
    """The secure ROC AUC and average precision equal scikit-learn's on the plaintext."""
    assert got["roc_auc"] == pytest.approx(sk.roc_auc_score(labels, score),
                                           abs=RATIO_TOLERANCE)
    assert got["pr_auc"] == pytest.approx(sk.average_precision_score(labels, score),
                                          abs=RATIO_TOLERANCE)


@pytest.mark.parametrize("distinct", [1, 2, 5, 40])
def test_ranking_metrics_with_many_ties_match_sklearn(distinct: int) -> None:
    rows = 2000
    labels = RNG.integers(0, 2, rows)
    score = on_grid(RNG.integers(0, distinct, rows) * 0.25 + 0.1 * labels * (distinct > 1))
    _assert_ranking_matches(labels, score, binary_run(labels, score, ["roc_auc", "pr_auc"]))


def test_ranking_metrics_at_the_extremes() -> None:
    labels = np.array([0] * 30 + [1] * 20)
    separated = np.concatenate([RNG.uniform(-3, -1, 30), RNG.uniform(1, 3, 20)])
    for score in (on_grid(separated), on_grid(-separated)):
        _assert_ranking_matches(labels, score,
                                binary_run(labels, score, ["pr_auc", "roc_auc"]))


def test_zero_denominators_give_zero_as_sklearn_zero_division() -> None:
    rows = 300
    labels = RNG.integers(0, 2, rows)
    never = on_grid(RNG.uniform(-5, -0.5, rows))  # nothing predicted positive
    names = ["precision", "recall", "f1", "accuracy", "confusion_matrix"]
    got = binary_run(labels, never, names)
    expected = sklearn_counting(labels, np.zeros(rows, dtype=int))
    for name in ("precision", "recall", "f1", "accuracy"):
        assert got[name] == pytest.approx(expected[name], abs=RATIO_TOLERANCE), name
    assert expected["precision"] == 0 and expected["f1"] == 0
    negatives_only = np.zeros(rows, dtype=int)  # recall's denominator is 0
    score = on_grid(RNG.normal(size=rows))
    got = binary_run(negatives_only, score, names)
    predicted = (score > 0).astype(int)
    expected = sklearn_counting(negatives_only, predicted)
    for name in ("precision", "recall", "f1", "accuracy"):
        assert got[name] == pytest.approx(expected[name], abs=RATIO_TOLERANCE), name
    assert np.array_equal(got["confusion_matrix"],
                          sk.confusion_matrix(negatives_only, predicted, labels=[0, 1]))


@pytest.mark.parametrize("bins", [1, 4, 7])
def test_calibration_with_empty_bins_and_values_on_edges(bins: int) -> None:
    rows = 600
    labels = RNG.integers(0, 2, rows)
    probability = on_grid(np.concatenate([RNG.uniform(0, 0.3, rows // 2),
                                          RNG.uniform(0.9, 1.0, rows - rows // 2)]))
    probability[:6] = [0.0, 1.0, 0.25, 0.5, 0.75, 0.9]  # on edges of 4 bins, and the ends
    got = binary_run(labels, probability, ["calibration", "brier"], probability=probability,
                     bins=bins)
    assert_calibration(got["calibration"], labels, probability, bins)
    assert got["brier"] == pytest.approx(sk.brier_score_loss(labels, probability),
                                         abs=RATIO_TOLERANCE)


def test_log_loss_clips_certain_probabilities() -> None:
    rows = 500
    labels = RNG.integers(0, 2, rows)
    probability = on_grid(RNG.uniform(0.001, 0.999, rows))
    probability[:4] = [0.0, 1.0, 0.0, 1.0]
    labels[:4] = [0, 1, 1, 0]  # two certain and right, two certain and wrong
    got = binary_run(labels, probability, ["log_loss"], probability=probability)
    clipped = np.clip(probability, 2**-16, 1 - 2**-16)
    assert got["log_loss"] == pytest.approx(sk.log_loss(labels, y_proba=clipped),
                                            abs=LOG_LOSS_TOLERANCE)


def test_class_counts_and_multiclass_metrics_match_sklearn() -> None:
    rows, classes = 800, 4
    labels = RNG.integers(0, classes, rows)
    labels[:3] = 3
    guess = np.where(RNG.uniform(size=rows) < 0.6, labels, RNG.integers(0, classes, rows))
    guess[guess == 3] = 2  # class 3 is never predicted: its precision divides by 0
    one_hot = np.eye(classes, dtype=np.int64)[guess]
    binary = (labels == 1).astype(int)

    def program(session: Session) -> list[Any]:
        y = secret(session, 0, labels)
        predicted = secret(session, 1, one_hot)
        metrics = multiclass_metrics(y, MULTICLASS_METRICS, predicted=predicted,
                                     classes=classes)
        return [revealed(metrics), class_counts(y, classes).reveal(),
                class_counts(secret(session, 2, binary), 2).reveal()]

    got, counts, binary_counts = run(program)
    assert np.array_equal(counts, np.bincount(labels, minlength=classes))
    assert np.array_equal(binary_counts, np.bincount(binary, minlength=2))
    every = list(range(classes))
    assert np.array_equal(got["confusion_matrix"],
                          sk.confusion_matrix(labels, guess, labels=every))
    assert got["accuracy"] == pytest.approx(sk.accuracy_score(labels, guess),
                                            abs=RATIO_TOLERANCE)
    for name, score in (("precision", sk.precision_score), ("recall", sk.recall_score),
                        ("f1", sk.f1_score)):
        expected = score(labels, guess, average="macro", zero_division=0, labels=every)
        assert got[name] == pytest.approx(expected, abs=RATIO_TOLERANCE), name


@pytest.mark.parametrize(("backend", "truncation", "scale"), [
    ("rep3", "reliable", 10.0), ("rep3", "fast", 2000.0), ("rep4", "reliable", 10.0)])
def test_regression_metrics_match_sklearn(backend: str, truncation: Rounding,
                                          scale: float) -> None:
    """Also in a "fast" session, with squares up to 2^55 in the ring, where the fast
    truncation would fail for about one row in a thousand."""
    rows = 1000 if backend == "rep3" else 300
    targets = on_grid(RNG.normal(5 * scale, scale, rows))
    predictions = on_grid(targets + RNG.normal(0.1, 0.4, rows) * scale)

    def program(session: Session) -> dict[str, Any]:
        t = secret(session, 0, targets, fixed=True)
        p = secret(session, 1, predictions, fixed=True)
        return revealed(regression_metrics(t, REGRESSION_METRICS, predictions=p))

    got = run(program, backend, truncation)
    expected = {"mse": sk.mean_squared_error(targets, predictions),
                "mae": sk.mean_absolute_error(targets, predictions),
                "r2": sk.r2_score(targets, predictions)}
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, rel=1e-3), name
    assert list(got) == list(REGRESSION_METRICS)


def test_unknown_metric_names_are_refused_with_the_valid_ones() -> None:
    def binary(session: Session) -> Any:
        y = secret(session, 0, np.array([0, 1, 1]))
        score = secret(session, 1, np.array([0.1, 0.4, 0.9]), fixed=True)
        return binary_metrics(y, ["accuracy", "auc"], decision=score)

    with pytest.raises(ConfigurationError, match=r"'auc'.*roc_auc"):
        run(binary)

    def multiclass(session: Session) -> Any:
        y = secret(session, 0, np.array([0, 1, 2]))
        return multiclass_metrics(y, ["roc_auc"], predicted=secret(
            session, 1, np.eye(3, dtype=np.int64)), classes=3)

    with pytest.raises(ConfigurationError, match=r"'roc_auc'.*confusion_matrix"):
        run(multiclass)

    def regression(session: Session) -> Any:
        t = secret(session, 0, np.array([1.0, 2.0]), fixed=True)
        return regression_metrics(t, ["rmse"], predictions=t)

    with pytest.raises(ConfigurationError, match=r"'rmse'.*mse, mae, r2"):
        run(regression)


@pytest.mark.parametrize("name", ["brier", "log_loss", "calibration"])
def test_probability_metrics_without_probability_are_refused(name: str) -> None:
    def program(session: Session) -> Any:
        y = secret(session, 0, np.array([0, 1, 1]))
        score = secret(session, 1, np.array([0.1, 0.4, 0.9]), fixed=True)
        return binary_metrics(y, ["roc_auc", name], decision=score)

    with pytest.raises(ConfigurationError, match=name):
        run(program)
