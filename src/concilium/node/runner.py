"""A governed run on one node: approvals checked, inputs committed, policy
enforced, everything logged.

:func:`run_computation` is what a node does for an approved computation, in
order, writing each step to its audit log:

1. ``proposal``: the spec and its computation id;
2. the approval check (:func:`concilium.governance.approval.require_approvals`):
   each ``approval`` is logged; a refusal is logged as ``refusal`` and raises
   :class:`~concilium.errors.ApprovalMissing` *before* anything is shared;
3. ``run_start``, then an ``input_commitment`` per local dataset (SHA-256 of
   its rows in a canonical Arrow IPC form, the row count, the schema hash);
4. the query under the output policy; ``policy_decision`` lists suppressed
   cells and rules; ``result`` holds the result's hash and recipients;
5. ``run_end`` (the launcher adds the TLS transcript digests it compares at the
   end of the session), or ``abort`` with the reason if anything failed.

Secrets never enter the log: only names, counts, hashes and rules.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pandas as pd
import pyarrow as pa

from concilium.data.dataset import Dataset
from concilium.data.session import Session
from concilium.errors import ApprovalMissing, ConciliumError
from concilium.governance.approval import Approval, ApprovalPolicy, require_approvals
from concilium.governance.audit import AuditLog
from concilium.governance.consortium import Manifest
from concilium.governance.policy import OutputPolicy
from concilium.governance.spec import ComputationSpec, canonical_json
from concilium.query.execute import run_plan
from concilium.query.plan import TableEntry, plan_query
from concilium.query.policy_check import check_policy

__all__ = ["dataset_commitment", "result_hash", "run_computation"]


def dataset_commitment(dataset: Dataset) -> dict[str, Any]:
    """What the log records about an input: hashes and the row count, never rows."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, dataset.table.schema) as writer:
        writer.write_table(dataset.table)
    schema = canonical_json([[c.name, c.type.value, c.low, c.high, c.nullable,
                              list(c.domain), c.unique] for c in dataset.schema.columns])
    return {"dataset": dataset.name, "rows": dataset.rows,
            "hash": hashlib.sha256(sink.getvalue().to_pybytes()).hexdigest(),
            "schema_hash": hashlib.sha256(schema).hexdigest()}


def result_hash(frame: pd.DataFrame | None) -> str | None:
    if frame is None:
        return None
    text = frame.to_json(orient="split", double_precision=15)
    return hashlib.sha256(text.encode()).hexdigest()


def run_computation(session: Session, spec: ComputationSpec, approvals: Iterable[Approval],
                    manifest: Manifest, approval_policies: Mapping[str, ApprovalPolicy],
                    tables: Mapping[str, TableEntry], datasets: Mapping[str, Dataset],
                    output_policy: OutputPolicy, log: AuditLog,
                    recipients: Sequence[int] | None = None) -> pd.DataFrame | None:
    """Check, run and log one computation on this node (every compute party calls it)."""
    identifier = spec.computation_id
    log.append("proposal", {"computation_id": identifier, "spec": spec.as_dict()})
    approvals = list(approvals)
    for approval in approvals:
        log.append("approval", {"computation_id": approval.computation_id,
                                "decision": approval.decision, "approver": approval.approver,
                                "node": approval.node, "time": approval.time,
                                "signature": approval.signature})
    try:
        require_approvals(spec, approvals, manifest, approval_policies)
    except ApprovalMissing as refusal:
        log.append("refusal", {"computation_id": identifier, "reason": str(refusal)})
        raise
    log.append("run_start", {"computation_id": identifier, "party": session.party})
    for dataset in datasets.values():
        log.append("input_commitment", {"computation_id": identifier,
                                        **dataset_commitment(dataset)})
    try:
        plan = plan_query(spec.query, tables, dominance=output_policy.dominance is not None)
        check_policy(plan, output_policy, spec.recipients)
        frame = run_plan(session, plan, datasets, recipients, policy=output_policy)
    except ConciliumError as error:
        log.append("abort", {"computation_id": identifier, "error": type(error).__name__,
                             "reason": str(error).splitlines()[0][:300]})
        raise
    suppressed = frame.attrs.get("suppressed", []) if frame is not None else []
    log.append("policy_decision", {"computation_id": identifier,
                                   "policy": output_policy.as_dict(),
                                   "suppressed": [{"group": str(cell["group"]),
                                                   "rule": cell["rule"]}
                                                  for cell in suppressed]})
    log.append("result", {"computation_id": identifier, "result_hash": result_hash(frame),
                          "recipients": list(spec.recipients)})
    log.append("run_end", {"computation_id": identifier,
                           "bytes_sent": session.stats().bytes_sent})
    return frame
