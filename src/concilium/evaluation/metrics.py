"""Metrics of a model's predictions, computed on secret shares.

Every function takes secret arrays (labels, scores, probabilities, targets) and
returns *secret* results, one :class:`~concilium.data.SecretArray` per metric
name: nothing about a single record is opened here, and neither are the
results. The caller reveals them after its output policy (the counts in
``confusion_matrix``, :func:`class_counts` and the first column of
``calibration`` are what such a policy checks).

Definitions follow scikit-learn (cited per metric below); differences that
fixed point forces are stated where they arise:

- **Predicted class** (binary): 1 where the stored (fixed-point) ``decision`` is
  strictly greater than ``threshold``, else 0 (``LogisticRegression.predict``'s
  ``decision_function(x) > 0``; for probabilities pass ``threshold=0.5``: class 1
  where ``p > 0.5``). The comparison is exact on the stored value: the
  threshold is rounded *down* to the fixed-point grid, so ``x > threshold``
  holds for the stored ``x`` exactly as in floating point.
- **Zero denominators** (precision, recall, F1, fractions of a bin): the
  ratio is 0 (scikit-learn's ``zero_division=0``), produced by the division
  protocol itself, so nothing reveals whether a denominator was 0. ROC AUC and
  average precision without positives (or, for ROC AUC, without negatives) are
  0; scikit-learn raises or warns there, an output policy should require both
  classes (:func:`class_counts`).
- **Clipping** (log loss): probabilities are clipped to ``[2^-f, 1 - 2^-f]``,
  ``2^-f`` being the smallest positive fixed-point value (``f`` fraction bits, 16
  by default: ``[1.53e-5, 1 - 1.53e-5]``); scikit-learn clips to the float64
  machine epsilon, so the two agree for probabilities inside that interval.
- **Ties** in ranking metrics are ties of the stored fixed-point values.

Accuracy: counts are exact (ring integers); ratios come from the division by
a count of :mod:`concilium.ops.count_division`, computed with up to 8 extra
fraction bits (32 bits in all for average precision's per-threshold
precisions) before the final rounding: within about one unit ``2^-f`` of the
exact value. Means of squares and logarithms add the unbiased rounding of each
product and the stated error of ``log`` (:mod:`concilium.ops.accuracy`).
Products use the reliable truncation (the exact floor in an ``"exact"``
session) even in a ``"fast"`` session, whose truncation fails too often at the
magnitudes of squared errors.

Ranges: fewer than ``2^30`` rows (``roc_auc``: ``2^26``, about 6.7e7); regression
means (of the targets, of squared and of absolute errors) below ``2^26`` (about
6.7e7: root mean squared errors up to about 8000) and single squared errors
below ``2^30``. More rows raise :class:`~concilium.errors.ConfigurationError`;
larger values give wrong results, since a secret's range cannot be checked
without revealing something about it.

Reveals: what :func:`concilium.data.functions.sort` reveals for ``roc_auc`` and
``pr_auc`` (comparison outcomes of secretly shuffled, distinct rows: a
uniformly random permutation, independent of the data), and nothing else.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from concilium.data import SecretArray
from concilium.data import functions as fn
from concilium.errors import ConfigurationError, InputError, ShapeMismatch
from concilium.evaluation.share_arithmetic import (
    check_rows,
    column_dot,
    greater_than_grid,
    mean_over_rows,
    one_hot,
    quotient,
    secret_column,
    settle,
    square,
    wanted_names,
)

__all__ = ["CLASSIFICATION_METRICS", "MULTICLASS_METRICS", "REGRESSION_METRICS",
           "binary_metrics", "class_counts", "confusion_ratios", "multiclass_metrics",
           "regression_metrics", "roc_points", "score_histogram"]

CLASSIFICATION_METRICS = ("accuracy", "precision", "recall", "f1", "confusion_matrix",
                          "roc_auc", "pr_auc", "brier", "log_loss", "calibration")
#: The names :func:`multiclass_metrics` takes.
MULTICLASS_METRICS = ("accuracy", "precision", "recall", "f1", "confusion_matrix")
REGRESSION_METRICS = ("mse", "mae", "r2")

_COUNTING = frozenset({"accuracy", "precision", "recall", "f1", "confusion_matrix"})
_RATIOS = frozenset({"accuracy", "precision", "recall", "f1"})
_RATIO_NAMES = ("accuracy", "precision", "recall", "f1")
_RANKING = frozenset({"roc_auc", "pr_auc"})
_NEEDS_PROBABILITY = ("brier", "log_loss", "calibration")
_PRECISION_BITS = 16  # average precision's per-threshold ratios: f + 16 bits
_LOG_BOUND = 12.0  # |ln(clipped p)| <= 16 ln 2 = 11.1
_REGRESSION_BOUND = 2.0**26  # means of targets and errors (see the module docstring)
_MOST_RANKED_ROWS = 2**26  # roc_auc's 2U / P, at f bits, must fit the division by a count


# -- binary classification -----------------------------------------------------------------
def binary_metrics(labels: SecretArray, names: Sequence[str], *, decision: SecretArray,
                   threshold: float = 0.0, probability: SecretArray | None = None,
                   bins: int = 10) -> dict[str, SecretArray]:
    """Binary classification metrics of secret 0/1 integer ``labels`` (n,), by name
    (:data:`CLASSIFICATION_METRICS`), each a secret array; nothing is revealed.

    ``decision``: a secret score per row, any increasing function of the probability
    of class 1 (a logit, a margin, the probability itself). Rows are predicted 1
    where ``decision > threshold`` (exactly, for the stored fixed-point value).
    ``probability``: secret P(class 1) in ``[0, 1]``, needed by ``brier``,
    ``log_loss`` and ``calibration``. Results (scikit-learn's definitions):

    - ``confusion_matrix``: integers ``[[TN, FP], [FN, TP]]``
      (``sklearn.metrics.confusion_matrix``, rows the true class);
    - ``accuracy`` ``(TP + TN) / n``, ``precision`` ``TP / (TP + FP)``, ``recall``
      ``TP / (TP + FN)``, ``f1`` ``2 TP / (2 TP + FP + FN)``, each 0 when its
      denominator is 0 (``zero_division=0``). Cost: one comparison per row, one
      dot product, and one division of four counts (about 43 rounds);
    - ``roc_auc``: the exact area under the ROC curve, the Mann-Whitney statistic
      ``U / (P N)`` with ties counted 1/2 (Hanley and McNeil, "The meaning and use
      of the area under a receiver operating characteristic (ROC) curve",
      Radiology 1982), as ``sklearn.metrics.roc_auc_score``. Rows are sorted by
      score (one secure sort carrying the labels); running sums of positives and
      negatives within runs of tied scores (n - 1 equality tests, ``ceil(log2 n)``
      multiplication rounds) give ``2U = sum_i pr_i + sum_i y_i (2 cn_i - nr_i -
      pr_i)`` (``cn``: negatives so far, ``pr``/``nr``: positives/negatives so far
      within the tie), one dot product; then two scalar divisions by counts;
    - ``pr_auc``: average precision, ``sum_t (R_t - R_t-1) P_t`` over the distinct
      scores ``t`` (``sklearn.metrics.average_precision_score``, no interpolation),
      evaluated at the last row of each tie run from the same sort: additionally
      one multiplication and one division by a count per row, one dot product;
    - ``brier``: ``mean((p - y)^2)`` (``brier_score_loss``); ``log_loss``:
      ``-mean(y ln p + (1 - y) ln(1 - p))`` with ``p`` clipped to
      ``[2^-f, 1 - 2^-f]`` (``log_loss``): one comparison, one product and one
      ``log`` per row, a division by the public row count;
    - ``calibration``: fixed point ``(bins, 3)``, per bin ``[count, mean predicted
      probability, fraction of positives]`` for ``bins`` equal-width bins of
      ``[0, 1]`` (``sklearn.calibration.calibration_curve(strategy="uniform")``:
      edges ``numpy.linspace(0, 1, bins + 1)``, ``p`` in bin ``i`` when ``edge_i <
      p <= edge_(i+1)``, the first bin from 0 included and the last to 1). A bin
      without rows has all three entries 0 (scikit-learn drops it). Cost:
      ``bins - 1`` comparisons per row, one matrix product, one division of
      ``2 bins`` values.

    Raises :class:`~concilium.errors.ConfigurationError` for an unknown name or a
    probability metric without ``probability``. Reveals: see the module docstring.
    """
    wanted = wanted_names(names, CLASSIFICATION_METRICS, "binary classification")
    y = secret_column(labels, "labels", integer=True)
    rows = y.shape[0]
    check_rows(rows)
    score = secret_column(decision, "decision", rows)
    missing = [name for name in wanted if name in _NEEDS_PROBABILITY]
    if missing and probability is None:
        raise ConfigurationError(f"metric {missing[0]!r} needs the secret probability of "
                                 "class 1: pass probability=...")
    if "roc_auc" in wanted and rows >= _MOST_RANKED_ROWS:
        raise ConfigurationError(f"roc_auc takes fewer than 2^26 rows, got {rows}")
    if "calibration" in wanted and (not isinstance(bins, int) or bins < 1):
        raise ConfigurationError(f"calibration needs at least one bin, got bins={bins!r}")
    p = None if probability is None else secret_column(probability, "probability", rows)
    results: dict[str, SecretArray] = {}
    positives = y.sum()
    if _COUNTING.intersection(wanted):
        results.update(_counting(y, positives, score, threshold, wanted))
    if _RANKING.intersection(wanted):
        results.update(_ranking(y, positives, score, wanted))
    if missing and p is not None:
        results.update(_probability_metrics(y, p.as_fixed(), wanted, bins))
    return {name: results[name] for name in wanted}


def _counting(y: SecretArray, positives: SecretArray, score: SecretArray, threshold: float,
              wanted: list[str]) -> dict[str, SecretArray]:
    """Confusion matrix and the ratios derived from it."""
    rows = y.shape[0]
    predicted = greater_than_grid(score, threshold)
    true_positive = column_dot(y, predicted)
    predicted_positive = predicted.sum()
    true_negative = rows - positives - predicted_positive + true_positive
    false_positive = predicted_positive - true_positive
    false_negative = positives - true_positive
    confusion = SecretArray.stack(
        [true_negative, false_positive, false_negative, true_positive]).reshape(2, 2)
    results = {"confusion_matrix": confusion}
    if _RATIOS.intersection(wanted):
        results.update(confusion_ratios(confusion, binary=True, count_bound=rows))
    return results


def confusion_ratios(confusion: SecretArray, *, binary: bool, count_bound: int
                     ) -> dict[str, SecretArray]:
    """``accuracy``, ``precision``, ``recall`` and ``f1`` from a secret integer
    confusion matrix (rows the true class, columns the predicted one) whose entries
    are at least 0 and sum to at most ``count_bound``: an exact one, or a noisy one
    under differential privacy (:mod:`concilium.evaluation.noise`).

    ``binary``: the ratios of class 1 (scikit-learn's ``pos_label=1``); otherwise
    macro averages over every class, a class with a zero denominator counting 0.
    One division of the counts (about 43 rounds). Reveals: nothing."""
    classes = confusion.shape[0]
    diagonal = confusion[np.arange(classes), np.arange(classes)]
    true_counts = confusion.sum(axis=1)
    predicted_counts = confusion.sum(axis=0)
    total = true_counts.sum()
    if binary:
        hits = diagonal[1]
        numerators = SecretArray.stack([diagonal.sum(), hits, hits, 2 * hits])
        counts = SecretArray.stack([total, predicted_counts[1], true_counts[1],
                                    true_counts[1] + predicted_counts[1]])
        ratios = settle(quotient(numerators, counts, count_bound=2 * count_bound,
                                   quotient_bound=1.0))
        return {name: ratios[index] for index, name in enumerate(_RATIO_NAMES)}
    numerators = SecretArray.concatenate([diagonal.sum().reshape(1), diagonal, diagonal,
                                          2 * diagonal], axis=0)
    # dividing by classes * count makes each macro average a plain sum
    counts = SecretArray.concatenate(
        [total.reshape(1), classes * predicted_counts, classes * true_counts,
         classes * (true_counts + predicted_counts)], axis=0)
    ratios = quotient(numerators, counts, count_bound=2 * count_bound * classes,
                       quotient_bound=1.0)
    parts = [ratios[:1].sum()] + [ratios[1 + k * classes:1 + (k + 1) * classes].sum()
                                  for k in range(3)]
    settled = settle(SecretArray.stack(parts))
    return {name: settled[index] for index, name in enumerate(_RATIO_NAMES)}


def score_histogram(labels: SecretArray, decision: SecretArray, thresholds: np.ndarray
                    ) -> SecretArray:
    """Secret integer counts ``(k + 1, 2)`` of rows per score band and true class
    (columns: class 0, class 1), for ``k`` increasing public ``thresholds`` on the
    decision's scale: band 0 holds ``decision <= t_1``, band ``j`` holds ``t_j <
    decision <= t_(j+1)``, band ``k`` holds ``decision > t_k`` (exactly, for the
    stored fixed-point value). What :func:`roc_points` and a policy's band minimum
    read. Cost: ``k`` comparisons per row, one matrix product. Reveals: nothing."""
    y = secret_column(labels, "labels", integer=True)
    rows = y.shape[0]
    check_rows(rows)
    score = secret_column(decision, "decision", rows)
    edges = np.asarray(thresholds, dtype=np.float64).reshape(-1)
    if edges.size == 0 or not np.all(np.diff(edges) > 0) or not np.all(np.isfinite(edges)):
        raise ConfigurationError("score bands need at least one threshold, finite and "
                                 "increasing")
    above = greater_than_grid(score.reshape(rows, 1), edges.reshape(1, -1))  # (rows, k)
    membership = SecretArray.concatenate(
        [1 - above[:, :1], above[:, :-1] - above[:, 1:], above[:, -1:]], axis=1)
    return membership.T @ SecretArray.stack([1 - y, y], axis=1)


def roc_points(histogram: SecretArray, *, count_bound: int) -> SecretArray:
    """Fixed point ``(k, 2)``: ``[false positive rate, true positive rate]`` at each of
    the ``k`` thresholds of a :func:`score_histogram` (rows scoring above the
    threshold among the negatives and among the positives), from counts at least 0
    whose class totals are at most ``count_bound``. These are the points of
    ``sklearn.metrics.roc_curve`` at those thresholds; a class without rows gives
    rates of 0. One division of ``2 k`` values. Reveals: nothing."""
    bands = histogram.shape[0]
    # above[j] = sum of bands j + 1 .. k: a public 0/1 matrix, applied locally
    upper = np.triu(np.ones((bands - 1, bands), dtype=np.int64), k=1)
    above = (histogram.reshape(1, bands, 2) * upper.reshape(bands - 1, bands, 1)).sum(axis=1)
    totals = histogram.sum(axis=0).reshape(1, 2)
    counts = SecretArray.concatenate([totals] * (bands - 1), axis=0)
    return settle(quotient(above, counts, count_bound=count_bound, quotient_bound=1.0))


def _ranking(y: SecretArray, positives: SecretArray, score: SecretArray,
             wanted: list[str]) -> dict[str, SecretArray]:
    """ROC AUC and average precision from one sort by score (ascending)."""
    rows = y.shape[0]
    f = y.session.codec.fractional_bits
    (keys,), (ordered,) = fn.sort(score, [y])
    negative = 1 - ordered
    (positive_run, negative_run), last = fn.segmented_sum(keys, ordered, negative)
    negatives = rows - positives
    results: dict[str, SecretArray] = {}
    if "roc_auc" in wanted:
        # 2U = sum over positives of 2 (negatives in lower ties) + negatives in its tie
        weights = 2 * negative.cumsum() - negative_run - positive_run
        twice_u = positive_run.sum() + column_dot(ordered, weights)
        per_positive = quotient(twice_u, positives, count_bound=rows,
                                 quotient_bound=2.0 * rows)  # 2U / P <= 2N
        area = quotient(per_positive, 2 * negatives, count_bound=2 * rows,
                         quotient_bound=1.0, extra=per_positive.fractional_bits - f)
        results["roc_auc"] = settle(area)
    if "pr_auc" in wanted:
        # at the last row i of a tie run: TP and predicted positives at its threshold
        true_positive = positives.reshape(1) - ordered.cumsum() + positive_run
        predicted_positive = positive_run + negative_run + (rows - np.arange(1, rows + 1))
        precision = quotient(true_positive, predicted_positive, count_bound=rows,
                              quotient_bound=1.0, extra=_PRECISION_BITS)
        weighted = column_dot(last * positive_run, precision)  # sum_t (positives at t) P_t
        average = quotient(weighted, positives, count_bound=rows, quotient_bound=1.0,
                            extra=weighted.fractional_bits - f)
        results["pr_auc"] = settle(average)
    return results


def _probability_metrics(y: SecretArray, p: SecretArray, wanted: list[str],
                         bins: int) -> dict[str, SecretArray]:
    """Brier score, log loss and the calibration table."""
    rows = y.shape[0]
    results: dict[str, SecretArray] = {}
    totals: list[SecretArray] = []
    if "brier" in wanted:
        error = p - y
        totals.append(square(error).sum())
    if "log_loss" in wanted:
        unit = p.session.codec.resolution
        low, high = unit, 1.0 - unit
        outside = SecretArray.stack([p, -p]) < np.array([[low], [-high]])  # p < low, p > high
        clipped = p + (outside * SecretArray.stack([low - p, high - p])).sum(axis=0)
        chosen = 1 - clipped + y * (2 * clipped - 1)  # p where y = 1, else 1 - p
        totals.append(-fn.log(chosen).sum())
    if totals:
        means = mean_over_rows(SecretArray.stack(totals), rows, _LOG_BOUND)
        for index, name in enumerate(n for n in ("brier", "log_loss") if n in wanted):
            results[name] = means[index]
    if "calibration" in wanted:
        results["calibration"] = _calibration(y, p, bins)
    return results


def _calibration(y: SecretArray, p: SecretArray, bins: int) -> SecretArray:
    rows = y.shape[0]
    session = y.session
    if bins == 1:
        membership = session.constant(np.ones((rows, 1), dtype=np.int64))
    else:
        edges = np.linspace(0.0, 1.0, bins + 1)[1:-1]
        above = greater_than_grid(p.reshape(rows, 1), edges.reshape(1, -1))  # (rows, bins - 1)
        membership = SecretArray.concatenate(
            [1 - above[:, :1], above[:, :-1] - above[:, 1:], above[:, -1:]], axis=1)
    counts = membership.sum(axis=0)
    sums = membership.T @ SecretArray.stack([p, y.as_fixed()], axis=1)  # (bins, 2)
    means = settle(quotient(sums, SecretArray.stack([counts, counts], axis=1),
                              count_bound=rows, quotient_bound=1.0))
    return SecretArray.stack([counts.as_fixed(), means[:, 0], means[:, 1]], axis=1)


# -- multiclass classification -----------------------------------------------------------
def class_counts(labels: SecretArray, classes: int) -> SecretArray:
    """Secret integer counts of rows per class ``0 .. classes - 1`` of secret integer
    ``labels`` (n,), what an output policy checks for minimum counts per class.

    Two classes (labels 0/1): ``[n - sum, sum]``, free. More: ``n * classes``
    equality tests in one batch. Reveals: nothing.
    """
    y = secret_column(labels, "labels", integer=True)
    if not isinstance(classes, int) or classes < 2:
        raise ConfigurationError(f"classes must be an integer of at least 2, got {classes!r}")
    if classes == 2:
        total = y.sum()
        return SecretArray.stack([y.shape[0] - total, total])
    return one_hot(y, classes).sum(axis=0)


def multiclass_metrics(labels: SecretArray, names: Sequence[str], *, predicted: SecretArray,
                       classes: int) -> dict[str, SecretArray]:
    """Multiclass metrics (:data:`MULTICLASS_METRICS`) of secret integer class indices
    ``labels`` (n,) and a secret one-hot 0/1 integer ``predicted`` (n, classes).

    ``confusion_matrix``: integers (classes, classes), rows the true class, columns
    the predicted one (``sklearn.metrics.confusion_matrix(labels=range(classes))``);
    ``accuracy``; ``precision``, ``recall``, ``f1``: macro averages over all
    ``classes`` classes of the per-class ratios, a class with a zero denominator
    counting 0 (``average="macro", zero_division=0, labels=range(classes)``;
    scikit-learn without ``labels`` averages only over the classes present).

    Cost: ``n * classes`` equality tests (the labels one-hot), one matrix product
    (the confusion matrix) and one division of ``1 + 3 classes`` counts (about 43
    rounds). Reveals: nothing.
    """
    wanted = wanted_names(names, MULTICLASS_METRICS, "multiclass")
    y = secret_column(labels, "labels", integer=True)
    rows = y.shape[0]
    check_rows(rows)
    if not isinstance(classes, int) or classes < 2:
        raise ConfigurationError(f"classes must be an integer of at least 2, got {classes!r}")
    if not isinstance(predicted, SecretArray) or predicted.is_fixed:
        raise InputError("predicted must be a secret one-hot integer array")
    if predicted.shape != (rows, classes):
        raise ShapeMismatch(f"predicted must have shape {(rows, classes)} (rows, classes), "
                            f"got {predicted.shape}")
    confusion = one_hot(y, classes).T @ predicted
    results = {"confusion_matrix": confusion}
    if _RATIOS.intersection(wanted):
        results.update(confusion_ratios(confusion, binary=False, count_bound=rows))
    return {name: results[name] for name in wanted}


# -- regression ------------------------------------------------------------------------------
def regression_metrics(targets: SecretArray, names: Sequence[str], *,
                       predictions: SecretArray) -> dict[str, SecretArray]:
    """Regression metrics (:data:`REGRESSION_METRICS`) of secret ``targets`` and
    ``predictions`` (n,), fixed point, as scikit-learn defines them:

    - ``mse``: ``mean((t - p)^2)`` (``mean_squared_error``): one product per row;
    - ``mae``: ``mean(|t - p|)`` (``mean_absolute_error``): one sign extraction and
      one product per row;
    - ``r2``: ``1 - mse / var(t)`` (``r2_score``), the variance about the secret
      mean of the targets (two passes, no cancellation): one more product per row
      and a fixed-point division. Constant targets (variance 0) give 1 (scikit-learn
      gives 1 for a perfect fit and 0 otherwise).

    Means are divisions by the public row count (about 43 rounds each pass).
    Ranges: see the module docstring. Reveals: nothing.
    """
    wanted = wanted_names(names, REGRESSION_METRICS, "regression")
    t = secret_column(targets, "targets").as_fixed()
    rows = t.shape[0]
    check_rows(rows)
    p = secret_column(predictions, "predictions", rows).as_fixed()
    error = t - p
    totals: dict[str, SecretArray] = {}
    if "mse" in wanted or "r2" in wanted:
        totals["mse"] = square(error).sum()
    if "mae" in wanted:
        totals["mae"] = abs(error).sum()
    if "r2" in wanted:
        totals["mean"] = t.sum()
    means = mean_over_rows(SecretArray.stack(list(totals.values())), rows, _REGRESSION_BOUND)
    results = {name: means[index] for index, name in enumerate(totals)}
    if "r2" in wanted:
        centered = t - results["mean"].reshape(1)
        variance = mean_over_rows(square(centered).sum().reshape(1), rows,
                         _REGRESSION_BOUND)[0]
        results["r2"] = 1 - fn.divide(results["mse"], variance)
    return {name: results[name] for name in wanted}
