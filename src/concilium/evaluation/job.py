"""An evaluation job: a model's aggregate metrics on secret rows, through the output
policy, and nothing else.

Every compute party runs the same steps; nothing is opened before step 4:

1. the model on the rows (:func:`~concilium.evaluation.inference.predict`);
2. the metrics on secret shares (:mod:`~concilium.evaluation.metrics`), and the
   counts the policy needs: rows per class, rows per calibration bin;
3. the policy, inside MPC (:mod:`concilium.evaluation.policy` says which rule
   applies how). Each class count, each calibration bin's count and each score
   band's count (the rows between two thresholds of the ROC curve) is compared
   with the policy's ``min_cohort``, and only the comparison's bit is opened.
   - A class below the minimum suppresses every metric, since each one depends
     on every class.
   - A bin below the minimum suppresses that bin.
   - A point of the ROC curve is released only if both bands beside it meet the
     minimum. Then the rows between any two released points (and between a point
     and the curve's ends) are at least ``min_cohort``.
   - Released counts (confusion-matrix cells, bin counts) are rounded on shares to
     the policy's ``rounding``, ratios to ``10^-decimals``
     (:func:`~concilium.query.rules.round_to`).
   - Under ``dp`` the counts are noisy (:mod:`concilium.evaluation.noise`) before
     any of this, and every check and ratio reads the noisy counts;
4. the released metrics are opened to the recipients.

Only aggregate metrics exist here: a job names metrics from
:data:`~concilium.evaluation.metrics.CLASSIFICATION_METRICS` and
:data:`~concilium.evaluation.metrics.REGRESSION_METRICS`, and any other name
(``scores``, ``predictions``, ``predict_proba``, ...) is refused when the job
is made, so no spelling of a job releases a per-record value.

Reveals: whether each class and each calibration bin meets the minimum count
(to every compute party), and the released, rounded metrics (to the recipients).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from concilium.data import SecretArray, Session
from concilium.errors import ModelError, PolicyViolation
from concilium.evaluation import metrics as measures
from concilium.evaluation.inference import Prediction, SharedModel, predict
from concilium.evaluation.noise import (
    CONFUSION,
    SCORE_BANDS,
    count_bound,
    evaluation_noise,
    noisy_histograms,
    privacy_report,
)
from concilium.evaluation.policy import check_evaluation_policy
from concilium.evaluation.release import (
    EvaluationResult,
    PendingRelease,
    release,
    suppress_everything,
)
from concilium.governance.policy import OutputPolicy
from concilium.query.privacy import NoisePlan
from concilium.query.rules import round_to

__all__ = ["BINARY_METRICS", "COUNT_METRICS", "EvaluationJob", "EvaluationResult",
           "curve_thresholds", "evaluate"]

#: Metrics whose values are counts (rounded to the policy's ``rounding``).
COUNT_METRICS = frozenset({"confusion_matrix"})
#: A binary classifier's metrics: :data:`~concilium.evaluation.metrics.CLASSIFICATION_METRICS`
#: and ``roc_curve`` (false and true positive rates at ``bins - 1`` probability thresholds).
BINARY_METRICS = (*measures.CLASSIFICATION_METRICS, "roc_curve")
_KNOWN = {"binary": BINARY_METRICS, "multiclass": measures.MULTICLASS_METRICS,
          "regression": measures.REGRESSION_METRICS}
_PROBABILITY_METRICS = frozenset({"brier", "log_loss", "calibration"})


@dataclass(frozen=True)
class EvaluationJob:
    """What an evaluation releases: ``metrics`` (names, see the module docstring),
    ``bins`` for calibration, ratios rounded to ``decimals`` decimal places."""

    metrics: tuple[str, ...]
    task: str
    bins: int = 10
    decimals: int = 4

    def __post_init__(self) -> None:
        if self.task not in _KNOWN:
            raise ModelError(f"unknown task {self.task!r}: binary, multiclass or regression")
        known = _KNOWN[self.task]
        if not self.metrics:
            raise PolicyViolation("an evaluation job must name the metrics it releases")
        wrong = [name for name in self.metrics if name not in known]
        if wrong:
            raise PolicyViolation(
                f"an evaluation job releases only aggregate metrics; {wrong} "
                f"{'is' if len(wrong) == 1 else 'are'} not one of {list(known)} for a "
                f"{self.task} model (per-record scores or predictions are never released)")
        if len(set(self.metrics)) != len(self.metrics):
            raise PolicyViolation("a metric is named twice")
        if not 1 <= self.bins <= 100 or not 0 <= self.decimals <= 6:
            raise ModelError("calibration needs 1 to 100 bins and rounding 0 to 6 decimals")
        if "roc_curve" in self.metrics and self.bins < 2:
            raise ModelError("roc_curve needs bins >= 2 (its points are at the bins - 1 "
                             "probability thresholds between bins)")

    def as_dict(self) -> dict[str, Any]:
        """For the computation spec: what approvers sign."""
        return {"metrics": list(self.metrics), "task": self.task, "bins": self.bins,
                "decimals": self.decimals}


def evaluate(session: Session, model: SharedModel, features: SecretArray, target: SecretArray,
             job: EvaluationJob, policy: OutputPolicy,
             recipients: Sequence[int] | None = None) -> EvaluationResult | None:
    """Run the job; the result at the recipients (all compute parties by default, or
    any outside parties, which call :func:`~concilium.evaluation.release.receive_release`),
    None at the other parties. A rule of ``policy`` the job breaks or that cannot be
    enforced on it raises PolicyViolation before the model runs."""
    if job.task != model.task:
        raise ModelError(f"the job is for a {job.task} model, the model is {model.task}")
    check_evaluation_policy(job.metrics, (), (), policy)
    noise = None if policy.dp_rho is None else evaluation_noise(job.metrics, policy.dp_rho)
    rows = int(features.shape[0])
    prediction = predict(model, features)
    pending = PendingRelease(job.task, rows, curve_bins=job.bins)
    if job.task == "regression":
        values = measures.regression_metrics(target, job.metrics,
                                             predictions=prediction.decision)
        if rows < policy.min_cohort:
            return _suppress(session, job, pending, recipients,
                             f"{rows} rows, fewer than {policy.min_cohort}")
        return _release(session, job, pending, dict(values), policy, recipients)
    classes = 2 if job.task == "binary" else int(prediction.decision.shape[1])
    if noise is not None:
        return _noisy(session, prediction, target, job, classes, noise, policy, recipients)
    small = _below(measures.class_counts(target, classes), policy.min_cohort)
    if small.any():
        return _suppress(session, job, pending, recipients, _small_class(small, policy))
    standard = tuple(name for name in job.metrics if name != "roc_curve")
    values = _classification(prediction, target, job, standard, classes) if standard else {}
    if "calibration" in values:
        small_bins = _below(values["calibration"][:, 0], policy.min_cohort)
        pending.bins = np.flatnonzero(~small_bins)
        pending.hidden.update({f"calibration bin {k}": f"fewer than {policy.min_cohort} rows"
                               for k in np.flatnonzero(small_bins)})
    if "roc_curve" in job.metrics:
        histogram = measures.score_histogram(target, prediction.decision,
                                             curve_thresholds(prediction, job.bins))
        values["roc_curve"] = _curve(pending, histogram, rows, job, policy)
    return _release(session, job, pending, values, policy, recipients)


def curve_thresholds(prediction: Prediction, bins: int) -> np.ndarray:
    """The ROC curve's thresholds on the decision's scale: the probabilities ``1 /
    bins, ..., (bins - 1) / bins`` (the calibration bins' inner edges), as logits
    for a logistic model (the link is monotone: no sigmoid is computed)."""
    edges = np.linspace(0.0, 1.0, bins + 1)[1:-1]
    return np.log(edges / (1.0 - edges)) if prediction.link == "logistic" else edges


def _curve(pending: PendingRelease, histogram: SecretArray, bound: int, job: EvaluationJob,
           policy: OutputPolicy) -> SecretArray:
    """The ROC curve's points (secret), and which of them the band minimum lets out.
    Reveals: one bit per band (below the minimum or not), to every compute party."""
    small = _below(histogram.sum(axis=1), policy.min_cohort)
    pending.points = np.flatnonzero(~small[:-1] & ~small[1:])  # point j: bands j, j + 1
    edges = np.linspace(0.0, 1.0, job.bins + 1)[1:-1]
    for index in np.flatnonzero(small[:-1] | small[1:]):
        pending.hidden[f"roc_curve point at p > {edges[index]:g}"] = (
            f"a band beside it has fewer than {policy.min_cohort} rows")
    return measures.roc_points(histogram, count_bound=bound)


def _noisy(session: Session, prediction: Prediction, target: SecretArray, job: EvaluationJob,
           classes: int, noise: NoisePlan, policy: OutputPolicy,
           recipients: Sequence[int] | None) -> EvaluationResult | None:
    """The job under ``dp``: noisy histograms first, then everything from them."""
    rows = int(target.shape[0])
    keys = {s.key for s in noise.statistics}
    histograms: dict[Any, SecretArray] = {}
    if CONFUSION in keys:
        histograms[CONFUSION] = _classification(prediction, target, job, ("confusion_matrix",),
                                                classes)["confusion_matrix"]
    if SCORE_BANDS in keys:
        histograms[SCORE_BANDS] = measures.score_histogram(
            target, prediction.decision, curve_thresholds(prediction, job.bins))
    noisy = noisy_histograms(session, noise, histograms)
    cells = max(int(np.prod(h.shape)) for h in histograms.values())
    bound = count_bound(noise, rows, session.threat_model, cells)
    counts = (noisy[CONFUSION].sum(axis=1) if CONFUSION in noisy
              else noisy[SCORE_BANDS].sum(axis=0))
    pending = PendingRelease(job.task, None, curve_bins=job.bins,
                             privacy=privacy_report(noise, session.threat_model))
    small = _below(counts, policy.min_cohort)
    if small.any():
        return _suppress(session, job, pending, recipients,
                         _small_class(small, policy) + " (noisy count)")
    values: dict[str, Any] = {}
    if CONFUSION in noisy:
        values["confusion_matrix"] = noisy[CONFUSION]
        if set(job.metrics) & set(measures.MULTICLASS_METRICS) - {"confusion_matrix"}:
            values.update(measures.confusion_ratios(
                noisy[CONFUSION], binary=job.task == "binary", count_bound=bound))
    if SCORE_BANDS in noisy:
        values["roc_curve"] = _curve(pending, noisy[SCORE_BANDS], bound, job, policy)
    return _release(session, job, pending, values, policy, recipients)


def _small_class(small: np.ndarray, policy: OutputPolicy) -> str:
    return f"class {int(np.flatnonzero(small)[0])} has fewer than {policy.min_cohort} rows"


def _classification(prediction: Prediction, target: SecretArray, job: EvaluationJob,
                    metrics: Sequence[str], classes: int) -> dict[str, Any]:
    if job.task == "binary":
        needs_probability = bool(_PROBABILITY_METRICS & set(metrics))
        return dict(measures.binary_metrics(
            target, metrics, decision=prediction.decision, threshold=prediction.threshold,
            probability=prediction.probability() if needs_probability else None,
            bins=job.bins))
    return dict(measures.multiclass_metrics(target, metrics,
                                            predicted=prediction.predicted_class(),
                                            classes=classes))


def _below(counts: SecretArray, minimum: int) -> np.ndarray:
    """Which counts are below ``minimum``, opened to every compute party.
    Reveals: one bit per count (below the minimum or not)."""
    if minimum <= 0:
        return np.zeros(counts.shape, dtype=bool)
    return np.asarray((counts < minimum).reveal(), dtype=bool).reshape(counts.shape)


def _release(session: Session, job: EvaluationJob, pending: PendingRelease,
             values: dict[str, Any], policy: OutputPolicy, recipients: Sequence[int] | None
             ) -> EvaluationResult | None:
    """Round on shares (counts to the policy's ``rounding``, ratios and rates to the
    job's decimals), then open what the policy releases. Reveals: the released metrics."""
    ratio = 10.0 ** -job.decimals
    for name in job.metrics:
        value = values[name]
        if name == "calibration":
            count = value[:, 0]
            pending.values[name] = (count if policy.rounding is None else round_to(
                count, policy.rounding), round_to(value[:, 1:], ratio))
            continue
        step = policy.rounding if name in COUNT_METRICS else ratio
        pending.values[name] = value if step is None else round_to(value, step)
    return release(session, pending, recipients)


def _suppress(session: Session, job: EvaluationJob, pending: PendingRelease,
              recipients: Sequence[int] | None, reason: str) -> EvaluationResult | None:
    pending.hidden.update(dict.fromkeys(job.metrics, reason))
    return suppress_everything(session, pending, recipients)
