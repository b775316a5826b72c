"""An evaluation job: a model's aggregate metrics on secret rows, through the output
policy, and nothing else.

Every compute party runs the same steps; nothing is opened before step 4:

1. the model on the rows (:func:`~concilium.evaluation.inference.predict`);
2. the metrics on secret shares (:mod:`~concilium.evaluation.metrics`), and the
   counts the policy needs: rows per class, rows per calibration bin;
3. the policy, inside MPC: each class count and each calibration bin's count is
   compared with the policy's ``min_cohort`` and only the comparison's bit is
   opened. A class below the minimum suppresses every metric (each one of them
   depends on every class); a bin below it suppresses that bin. Released counts
   (confusion-matrix cells, bin counts) are rounded on shares to the policy's
   ``rounding``, ratios to ``10^-decimals`` (:func:`~concilium.query.rules.round_to`);
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
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from concilium.data import SecretArray, Session
from concilium.errors import ModelError, PolicyViolation
from concilium.evaluation import metrics as measures
from concilium.evaluation.inference import Prediction, SharedModel, predict
from concilium.governance.policy import OutputPolicy
from concilium.query.rules import round_to

__all__ = ["COUNT_METRICS", "EvaluationJob", "EvaluationResult", "evaluate"]

#: Metrics whose values are counts (rounded to the policy's ``rounding``).
COUNT_METRICS = frozenset({"confusion_matrix"})
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
        known = (measures.REGRESSION_METRICS if self.task == "regression"
                 else measures.CLASSIFICATION_METRICS)
        if self.task not in ("binary", "multiclass", "regression"):
            raise ModelError(f"unknown task {self.task!r}: binary, multiclass or regression")
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

    def as_dict(self) -> dict[str, Any]:
        """For the computation spec: what approvers sign."""
        return {"metrics": list(self.metrics), "task": self.task, "bins": self.bins,
                "decimals": self.decimals}


@dataclass(frozen=True)
class EvaluationResult:
    """What a recipient gets: the released metrics (floats, or nested lists for the
    confusion matrix and calibration table, where a suppressed bin is None) and,
    for each suppressed metric or bin, why."""

    task: str
    rows: int
    metrics: dict[str, Any]
    suppressed: dict[str, str] = field(default_factory=dict)


def evaluate(session: Session, model: SharedModel, features: SecretArray, target: SecretArray,
             job: EvaluationJob, policy: OutputPolicy,
             recipients: Sequence[int] | None = None) -> EvaluationResult | None:
    """Run the job; the result at the recipients (all compute parties by default),
    None at the other parties."""
    if job.task != model.task:
        raise ModelError(f"the job is for a {job.task} model, the model is {model.task}")
    rows = int(features.shape[0])
    prediction = predict(model, features)
    if job.task == "regression":
        values = measures.regression_metrics(target, job.metrics,
                                             predictions=prediction.decision)
        if rows < policy.min_cohort:
            return _suppressed_everything(job, rows, recipients, session,
                                          f"{rows} rows, fewer than {policy.min_cohort}")
        return _release(session, job, rows, values, {}, policy, recipients,
                        np.zeros(0, dtype=bool))
    classes = 2 if job.task == "binary" else int(prediction.decision.shape[1])
    counts = measures.class_counts(target, classes)
    small = _below(counts, policy.min_cohort)
    if small.any():
        return _suppressed_everything(
            job, rows, recipients, session,
            f"class {int(np.flatnonzero(small)[0])} has fewer than {policy.min_cohort} rows")
    values = _classification(prediction, target, job, classes)
    small_bins = np.zeros(job.bins, dtype=bool)
    if "calibration" in values:
        small_bins = _below(values["calibration"][:, 0], policy.min_cohort)
    hidden = {f"calibration bin {k}": f"fewer than {policy.min_cohort} rows"
              for k in np.flatnonzero(small_bins)}
    return _release(session, job, rows, values, hidden, policy, recipients, small_bins)


def _classification(prediction: Prediction, target: SecretArray, job: EvaluationJob,
                    classes: int) -> dict[str, Any]:
    if job.task == "binary":
        needs_probability = bool(_PROBABILITY_METRICS & set(job.metrics))
        return dict(measures.binary_metrics(
            target, job.metrics, decision=prediction.decision, threshold=prediction.threshold,
            probability=prediction.probability() if needs_probability else None,
            bins=job.bins))
    return dict(measures.multiclass_metrics(target, job.metrics,
                                            predicted=prediction.predicted_class(),
                                            classes=classes))


def _below(counts: SecretArray, minimum: int) -> np.ndarray:
    """Which counts are below ``minimum``, opened to every compute party.
    Reveals: one bit per count (below the minimum or not)."""
    if minimum <= 0:
        return np.zeros(counts.shape, dtype=bool)
    return np.asarray((counts < minimum).reveal(), dtype=bool).reshape(counts.shape)


def _release(session: Session, job: EvaluationJob, rows: int, values: dict[str, Any],
             hidden: dict[str, str], policy: OutputPolicy, recipients: Sequence[int] | None,
             small_bins: np.ndarray) -> EvaluationResult | None:
    """Round on shares, open what the policy releases. Reveals: the released metrics."""
    released: dict[str, Any] = {}
    for name in job.metrics:
        value = values[name]
        if name == "calibration":
            released[name] = _calibration(value, small_bins, job, policy, recipients)
            continue
        step = policy.rounding if name in COUNT_METRICS else 10.0 ** -job.decimals
        rounded = value if step is None else round_to(value, step)
        released[name] = rounded.reveal(recipients)
    if recipients is not None and session.party not in recipients:
        return None
    return EvaluationResult(job.task, rows, {k: _plain(v) for k, v in released.items()},
                            hidden)


def _calibration(table: SecretArray, below: np.ndarray, job: EvaluationJob,
                 policy: OutputPolicy, recipients: Sequence[int] | None) -> Any:
    """The bins that meet the minimum (count rounded like counts, the two means like
    ratios); a suppressed bin is None. Reveals: the released bins."""
    keep = np.flatnonzero(~below)
    if keep.size == 0:
        return [None] * table.shape[0]
    kept = table[keep]
    count = kept[:, 0] if policy.rounding is None else round_to(kept[:, 0], policy.rounding)
    means = round_to(kept[:, 1:], 10.0 ** -job.decimals)
    opened_count, opened_means = count.reveal(recipients), means.reveal(recipients)
    if opened_count is None:
        return None
    out: list[Any] = [None] * table.shape[0]
    for position, bin_index in enumerate(keep):
        out[bin_index] = [float(opened_count[position]), *map(float, opened_means[position])]
    return out


def _suppressed_everything(job: EvaluationJob, rows: int, recipients: Sequence[int] | None,
                           session: Session, reason: str) -> EvaluationResult | None:
    if recipients is not None and session.party not in recipients:
        return None
    return EvaluationResult(job.task, rows, {}, dict.fromkeys(job.metrics, reason))


def _plain(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value
