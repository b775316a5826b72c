"""Opening an evaluation's metrics to its recipients, compute parties and outside
parties alike (the last step of :func:`concilium.evaluation.job.evaluate`).

The compute parties hold the released metrics on shares, already rounded and
already cut down by the policy (which bins and which ROC points are let out).
:func:`release` opens them to the recipients only. An outside recipient (a
node that does not compute) first receives the release's layout from every
compute party and checks that they agree: the metric names, their kinds and
shapes, the released bins and points, what was suppressed and why, the noise.
All of this is already public to the compute parties. Then it receives one
share of each released value from each compute party (:func:`receive_release`).

Reveals: the released metrics to the recipients; the layout (which every
compute party already knows) to outside recipients.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from concilium.data import OutsideParty, SecretArray, Session
from concilium.errors import ProtocolAbort

__all__ = ["EvaluationResult", "PendingRelease", "receive_release", "release",
           "suppress_everything"]


@dataclass(frozen=True)
class EvaluationResult:
    """What a recipient gets: the released metrics (floats, or nested lists for the
    confusion matrix and calibration table, where a suppressed bin is None, and
    ``[threshold, false positive rate, true positive rate]`` per released point of
    the ROC curve) and, for each suppressed metric, bin or point, why. ``rows``
    is the number of rows evaluated, None under ``dp`` (not released then);
    ``privacy`` describes the noise under ``dp``."""

    task: str
    rows: int | None
    metrics: dict[str, Any]
    suppressed: dict[str, str] = field(default_factory=dict)
    privacy: dict[str, Any] | None = None


@dataclass
class PendingRelease:
    """What a job will open: each metric's secret value (rounded), in the job's order,
    and what the policy decided (the bins and ROC points let out, what is hidden)."""

    task: str
    rows: int | None
    values: dict[str, Any] = field(default_factory=dict)
    hidden: dict[str, str] = field(default_factory=dict)
    bins: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.intp))
    points: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.intp))
    curve_bins: int = 0
    privacy: dict[str, Any] | None = None


def _parts(name: str, value: Any, pending: PendingRelease) -> tuple[dict[str, Any],
                                                                    list[SecretArray]]:
    """A metric's layout entry and the secret arrays that open it."""
    if name == "calibration":
        count, means = value
        keep = pending.bins
        parts = [] if keep.size == 0 else [count[keep], means[keep]]
        entry = {"kind": "calibration", "bins": int(count.shape[0]),
                 "keep": [int(k) for k in keep]}
    elif name == "roc_curve":
        keep = pending.points
        parts = [] if keep.size == 0 else [value[keep]]
        entry = {"kind": "curve", "bins": pending.curve_bins, "keep": [int(k) for k in keep]}
    else:
        parts, entry = [value], {"kind": "value"}
    entry["name"] = name
    entry["parts"] = [{"fixed": part.is_fixed, "shape": list(part.shape)} for part in parts]
    return entry, parts


def _announce(session: Session, recipients: Sequence[int] | None, layout: dict[str, Any]
              ) -> None:
    outside = [r for r in (recipients or ()) if r not in session.compute_parties]
    if outside:
        session.send_public(outside, json.dumps(layout, sort_keys=True).encode())


def release(session: Session, pending: PendingRelease, recipients: Sequence[int] | None
            ) -> EvaluationResult | None:
    """Open the pending metrics to ``recipients`` (every compute party if None); the
    result at a compute recipient, None elsewhere. Reveals: the released metrics."""
    prepared = [_parts(name, value, pending) for name, value in pending.values.items()]
    _announce(session, recipients, _layout(pending, [entry for entry, _ in prepared]))
    recipient = recipients is None or session.party in recipients
    opened = {}
    for entry, parts in prepared:
        values = [part.reveal(recipients) for part in parts]
        if recipient:
            opened[entry["name"]] = _assemble(entry, values)
    if not recipient:
        return None
    return EvaluationResult(pending.task, pending.rows, opened, pending.hidden, pending.privacy)


def suppress_everything(session: Session, pending: PendingRelease,
                        recipients: Sequence[int] | None) -> EvaluationResult | None:
    """Release nothing (a class below the minimum): the reasons, to the recipients."""
    _announce(session, recipients, _layout(pending, []))
    if recipients is not None and session.party not in recipients:
        return None
    return EvaluationResult(pending.task, pending.rows, {}, pending.hidden, pending.privacy)


def _layout(pending: PendingRelease, entries: list[dict[str, Any]]) -> dict[str, Any]:
    return {"task": pending.task, "rows": pending.rows, "suppressed": pending.hidden,
            "privacy": pending.privacy, "metrics": entries}


def receive_release(outside: OutsideParty) -> EvaluationResult:
    """An outside recipient's side of :func:`release`.

    Reveals: the released metrics to this party only."""
    try:
        layout = json.loads(outside.receive_public())
        entries = list(layout["metrics"])
        result = EvaluationResult(str(layout["task"]), layout["rows"], {},
                                  dict(layout["suppressed"]), layout["privacy"])
        for entry in entries:
            values = [outside.receive(fixed=bool(part["fixed"])).reshape(part["shape"])
                      for part in entry["parts"]]
            result.metrics[str(entry["name"])] = _assemble(entry, values)
    except (ValueError, KeyError, TypeError) as error:
        raise ProtocolAbort(f"the compute parties sent a malformed evaluation release: "
                            f"{type(error).__name__}") from None
    return result


def _assemble(entry: dict[str, Any], values: list[Any]) -> Any:
    """A metric's released value from its opened parts (the same at every recipient)."""
    if entry["kind"] == "value":
        value = values[0]
        return value.tolist() if isinstance(value, np.ndarray) else value
    keep = [int(k) for k in entry["keep"]]
    if entry["kind"] == "calibration":
        out: list[Any] = [None] * int(entry["bins"])
        if values:
            count, means = (np.asarray(v, dtype=np.float64) for v in values)
            for position, index in enumerate(keep):
                out[index] = [float(count[position]), *map(float, means[position])]
        return out
    edges = np.linspace(0.0, 1.0, int(entry["bins"]) + 1)[1:-1]
    if not values:
        return []
    rates = np.asarray(values[0], dtype=np.float64)
    return [[float(edges[index]), float(rates[position][0]), float(rates[position][1])]
            for position, index in enumerate(keep)]
