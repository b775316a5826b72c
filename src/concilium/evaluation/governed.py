"""A model evaluation as a governed computation: in the spec, checked, run, tabled.

The computation spec's ``evaluation`` section (:func:`evaluation_section`) holds
what approvers sign besides the datasets, recipients and policy: the model's
SHA-256 and its public shape (what the shape reveals: layer sizes, number and
depth of trees, which feature each node tests), the vendor node, the feature
columns (in the model's order) and the label column of one dataset, and the
job (metrics, task, calibration bins, decimals). The vendor's approval is
required as well as the owners'.

:func:`plan_evaluation` is what every node runs on such a spec before it
approves and again before it shares: the dataset's schema must have every
feature as a numeric column and the label as a whole-number column (within
``0..k-1`` for a classifier), the number of features must be the model's, the
metrics must be aggregate metrics of the model's task, and every rule of the
effective output policy must be enforceable on the job
(:mod:`concilium.evaluation.policy`: recipients, columns, aggregates, dominance,
``dp``). Where the vendor, an owner or a recipient is an outside party
(:mod:`concilium.evaluation.outside`), the protocol must support outside
parties. Every refusal is a typed error before anything is shared.

:func:`run_evaluation` runs it on a compute party: each owner (in the spec's
owner order) inputs its rows and labels, the vendor its model, and the job
(:func:`concilium.evaluation.job.evaluate`) releases the metrics to the
recipients as a two-column table (metric, value). Under ``min_difference`` the
differencing check runs first, before the model or any row is shared.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from concilium.data import SecretArray, Session
from concilium.data.dataset import Dataset
from concilium.data.schema import ColumnType, Schema
from concilium.errors import ConfigurationError, DatasetError, ModelError
from concilium.evaluation.inference import share_model
from concilium.evaluation.job import EvaluationJob, EvaluationResult, evaluate
from concilium.evaluation.models import Model
from concilium.evaluation.noise import evaluation_noise
from concilium.evaluation.policy import check_evaluation_policy
from concilium.governance.consortium import Manifest
from concilium.governance.policy import OutputPolicy
from concilium.governance.spec import ComputationSpec
from concilium.mpc.protocols import ThreatModel, protocol
from concilium.query.differencing import check_difference

__all__ = ["EvaluationPlan", "check_evaluation_inputs", "describe_evaluation",
           "evaluation_request", "evaluation_rows", "evaluation_section", "model_digest",
           "plan_evaluation", "result_frame", "run_evaluation"]

_NUMERIC = (ColumnType.INT, ColumnType.FIXED, ColumnType.BOOL)


def model_digest(content: bytes) -> str:
    """The model's identity in a spec: SHA-256 of its file's bytes (ONNX or JSON)."""
    return hashlib.sha256(content).hexdigest()


def evaluation_section(model: Model, digest: str, vendor: str, dataset: str,
                       features: Sequence[str], label: str, job: EvaluationJob
                       ) -> dict[str, Any]:
    """The spec's ``evaluation`` section for a proposal."""
    return {"model": {"sha256": digest, "shape": model.shape()}, "vendor": vendor,
            "dataset": dataset, "features": list(features), "label": label, **job.as_dict()}


def evaluation_request(body: Mapping[str, Any]) -> dict[str, Any]:
    """A proposal's evaluation (from the API or a job file) as the spec's section, its
    job checked (only aggregate metrics of the model's task)."""
    try:
        digest, shape = str(body["model"]["sha256"]), dict(body["model"]["shape"])
        model = {"sha256": digest, "shape": shape}
        job = EvaluationJob(tuple(body["metrics"]), str(body.get("task", shape["task"])),
                            int(body.get("bins", 10)), int(body.get("decimals", 4)))
        return {"model": model, "vendor": str(body["vendor"]), "dataset": str(body["dataset"]),
                "features": [str(f) for f in body["features"]], "label": str(body["label"]),
                **job.as_dict()}
    except (KeyError, TypeError, ValueError) as error:
        raise ConfigurationError(f"an evaluation names model {{sha256, shape}}, vendor, "
                                 f"dataset, features, label and metrics: {error}") from None


@dataclass(frozen=True)
class EvaluationPlan:
    """A checked evaluation spec: party indices and the job."""

    dataset: str
    features: tuple[str, ...]
    label: str
    vendor: int
    owners: tuple[int, ...]
    recipients: tuple[int, ...]
    model_sha256: str
    model_shape: dict[str, Any]
    job: EvaluationJob
    policy: OutputPolicy


def plan_evaluation(spec: ComputationSpec, manifest: Manifest) -> EvaluationPlan:
    """Check an evaluation spec against its schema, policy and consortium."""
    section = spec.evaluation
    try:
        shape = dict(section["model"]["shape"])
        job = EvaluationJob(tuple(section["metrics"]), str(section["task"]),
                            int(section.get("bins", 10)), int(section.get("decimals", 4)))
        dataset, label = str(section["dataset"]), str(section["label"])
        features = tuple(str(f) for f in section["features"])
        vendor, digest = str(section["vendor"]), str(section["model"]["sha256"])
    except (KeyError, TypeError, ValueError) as error:
        raise ConfigurationError(f"malformed evaluation in the spec: {error}") from None
    if spec.datasets != (dataset,):
        raise ConfigurationError(f"an evaluation uses exactly its dataset {dataset!r}")
    if shape.get("task") != job.task:
        raise ModelError(f"the job is for a {job.task} model; the model is a "
                         f"{shape.get('task')} model")
    _check_columns(Schema.from_mapping(spec.tables[dataset]["schema"]), features, label,
                   shape, dataset)
    policy = OutputPolicy.from_mapping(spec.policy)
    check_evaluation_policy(job.metrics, (*features, label), spec.recipients, policy)
    if policy.dp_rho is not None:
        evaluation_noise(job.metrics, policy.dp_rho)
    compute = {i for i, p in enumerate(manifest.parties) if p.is_compute}
    owners = tuple(manifest.index(o) for o in spec.owners(dataset))
    recipients = tuple(manifest.index(r) for r in spec.recipients)
    outside = sorted(manifest.parties[i].name
                     for i in {manifest.index(vendor), *owners, *recipients} - compute)
    if outside and "outside_parties" not in protocol(spec.protocol).capabilities:
        raise ConfigurationError(f"{', '.join(outside)} would take part as outside parties, "
                                 f"which protocol {spec.protocol} does not support")
    return EvaluationPlan(dataset, features, label, manifest.index(vendor), owners,
                          recipients, digest, shape, job, policy)


def _check_columns(schema: Schema, features: Sequence[str], label: str,
                   shape: Mapping[str, Any], dataset: str) -> None:
    """The model's features against the schema: refused before anything is shared."""
    if len(features) != int(shape["features"]):
        raise ModelError(f"the model takes {shape['features']} features; the evaluation "
                         f"names {len(features)} columns of {dataset!r}")
    if len(set(features)) != len(features) or label in features:
        raise ModelError("each feature column once, and the label is not a feature")
    for name in (*features, label):
        if name not in schema:
            raise ModelError(f"{dataset!r} has no column {name!r} (columns: "
                             f"{', '.join(c.name for c in schema.columns)})")
        column = schema.column(name)
        if column.type not in _NUMERIC or column.nullable:
            raise ModelError(f"column {name!r} of {dataset!r} is {column.type.value}"
                             f"{' and nullable' if column.nullable else ''}; a model's "
                             "inputs and label are numeric columns without NULLs")
    target = schema.column(label)
    if shape["task"] != "regression":
        classes = 2 if shape["task"] == "binary" else int(shape["outputs"])
        if target.type == ColumnType.FIXED or target.low is None or target.high is None or (
                target.low < 0 or target.high > classes - 1):
            raise ModelError(f"the label {label!r} must be a whole-number column with "
                             f"bounds within 0..{classes - 1} (the model's classes)")


def evaluation_rows(plan: EvaluationPlan, dataset: Dataset) -> tuple[np.ndarray, np.ndarray]:
    """An owner's rows as the evaluation shares them: the feature columns (in the
    model's order) and the labels (whole numbers of the model's classes)."""
    frame = dataset.table.select([*plan.features, plan.label]).to_pandas()
    features = frame[list(plan.features)].to_numpy(dtype=np.float64)
    labels = frame[plan.label].to_numpy()
    if plan.job.task != "regression":
        classes = 2 if plan.job.task == "binary" else int(plan.model_shape["outputs"])
        if not np.all(np.isin(labels, np.arange(classes))):
            raise DatasetError(f"labels of {plan.dataset!r} ({plan.label}) must be the "
                               f"model's classes 0..{classes - 1}")
        return features, labels.astype(np.int64)
    return features, labels.astype(np.float64)


def describe_evaluation(plan: EvaluationPlan, names: Mapping[int, str]) -> str:
    """What approvers read: the model, what its shape reveals, the data, the release."""
    shape = dict(plan.model_shape)
    shown = {k: v for k, v in shape.items() if k != "node_features"}
    reveals = ("layer sizes and activations" if shape["model"] == "neural_network" else
               "the number of trees, their depth, and which feature each node tests"
               if shape["model"] == "tree_ensemble" else "the number of features and outputs")
    policy = plan.policy
    lines = [
        f"evaluate model sha256:{plan.model_sha256[:16]}... of {names[plan.vendor]} "
        f"({', '.join(f'{k}={v}' for k, v in shown.items())})",
        f"  its shape reveals {reveals}; its weights, thresholds and leaf values stay "
        "secret-shared",
        f"  on {plan.dataset} held by {', '.join(names[o] for o in plan.owners)}: features "
        f"{', '.join(plan.features)}; label {plan.label}",
        f"  releases only {', '.join(plan.job.metrics)} to "
        f"{', '.join(names[r] for r in plan.recipients)}",
        f"  policy in MPC: every class needs {policy.min_cohort} rows (and every calibration "
        f"bin, and both score bands beside a released ROC point), counts rounded to "
        f"{policy.rounding or 1}, ratios to {plan.job.decimals} decimals; nothing per "
        "record is opened"]
    if policy.min_difference:
        lines.append(f"  differencing check first: refused if every row of {plan.dataset} "
                     f"is within {policy.min_difference} rows of an earlier release's rows")
    if policy.dp_rho is not None:
        noise = evaluation_noise(plan.job.metrics, policy.dp_rho)
        lines.append("  " + noise.describe().replace("this query", "this evaluation")
                     .replace("\n", "\n  "))
        lines.append("  every released value is computed from the noisy counts; the row "
                     "count is not released")
    return "\n".join(lines)


def check_evaluation_inputs(plan: EvaluationPlan, datasets: Mapping[str, Dataset]) -> None:
    """This owner's rows as the evaluation would share them (labels whole numbers of
    the model's classes): a problem surfaces before approval, with the run's message."""
    if plan.dataset in datasets:
        evaluation_rows(plan, datasets[plan.dataset])


def run_evaluation(session: Session, plan: EvaluationPlan, datasets: Mapping[str, Dataset],
                   model: Model | None) -> EvaluationResult | None:
    """The evaluation on this compute party: ``datasets`` its own data, ``model`` the
    vendor's model at the vendor (None elsewhere). The result at the recipients."""
    me = session.party
    if me == plan.vendor and model is None:
        raise ModelError(f"this node is the vendor and does not hold the model "
                         f"{plan.model_sha256[:12]}...; register it with concilium model add")
    if plan.policy.min_difference:  # every row of the dataset: the predicate TRUE
        check_difference(session, "TRUE", plan.owners, datasets.get(plan.dataset),
                         plan.policy.min_difference)
    shared = share_model(session, plan.vendor, model if me == plan.vendor else None,
                         plan.model_shape)
    parts: list[tuple[SecretArray, SecretArray]] = []
    for owner in plan.owners:
        rows = evaluation_rows(plan, datasets[plan.dataset]) if owner == me else (None, None)
        parts.append((session.input(owner, rows[0], fixed=True),
                      session.input(owner, rows[1], fixed=plan.job.task == "regression")))
    features = SecretArray.concatenate([p[0] for p in parts], axis=0)
    target = SecretArray.concatenate([p[1] for p in parts], axis=0)
    return evaluate(session, shared, features, target, plan.job, plan.policy,
                    list(plan.recipients))


def result_frame(result: EvaluationResult | None, threat: ThreatModel) -> pd.DataFrame | None:
    """The result as the node's result table: one row per released metric (its value a
    number, or a list for the confusion matrix and calibration table), suppressed
    metrics and bins in ``attrs["suppressed"]`` as queries report cells, and the
    threat model the metrics were computed under."""
    if result is None:
        return None
    frame = pd.DataFrame({"metric": list(result.metrics),
                          "value": list(result.metrics.values())})
    frame.attrs["suppressed"] = [{"group": name, "rule": reason}
                                 for name, reason in result.suppressed.items()]
    frame.attrs["rows"] = result.rows
    frame.attrs["threat_model"] = threat.as_dict()
    if result.privacy is not None:
        frame.attrs["privacy"] = result.privacy
    return frame
