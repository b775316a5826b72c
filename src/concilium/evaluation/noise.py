"""Differential privacy for a model evaluation: Skellam noise, made inside MPC, on
the histograms its released metrics are computed from.

Under an output policy with ``dp = { rho = R }`` an evaluation may release only
metrics that are functions of noisy counts (:data:`~concilium.evaluation.policy.NOISY_METRICS`).
Two histograms hold every such count:

- the **confusion matrix** (true class x predicted class), for ``confusion_matrix``
  and the ratios ``accuracy``, ``precision``, ``recall`` and ``f1`` computed from its
  noisy cells;
- the **score bands** (band x true class), for ``roc_curve``: how many rows of each
  class have a score in each band between the curve's thresholds.

Adding or removing one row changes one cell of each histogram by one, so each
histogram has L2 sensitivity 1. The histograms the job needs split the job's
``R`` evenly, and each gets ``Sk(mu)`` noise per cell with ``mu = 1 / (2 R / m)``
(:func:`~concilium.mpc.noise.skellam_mu`). The noise is drawn by every compute
party and summed on shares, exactly as for queries (:func:`concilium.query.privacy.add_noise`;
Agarwal, Kairouz and Liu, NeurIPS 2021). The rest post-processes the noisy
cells, on shares, before anything is opened:

- negative cells are set to 0;
- class counts for the minimum-cohort check are sums of noisy cells;
- ratios are divisions of noisy counts;
- rounding to the policy's ``rounding`` follows.

The released values come with the mechanism, each histogram's ``mu`` and the 95%
half-width of a cell's total noise (:func:`privacy_report`).

The row count of each owner is visible to the compute parties, since rows are
secret-shared one by one. It is not released to the recipients under ``dp``.

Reveals: nothing (the noisy histograms stay secret; the job opens what the policy
releases).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from concilium.data import SecretArray, Session
from concilium.data import functions as fn
from concilium.errors import PolicyViolation
from concilium.mpc.noise import MAX_DEVIATION, skellam_mu, skellam_rho, skellam_table
from concilium.mpc.protocols import ThreatModel
from concilium.query.privacy import NoisedStatistic, NoisePlan, add_noise, honest_parties
from concilium.query.statistics import StatisticKey

__all__ = ["CONFUSION", "SCORE_BANDS", "count_bound", "evaluation_noise", "noisy_histograms",
           "privacy_report"]

#: The confusion matrix's statistic (true class x predicted class).
CONFUSION = StatisticKey("confusion_matrix")
#: The ROC curve's statistic (score band x true class).
SCORE_BANDS = StatisticKey("score_bands")
_FROM_CONFUSION = frozenset({"confusion_matrix", "accuracy", "precision", "recall", "f1"})


def evaluation_noise(metrics: Sequence[str], rho: float) -> NoisePlan:
    """The noise of an evaluation job releasing ``metrics`` under ``dp = { rho }``."""
    keys = ([CONFUSION] if _FROM_CONFUSION & set(metrics) else []) + (
        [SCORE_BANDS] if "roc_curve" in metrics else [])
    if not keys:
        raise PolicyViolation("under dp an evaluation releases only metrics computed from "
                              "noisy counts (the confusion matrix, its ratios, the ROC curve)")
    share = rho / len(keys)
    if 1.0 / math.sqrt(2 * share) > MAX_DEVIATION:
        raise PolicyViolation(f"dp rho={rho:g} makes noise of more than {MAX_DEVIATION:g} "
                              "rows per cell; no count would survive it")
    mu = skellam_mu(share, 1)
    return NoisePlan(rho, "skellam", tuple(
        NoisedStatistic(key, 1.0, 0, 1, mu, skellam_rho(mu, 1)) for key in keys))


def count_bound(plan: NoisePlan, rows: int, threat: ThreatModel, cells: int) -> int:
    """A public bound on a sum of up to ``cells`` noisy counts of ``rows`` rows (their
    negative cells set to 0): every party's draw is cut at its table's edge."""
    honest = honest_parties(threat)
    cut = max(skellam_table(s.party_mu(honest)).cut for s in plan.statistics)
    return rows + cells * threat.compute_parties * cut


def noisy_histograms(session: Session, plan: NoisePlan, histograms: dict[StatisticKey, SecretArray]
                     ) -> dict[StatisticKey, SecretArray]:
    """Each planned histogram plus its noise, negative cells set to 0 (on shares).

    Reveals: nothing."""
    totals: dict[Any, SecretArray] = dict(histograms)
    add_noise(session, plan, totals, owners=0)
    return {key: fn.relu(totals[key]) for key in histograms}


def privacy_report(plan: NoisePlan, threat: ThreatModel) -> dict[str, Any]:
    """What a recipient is told about the noise: the mechanism and cost, and per
    histogram its ``mu`` and the 95% half-width of one cell's total noise."""
    parties, honest = threat.compute_parties, honest_parties(threat)
    return {**plan.as_dict(), "honest_parties": honest, "parties": parties, "columns": {},
            "statistics": [{"statistic": s.key.alias, "mu": s.mu, "sensitivity": s.sensitivity,
                            "rho": s.rho, "interval95": s.half_width(parties, honest, 0)}
                           for s in plan.statistics]}
