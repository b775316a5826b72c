"""Output-policy rules on model evaluations: the ROC curve from policy-checked points,
differential privacy on the counts, and every other rule enforced or refused at
planning (columns, aggregates, dominance, dp, min_difference), never skipped."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest

from concilium.data.dataset import Dataset
from concilium.data.schema import Schema
from concilium.errors import ModelError, PolicyViolation
from concilium.evaluation import from_sklearn
from concilium.evaluation.governed import plan_evaluation, run_evaluation
from concilium.evaluation.job import EvaluationJob
from concilium.evaluation.noise import evaluation_noise
from concilium.evaluation.policy import check_evaluation_policy
from concilium.governance.policy import OutputPolicy
from concilium.governance.proposal import build_spec
from concilium.testing import run_parties
from tests.test_evaluation_governed import (
    COLUMNS,
    HOSPITAL_A,
    HOSPITAL_B,
    MODEL,
    SCHEMA,
    _catalog,
)
from tests.test_evaluation_job import FEATURES, HOSPITALS, LABELS, MODELS, PUBLIC, _scaled
from tests.test_evaluation_job import _run as run_job


def _logistic() -> tuple[Any, np.ndarray, np.ndarray]:
    rows, labels = _scaled(FEATURES[HOSPITALS]), LABELS[HOSPITALS]
    return MODELS["logistic"]().fit(_scaled(FEATURES[PUBLIC]), LABELS[PUBLIC]), rows, labels


def _reference_points(probability: np.ndarray, labels: np.ndarray, bins: int
                      ) -> np.ndarray:
    edges = np.linspace(0, 1, bins + 1)[1:-1]
    above = probability.reshape(-1, 1) > edges.reshape(1, -1)
    return np.stack([above[labels == 0].mean(axis=0), above[labels == 1].mean(axis=0)], axis=1)


# -- the ROC curve ------------------------------------------------------------------------
def test_the_roc_curve_is_released_at_the_bin_thresholds() -> None:
    estimator, rows, labels = _logistic()
    [result, *_] = run_job(estimator, EvaluationJob(("roc_curve", "roc_auc"), "binary", bins=5),
                           OutputPolicy(), rows, labels)
    assert result is not None and not result.suppressed
    points = np.array(result.metrics["roc_curve"])
    assert points[:, 0].tolist() == pytest.approx([0.2, 0.4, 0.6, 0.8])
    reference = _reference_points(estimator.predict_proba(rows)[:, 1], labels, 5)
    # a row within fixed-point precision of a threshold may fall on the other side
    slack = 1.0 / min(np.sum(labels == 0), np.sum(labels == 1)) + 1e-4
    assert np.abs(points[:, 1:] - reference).max() <= slack
    # the rates fall as the threshold rises (two equal counts may differ by the
    # fixed-point division's rounding, 2^-16)
    assert np.all(np.diff(points[:, 1]) <= 1e-4) and np.all(np.diff(points[:, 2]) <= 1e-4)


def test_a_roc_point_beside_a_small_band_is_suppressed() -> None:
    estimator, rows, labels = _logistic()
    minimum = 5
    [result, *_] = run_job(estimator, EvaluationJob(("roc_curve",), "binary", bins=10),
                           OutputPolicy(min_cohort=minimum), rows, labels)
    assert result is not None
    probability = estimator.predict_proba(rows)[:, 1]
    bands = np.histogram(probability, bins=10, range=(0.0, 1.0))[0]
    # the band of p in (t_j, t_j+1]; np.histogram's bins are [t_j, t_j+1): no ties here
    allowed = [(j + 1) / 10 for j in range(9) if bands[j] >= minimum and bands[j + 1] >= minimum]
    released = [round(point[0], 6) for point in result.metrics["roc_curve"]]
    assert released == pytest.approx(allowed)
    assert 0 < len(released) < 9
    hidden = [name for name in result.suppressed if name.startswith("roc_curve point")]
    assert len(hidden) == 9 - len(released)


def test_roc_curve_needs_two_bins_and_a_binary_model() -> None:
    with pytest.raises(ModelError, match="bins >= 2"):
        EvaluationJob(("roc_curve",), "binary", bins=1)
    with pytest.raises(PolicyViolation, match="only aggregate metrics"):
        EvaluationJob(("roc_curve",), "multiclass")


# -- differential privacy -------------------------------------------------------------------
def test_under_dp_the_confusion_matrix_is_noisy_and_the_ratios_are_its_ratios() -> None:
    estimator, rows, labels = _logistic()
    job = EvaluationJob(("confusion_matrix", "accuracy", "recall", "roc_curve"), "binary",
                        bins=4)
    [result, *_] = run_job(estimator, job, OutputPolicy(dp_rho=0.002), rows, labels)
    assert result is not None and result.rows is None  # the row count is not released
    noisy = np.array(result.metrics["confusion_matrix"], dtype=float)
    from sklearn.metrics import confusion_matrix
    exact = confusion_matrix(labels, estimator.predict(rows))
    privacy = result.privacy
    assert privacy is not None and privacy["mechanism"] == "skellam"
    assert privacy["rho"] == 0.002
    widths = {s["statistic"]: s["interval95"] for s in privacy["statistics"]}
    assert set(widths) == {"confusion_matrix", "score_bands"}
    # each histogram gets rho / 2: Sk(mu) with mu = 1 / (2 * 0.001) = 500 from 2 honest
    # parties, so each cell's noise has a deviation of about 39 (all 3 parties' draws)
    assert widths["confusion_matrix"] > 40
    assert np.abs(noisy - exact).max() <= 6 * widths["confusion_matrix"]
    assert not np.array_equal(noisy, exact)  # P(four cells unchanged) < 1e-6
    assert result.metrics["accuracy"] == pytest.approx(np.trace(noisy) / noisy.sum(),
                                                       abs=1e-4)
    assert result.metrics["recall"] == pytest.approx(noisy[1, 1] / noisy[1].sum(), abs=1e-4)
    assert len(result.metrics["roc_curve"]) == 3


def test_under_dp_a_small_noisy_class_suppresses_everything() -> None:
    estimator, rows, labels = _logistic()
    keep = np.flatnonzero(labels == 1).tolist() + np.flatnonzero(labels == 0)[:3].tolist()
    [result, *_] = run_job(estimator, EvaluationJob(("accuracy",), "binary"),
                           OutputPolicy(dp_rho=1.0, min_cohort=50), rows[keep], labels[keep])
    assert result is not None and result.metrics == {}
    assert result.suppressed == {"accuracy": "class 0 has fewer than 50 rows (noisy count)"}


@pytest.mark.parametrize("metric", ["roc_auc", "pr_auc", "brier", "log_loss", "calibration"])
def test_under_dp_exact_metrics_are_refused(metric: str) -> None:
    with pytest.raises(PolicyViolation, match=f"under dp.*{metric} would be released exactly"):
        check_evaluation_policy(("accuracy", metric), (), (), OutputPolicy(dp_rho=0.1))
    estimator, rows, labels = _logistic()
    with pytest.raises(PolicyViolation, match="under dp"):
        run_job(estimator, EvaluationJob((metric,), "binary"), OutputPolicy(dp_rho=0.1),
                rows[:40], labels[:40])


def test_under_dp_a_regression_is_refused_and_a_tiny_rho_too() -> None:
    with pytest.raises(PolicyViolation, match="mse would be released exactly"):
        check_evaluation_policy(("mse",), (), (), OutputPolicy(dp_rho=0.1))
    with pytest.raises(PolicyViolation, match="no count would survive"):
        evaluation_noise(("accuracy",), 1e-9)


# -- the other rules, at planning ----------------------------------------------------------
def _policy_spec(manifest: Any, policy: OutputPolicy, job: EvaluationJob | None = None) -> Any:
    from concilium.evaluation.governed import evaluation_section, model_digest
    from tests.test_evaluation_governed import JOB, VENDOR
    section = evaluation_section(from_sklearn(MODEL), model_digest(b"model"), VENDOR,
                                 "patients", list(COLUMNS), "malignant", job or JOB)
    return build_spec("", ["patients"], ["hospital-a"], "dr-lee", manifest, _catalog(),
                      policy, evaluation=section, also_approving=(VENDOR,))


@pytest.mark.parametrize(("policy", "message"), [
    (OutputPolicy(allowed_columns=frozenset({"radius", "texture", "malignant"})),
     "does not allow column.*concavity"),
    (OutputPolicy(allowed_aggregates=frozenset({"count"})), "does not allow avg, which accuracy"),
    (OutputPolicy(allowed_recipients=frozenset({"hospital-b"})),
     "delivering results to hospital-a"),
    (OutputPolicy(dp_rho=0.5), "roc_auc would be released exactly"),
])
def test_a_rule_the_evaluation_breaks_refuses_it_at_planning(
        signing_consortium: tuple, policy: OutputPolicy, message: str) -> None:
    manifest, _, _ = signing_consortium
    with pytest.raises(PolicyViolation, match=message):
        plan_evaluation(_policy_spec(manifest, policy), manifest)


def test_dominance_refuses_summed_metrics_and_allows_counting_ones(
        signing_consortium: tuple) -> None:
    manifest, _, _ = signing_consortium
    policy = OutputPolicy(dominance=(2, 85.0))
    brier = EvaluationJob(("accuracy", "brier"), "binary")
    with pytest.raises(PolicyViolation, match=r"dominance rule.*brier"):
        plan_evaluation(_policy_spec(manifest, policy, brier), manifest)
    plan = plan_evaluation(_policy_spec(manifest, policy), manifest)
    assert plan.job.metrics == ("accuracy", "confusion_matrix", "roc_auc")
    counted = OutputPolicy(allowed_aggregates=frozenset({"count"}))
    only_counts = EvaluationJob(("confusion_matrix",), "binary")
    assert plan_evaluation(_policy_spec(manifest, counted, only_counts), manifest)


def test_the_plan_text_states_the_noise(signing_consortium: tuple) -> None:
    from concilium.evaluation.governed import describe_evaluation
    manifest, _, _ = signing_consortium
    job = EvaluationJob(("accuracy", "roc_curve"), "binary")
    plan = plan_evaluation(_policy_spec(manifest, OutputPolicy(dp_rho=0.1), job), manifest)
    text = describe_evaluation(plan, dict(enumerate(p.name for p in manifest.parties)))
    assert "Skellam noise made on shares, rho=0.1 zCDP for this evaluation" in text
    assert "confusion_matrix: sensitivity 1" in text and "score_bands: sensitivity 1" in text
    assert "the row count is not released" in text


def _near_release(manifest: Any, predicate: str) -> list[Any]:
    """Run the evaluation under min_difference = 5 after an earlier release (with both
    hospitals) over the rows that ``predicate`` selects."""
    plan = plan_evaluation(_policy_spec(manifest, OutputPolicy(min_difference=5)), manifest)
    schema = Schema.from_mapping(SCHEMA)
    data = {0: dataclasses.replace(Dataset.from_frame("patients", HOSPITAL_A, schema),
                                   releases=(("a" * 64, predicate),)),
            1: dataclasses.replace(Dataset.from_frame("patients", HOSPITAL_B, schema),
                                   releases=(("a" * 64, predicate),))}
    model = from_sklearn(MODEL)

    def program(session: Any) -> Any:
        mine = {"patients": data[session.party]} if session.party in data else {}
        return run_evaluation(session, plan, mine, model if session.party == plan.vendor
                              else None)
    return run_parties(3, program, timeout=120)


def test_min_difference_refuses_an_evaluation_close_to_an_earlier_release(
        signing_consortium: tuple) -> None:
    manifest, _, _ = signing_consortium
    # an earlier release over every row but three
    radius = np.concatenate([HOSPITAL_A["radius"], HOSPITAL_B["radius"]])
    cutoff = float(np.sort(radius)[-3])
    assert int((radius >= cutoff).sum()) == 3
    with pytest.raises(PolicyViolation, match="min_difference"):
        _near_release(manifest, f"radius < {cutoff}")


@pytest.mark.parametrize("predicate", ["TRUE", "radius > 15"])
def test_min_difference_lets_the_same_rows_or_far_rows_through(
        signing_consortium: tuple, predicate: str) -> None:
    manifest, _, _ = signing_consortium
    radius = np.concatenate([HOSPITAL_A["radius"], HOSPITAL_B["radius"]])
    assert predicate == "TRUE" or int((radius <= 15).sum()) >= 5
    results = _near_release(manifest, predicate)
    rows = np.concatenate([HOSPITAL_A["malignant"], HOSPITAL_B["malignant"]])
    assert results[0] is not None and results[0].rows == len(rows)
    assert np.sum(results[0].metrics["confusion_matrix"]) == len(rows)
