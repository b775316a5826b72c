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
5. ``run_end`` with the node's transcript digests per peer (over TLS; the
   launcher compares them pairwise when the session ends), or ``abort`` with
   the reason if anything failed;
6. a checkpoint of the log, co-signed by the other compute parties
   (:func:`exchange_checkpoints`).

Secrets never enter the log: only names, counts, hashes and rules.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from cryptography.hazmat.primitives.asymmetric import ed25519

from concilium.data.dataset import Dataset
from concilium.data.session import Session
from concilium.errors import ApprovalMissing, ConciliumError
from concilium.governance.approval import Approval, ApprovalPolicy, require_approvals
from concilium.governance.audit import AuditLog, Checkpoint, cosign
from concilium.governance.consortium import Manifest
from concilium.governance.policy import OutputPolicy
from concilium.governance.spec import ComputationSpec, canonical_json
from concilium.query.execute import run_plan
from concilium.query.plan import TableEntry, plan_query
from concilium.query.policy_check import check_policy

__all__ = ["dataset_commitment", "exchange_checkpoints", "result_hash", "run_computation"]


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
                    recipients: Sequence[int] | None = None,
                    key: ed25519.Ed25519PrivateKey | None = None,
                    names: Mapping[int, str] | None = None) -> pd.DataFrame | None:
    """Check, run and log one computation on this node (every compute party calls it).
    With the node's ``key`` (and the parties' ``names``), the compute parties
    co-sign each other's audit checkpoints at the end of the run."""
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
                           "bytes_sent": session.stats().bytes_sent,
                           "transcript": _transcript(session)})
    if key is not None:
        exchange_checkpoints(session, log, key, names or {})
    return frame


def _transcript(session: Session) -> list[dict[str, Any]]:
    """This node's running SHA-256 digests of what it sent to and received from each
    peer (TLS channels keep them; the launcher compares them pairwise at the end)."""
    transcript = getattr(session.backend.channel, "transcript", None)
    if transcript is None:
        return []
    entries = []
    for peer in session.backend.compute_parties:
        if peer != session.party:
            sent, received = transcript.digests(peer)
            entries.append({"peer": peer, "sent": sent.hex(), "received": received.hex()})
    return entries


def exchange_checkpoints(session: Session, log: AuditLog, key: ed25519.Ed25519PrivateKey,
                         names: Mapping[int, str]) -> list[Checkpoint]:
    """Co-sign checkpoints with the other compute parties (two rounds): each sends its
    log's (size, Merkle root), signs the others', and stores their signatures on its
    own. Afterwards no node can rewrite its history up to that size unnoticed.

    Reveals: each node's audit log size and root hash (no entry content).
    """
    backend = session.backend
    me = session.party
    peers = [p for p in backend.compute_parties if p != me]
    size, root = log.checkpoint()
    announce = backend.next_tag()
    answer = backend.next_tag()
    mine = canonical_json({"size": size, "root": root})
    for peer in peers:
        backend.channel.send(peer, announce, np.frombuffer(mine, dtype=np.uint8))
    theirs = {}
    for peer in peers:
        data = json.loads(bytes(backend.channel.receive(peer, announce)).decode())
        theirs[peer] = (int(data["size"]), str(data["root"]))
    signer = names.get(me, str(me))
    for peer, (peer_size, peer_root) in theirs.items():
        signature = cosign(peer_size, peer_root, signer, key).signature
        backend.channel.send(peer, answer, np.frombuffer(bytes.fromhex(signature),
                                                         dtype=np.uint8))
    stored = []
    for peer in peers:
        signature = bytes(backend.channel.receive(peer, answer)).hex()
        checkpoint = Checkpoint(size, root, names.get(peer, str(peer)), signature)
        log.add_cosignature(checkpoint)
        stored.append(checkpoint)
    return stored
