"""Which output-policy rules apply to a model evaluation, and how: every rule is
enforced or the evaluation is refused at planning, none is skipped.

- ``allowed_recipients``: every recipient must be allowed.
- ``allowed_columns``: every feature column and the label column must be allowed.
- ``allowed_aggregates``: metrics are counts and averages over rows. The confusion
  matrix is made of counts (``count``); the calibration table holds counts and
  averages (``count`` and ``avg``); every other metric is an average of per-row
  terms, or a ratio of counts, and needs ``avg``.
- ``metrics_only``: holds by construction (a job names aggregate metrics only,
  :class:`~concilium.evaluation.job.EvaluationJob`).
- ``min_cohort`` and ``rounding``: applied inside MPC by
  :func:`~concilium.evaluation.job.evaluate` (per class, per calibration bin, per
  band of the ROC curve).
- ``dominance``: the rule is about sums that a few records dominate. The metrics
  that sum per-row real values (``brier``, ``log_loss``, ``calibration``, ``mse``,
  ``mae``, ``r2``) are refused under it; counting and ranking metrics count rows,
  which no record dominates.
- ``min_difference``: the run's differencing check
  (:func:`~concilium.query.differencing.check_difference`) with the row predicate
  ``TRUE``: an evaluation uses every row of its dataset.
- ``dp``: only what is computed from noisy counts is released. These are the
  confusion matrix with noise on each cell, the ratios computed from the noisy
  cells (accuracy, precision, recall, F1), and the ROC curve from a noisy
  histogram of score bands per class (:mod:`concilium.evaluation.noise`). Metrics
  that are not functions of noisy counts (exact ROC AUC, PR AUC, Brier score, log
  loss, calibration, regression errors) are refused rather than released exactly.
"""

from __future__ import annotations

from collections.abc import Sequence

from concilium.errors import PolicyViolation
from concilium.governance.policy import OutputPolicy

__all__ = ["DOMINATED_METRICS", "NOISY_METRICS", "check_evaluation_policy", "needed_aggregates"]

#: Metrics released under ``dp``: functions of noisy counts only.
NOISY_METRICS = ("confusion_matrix", "accuracy", "precision", "recall", "f1", "roc_curve")
#: Metrics that sum per-row real values (refused under ``dominance``).
DOMINATED_METRICS = frozenset({"brier", "log_loss", "calibration", "mse", "mae", "r2"})


def needed_aggregates(metric: str) -> frozenset[str]:
    """The policy aggregates (``allowed_aggregates`` names) a metric is made of."""
    if metric == "confusion_matrix":
        return frozenset({"count"})
    if metric == "calibration":
        return frozenset({"count", "avg"})
    return frozenset({"avg"})


def check_evaluation_policy(metrics: Sequence[str], columns: Sequence[str],
                            recipients: Sequence[str], policy: OutputPolicy) -> None:
    """Raise :class:`~concilium.errors.PolicyViolation` naming the first rule the
    evaluation breaks or that cannot be enforced on it."""
    if policy.allowed_recipients is not None:
        refused = sorted({r.lower() for r in recipients} - policy.allowed_recipients)
        if refused:
            raise PolicyViolation(f"the output policy does not allow delivering results to "
                                  f"{', '.join(refused)}")
    if policy.allowed_columns is not None:
        extra = sorted({c.lower() for c in columns} - policy.allowed_columns)
        if extra:
            raise PolicyViolation(f"the output policy does not allow column(s) "
                                  f"{', '.join(extra)} (a model's features and label are "
                                  "columns the evaluation reads)")
    if policy.allowed_aggregates is not None:
        for metric in metrics:
            missing = sorted(needed_aggregates(metric) - policy.allowed_aggregates)
            if missing:
                raise PolicyViolation(
                    f"the output policy does not allow {' and '.join(missing)}, which "
                    f"{metric} is made of (allowed: "
                    f"{', '.join(sorted(policy.allowed_aggregates))})")
    if policy.dominance is not None:
        dominated = [m for m in metrics if m in DOMINATED_METRICS]
        if dominated:
            raise PolicyViolation(
                f"the output policy has a dominance rule, which cannot be enforced on "
                f"{', '.join(dominated)} (sums of per-record values): refused (counting "
                "and ranking metrics are allowed)")
    if policy.dp_rho is not None:
        exact = [m for m in metrics if m not in NOISY_METRICS]
        if exact:
            raise PolicyViolation(
                f"under dp, an evaluation releases only metrics computed from noisy counts "
                f"({', '.join(NOISY_METRICS)}); {', '.join(exact)} would be released "
                "exactly and is refused")
