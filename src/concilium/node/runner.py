"""A governed run on one node: approvals checked, inputs committed, policy
enforced, everything logged.

:func:`run_computation` is what a node does for an approved computation, in
order, writing each step to its audit log:

1. ``proposal``: the spec and its computation id;
2. the checks: this node's own rules against the spec
   (:func:`concilium.governance.proposal.check_spec`: its schema, a policy at
   least as strict as its own, its approval count) and every required approval
   (:func:`concilium.governance.approval.require_approvals`); each ``approval``
   is logged; a refusal is logged as ``refusal`` and raises *before* anything
   is shared;
3. ``run_start`` with the threat model (protocol, compute parties, corruptions
   tolerated, security, the collusion that would break it), then an
   ``input_commitment`` per local dataset (SHA-256 of its rows in a canonical
   Arrow IPC form, the row count, the schema hash);
4. the query under the output policy; ``policy_decision`` lists suppressed
   cells and rules; ``result`` holds the result's hash and recipients;
5. ``run_end`` with the node's transcript digests per peer (over TLS; the
   launcher compares them pairwise when the session ends), or ``abort`` with
   the reason if anything failed;
6. a checkpoint of the log, co-signed by the other compute parties
   (:func:`exchange_checkpoints`).

:func:`run_outside` is the same for a node that does not compute (an owner
that only shares its data, a recipient that only receives): checks, commits,
takes part as an outside party, logs.

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

from concilium.data.dataset import Dataset
from concilium.data.outside import OutsideParty
from concilium.data.session import Session
from concilium.errors import ApprovalMissing, ConciliumError, ConfigurationError, PolicyViolation
from concilium.evaluation.governed import EvaluationPlan, result_frame, run_evaluation
from concilium.evaluation.models import Model
from concilium.evaluation.outside import take_part as take_part_in_evaluation
from concilium.governance import audit_events as events
from concilium.governance.approval import Approval, require_approvals
from concilium.governance.audit import AuditLog, Checkpoint
from concilium.governance.consortium import Manifest
from concilium.governance.policy import OutputPolicy
from concilium.governance.proposal import DatasetEntry, check_spec
from concilium.governance.spec import ComputationSpec, canonical_json
from concilium.mpc.protocols import ThreatModel
from concilium.node.planning import plan_spec
from concilium.query.execute import run_plan
from concilium.query.outside import take_part

__all__ = ["dataset_commitment", "exchange_checkpoints", "result_hash", "run_computation",
           "run_outside"]


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


def _log_proposal(log: AuditLog, spec: ComputationSpec, approvals: Sequence[Approval]) -> None:
    log.record(events.Proposal(spec.computation_id, spec.as_dict(), origin=None))
    for approval in approvals:
        log.record(events.Approval.of(approval))


def _check(log: AuditLog, spec: ComputationSpec, approvals: Sequence[Approval],
           manifest: Manifest, me: str, own: Sequence[DatasetEntry], running: str) -> None:
    """The protocol this session runs, this node's own rules, then every required
    approval: refused (and logged) before anything is shared."""
    try:
        if running != spec.protocol:
            raise ConfigurationError(f"this session runs protocol {running}, but the "
                                     f"approved computation names {spec.protocol}; refusing "
                                     "to run it under another threat model")
        check_spec(spec, manifest, me, own)
        require_approvals(spec, approvals, manifest)
    except (ApprovalMissing, PolicyViolation, ConfigurationError) as refusal:
        log.record(events.Refusal(spec.computation_id, type(refusal).__name__, str(refusal)))
        raise


def _start(log: AuditLog, spec: ComputationSpec, party: int,
           datasets: Mapping[str, Dataset], threat: ThreatModel) -> None:
    log.record(events.RunStart(spec.computation_id, party, spec.protocol, threat.as_dict()))
    for dataset in datasets.values():
        log.record(events.InputCommitment(spec.computation_id, **dataset_commitment(dataset)))


def _abort(log: AuditLog, spec: ComputationSpec, error: ConciliumError) -> None:
    log.record(events.Abort(spec.computation_id, type(error).__name__,
                            str(error).splitlines()[0][:300]))


def run_computation(session: Session, spec: ComputationSpec, approvals: Iterable[Approval],
                    manifest: Manifest, datasets: Mapping[str, Dataset], log: AuditLog, *,
                    me: str, own: Sequence[DatasetEntry] = (),
                    checkpoints: bool = False,
                    models: Mapping[str, Model] | None = None) -> pd.DataFrame | None:
    """Check, run and log one computation on this compute party (each calls it).

    ``me`` is this node's name, ``own`` its registrations (their rules are checked
    against the spec), ``datasets`` its own data that the spec uses, ``models`` the
    models it holds as a vendor (by SHA-256). With ``checkpoints`` the compute
    parties co-sign each other's audit checkpoints at the end (and keep them).
    """
    approvals = list(approvals)
    _log_proposal(log, spec, approvals)
    _check(log, spec, approvals, manifest, me, own, session.protocol)
    _start(log, spec, session.party, datasets, session.threat_model)
    recipients = [manifest.index(r) for r in spec.recipients]
    policy = OutputPolicy.from_mapping(spec.policy)
    try:
        plan = plan_spec(spec, manifest)
        if isinstance(plan, EvaluationPlan):
            frame = result_frame(run_evaluation(session, plan, datasets,
                                                (models or {}).get(plan.model_sha256)),
                                 session.threat_model)
        else:
            frame = run_plan(session, plan, datasets, recipients, policy=policy)
    except ConciliumError as error:
        _abort(log, spec, error)
        raise
    suppressed = frame.attrs.get("suppressed", []) if frame is not None else []
    log.record(events.PolicyDecision(spec.computation_id, policy.as_dict(),
                                     [{"group": str(cell["group"]), "rule": cell["rule"]}
                                      for cell in suppressed]))
    log.record(events.Result(spec.computation_id, result_hash(frame), list(spec.recipients)))
    traffic = session.stats()
    log.record(events.RunEnd(spec.computation_id, traffic.bytes_sent,
                             _transcript(session.backend.channel,
                                         session.backend.compute_parties, session.party),
                             traffic.rounds))
    if checkpoints:
        exchange_checkpoints(session, log, {i: p.name for i, p in enumerate(manifest.parties)})
    return frame


def run_outside(outside: OutsideParty, spec: ComputationSpec, approvals: Iterable[Approval],
                manifest: Manifest, datasets: Mapping[str, Dataset], log: AuditLog, *,
                me: str, own: Sequence[DatasetEntry] = (),
                models: Mapping[str, Model] | None = None) -> pd.DataFrame | None:
    """Check, take part in and log one computation on a node that does not compute:
    it shares its own data (if the spec uses any) and, as an evaluation's vendor, its
    model (from ``models``), and receives the result if it is a recipient."""
    approvals = list(approvals)
    _log_proposal(log, spec, approvals)
    _check(log, spec, approvals, manifest, me, own, outside.protocol)
    _start(log, spec, outside.party, datasets, outside.threat_model)
    try:
        plan = plan_spec(spec, manifest)
        if isinstance(plan, EvaluationPlan):
            frame = result_frame(take_part_in_evaluation(
                outside, plan, datasets, (models or {}).get(plan.model_sha256),
                me in spec.recipients), outside.threat_model)
        else:
            frame = take_part(outside, plan, datasets, me in spec.recipients)
    except ConciliumError as error:
        _abort(log, spec, error)
        raise
    if frame is not None:
        log.record(events.Result(spec.computation_id, result_hash(frame),
                                 list(spec.recipients)))
    traffic = outside.stats()
    log.record(events.RunEnd(spec.computation_id, traffic.bytes_sent,
                             _transcript(outside.channel, outside.compute_parties,
                                         outside.party), traffic.rounds))
    return frame


def _transcript(channel: Any, peers: Sequence[int], me: int) -> list[dict[str, Any]]:
    """This node's running SHA-256 digests of what it sent to and received from each
    peer (TLS channels keep them; the launcher compares them pairwise at the end)."""
    transcript = getattr(channel, "transcript", None)
    if transcript is None:
        return []
    entries = []
    for peer in peers:
        if peer != me:
            sent, received = transcript.digests(peer)
            entries.append({"peer": peer, "sent": sent.hex(), "received": received.hex()})
    return entries


def exchange_checkpoints(session: Session, log: AuditLog, names: Mapping[int, str]
                         ) -> list[Checkpoint]:
    """Co-sign checkpoints with the other compute parties (two rounds): each sends its
    log's (size, Merkle root), signs the others' and keeps them (its log's
    ``witnessed`` table), and stores their signatures on its own. Afterwards no node
    can cut or rewrite its history up to that size unnoticed.

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
    for peer, (peer_size, peer_root) in theirs.items():
        # co-sign and keep: a peer that later cuts its log is caught against this copy
        signature = log.witness(names.get(peer, str(peer)), peer_size, peer_root).signature
        backend.channel.send(peer, answer, np.frombuffer(bytes.fromhex(signature),
                                                         dtype=np.uint8))
    stored = []
    for peer in peers:
        signature = bytes(backend.channel.receive(peer, answer)).hex()
        checkpoint = Checkpoint(size, root, names.get(peer, str(peer)), signature)
        log.add_cosignature(checkpoint)
        stored.append(checkpoint)
    return stored
