"""An evaluation's outside parties: a vendor, data owners or recipients that are not
compute parties (the outsourced model; :mod:`concilium.data.outside`).

Each contributes exactly what a compute party in its place would input, in the
same order as :func:`~concilium.evaluation.governed.run_evaluation` at the
compute parties:

1. under ``min_difference``, an owner first shares its counts for the
   differencing check (:func:`~concilium.query.differencing.difference_inputs`,
   the predicate ``TRUE``);
2. the vendor shares its model's numbers
   (:func:`~concilium.evaluation.inference.contribute_model`);
3. an owner shares its rows (the feature columns, fixed point) and their labels.

A recipient then receives the released metrics
(:func:`~concilium.evaluation.release.receive_release`).

Reveals: what the compute parties' side reveals (each owner's row count, the
model's public shape); the metrics to the recipients only.
"""

from __future__ import annotations

from collections.abc import Mapping

from concilium.data import OutsideParty
from concilium.data.dataset import Dataset
from concilium.errors import ModelError
from concilium.evaluation.governed import EvaluationPlan, evaluation_rows
from concilium.evaluation.inference import contribute_model
from concilium.evaluation.models import Model
from concilium.evaluation.release import EvaluationResult, receive_release
from concilium.query.differencing import difference_inputs

__all__ = ["take_part"]


def take_part(outside: OutsideParty, plan: EvaluationPlan, datasets: Mapping[str, Dataset],
              model: Model | None, recipient: bool) -> EvaluationResult | None:
    """Everything an outside party of an evaluation does: contribute, then receive."""
    me = outside.party
    if me == plan.vendor and model is None:
        raise ModelError(f"this node is the vendor and does not hold the model "
                         f"{plan.model_sha256[:12]}...; register it with concilium model add")
    owner = me in plan.owners
    if owner and plan.dataset not in datasets:
        raise ModelError(f"this node owns {plan.dataset!r} in the spec but has no such dataset")
    if owner and plan.policy.min_difference:
        for values, fixed in difference_inputs("TRUE", datasets[plan.dataset]):
            outside.contribute(values, fixed=fixed)
    if me == plan.vendor:
        assert model is not None
        contribute_model(outside, model, plan.model_shape)
    if owner:
        features, labels = evaluation_rows(plan, datasets[plan.dataset])
        outside.contribute(features, fixed=True)
        outside.contribute(labels, fixed=plan.job.task == "regression")
    return receive_release(outside) if recipient else None
