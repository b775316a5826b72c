"""The job that runs a computation once it is approved.

When a node that takes part in a run (a compute party, an owner of data it
uses, a recipient) holds all approvals, it starts the run in a background
thread (:func:`maybe_start`): it meets the other participants over the MPC
transport (mutual TLS, session bound to the computation id), charges the
privacy budget of its datasets (:mod:`concilium.node.privacy`), loads its own
datasets, and runs :func:`concilium.node.runner.run_computation` (or
:func:`~concilium.node.runner.run_outside` if it does not compute). Recipient
nodes keep the result; every node records the status and progress. A run
whose peers are not all there waits (:data:`WAITING`) and is started again
when they are (:func:`resume_waiting`), or failed with the reason of a peer
that failed it; computations approved while the node was down start when it
starts (:func:`start_approved`).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from concilium.data.outside import OutsideParty
from concilium.data.session import Session
from concilium.errors import BadFrame, CheatingDetected, ConciliumError, PeerUnavailable
from concilium.governance.audit_events import Abort
from concilium.governance.consortium import Manifest
from concilium.governance.spec import ComputationSpec
from concilium.mpc.protocols import protocol
from concilium.net.tls import TlsIdentity
from concilium.net.tls_channel import TlsChannel
from concilium.node import privacy
from concilium.node.control import all_approved, ask, load_dataset, own_entries
from concilium.node.incidents import peers_named, record_incident
from concilium.node.launcher import endpoints
from concilium.node.logs import event
from concilium.node.models import held_models
from concilium.node.planning import participants
from concilium.node.runner import run_computation, run_outside

__all__ = ["WAITING", "maybe_start", "result_json", "resume_waiting", "start_approved"]

_LOG = logging.getLogger("concilium.node")


def maybe_start(context: Any, identifier: str) -> bool:
    """Start the job on this node if it takes part in the run and every approval is in."""
    manifest: Manifest | None = context.manifest
    if manifest is None or not context.run_jobs:
        return False
    me = manifest.index(context.name)
    with context.lock:
        record = context.store.computation(identifier)
        if me not in participants(record.spec, manifest):
            return False
        if record.status not in ("proposed", "approved") or not all_approved(
                record.spec, context.store.approvals(identifier), manifest):
            return False
        context.store.update(identifier, status="running", progress=0.1)
    thread = threading.Thread(target=_job, args=(context, identifier),
                              name=f"concilium-job-{identifier[:8]}", daemon=True)
    thread.start()
    return True


def result_json(frame: Any) -> dict[str, Any] | None:
    """A result DataFrame as the JSON a recipient node keeps and serves (with its
    threat model); None where the node is not a recipient."""
    if frame is None:
        return None
    return {"threat_model": frame.attrs.get("threat_model"),
            "columns": [str(c) for c in frame.columns],
            "rows": [[None if v != v else v for v in row]  # NaN (NULL) -> None
                     for row in frame.astype(object).values.tolist()],
            "suppressed": [{"group": c["group"] if isinstance(c["group"], dict)
                            else str(c["group"]), "rule": c["rule"]}
                           for c in frame.attrs.get("suppressed", [])],
            **({"privacy": frame.attrs["privacy"]} if "privacy" in frame.attrs else {})}


#: The error prefix of an approved computation whose peers were not all there yet.
WAITING = "waiting for peers: "


def resume_waiting(context: Any) -> list[str]:
    """Start again the approved computations that waited for peers (a node that was
    down is back, or is about to be)."""
    started = []
    for record in context.store.computations():
        waiting = record.status == "approved" and (record.error or "").startswith(WAITING)
        if waiting and not _failed_elsewhere(context, record) and maybe_start(context,
                                                                             record.id):
            started.append(record.id)
    return started


def _failed_elsewhere(context: Any, record: Any) -> bool:
    """Whether a participant has failed the run (it met the others and aborted while
    this node could not connect): then it fails here too, with that node's reason,
    instead of waiting for peers that will not come back to it."""
    manifest: Manifest = context.manifest
    involved = set(participants(record.spec, manifest))
    peers = [p for i, p in enumerate(manifest.parties) if i in involved]
    for peer, answer in ask(context, "/peer/status", {"id": record.id}, peers).items():
        if isinstance(answer, dict) and answer.get("status") == "failed":
            with context.lock:
                if context.store.computation(record.id).status != "approved":
                    return True
                context.store.update(record.id, status="failed",
                                     error=f"{peer} failed the run: "
                                           f"{str(answer.get('error') or '')[:200]}")
            context.audit.record(Abort(record.id, "PeerFailed",
                                       f"{peer} failed the run while this node waited"))
            event("run_abort", logging.WARNING, computation=record.id, reason="PeerFailed",
                  message=f"{peer} failed the run while this node waited")
            return True
    return False


def start_approved(context: Any) -> list[str]:
    """Start the computations that have every approval but never started (the node
    stopped between storing the last approval and starting the job): on start-up."""
    return [record.id for record in context.store.computations()
            if record.status in ("proposed", "approved") and maybe_start(context, record.id)]


def _connect(context: Any, manifest: Manifest, me: int, involved: set[int],
             identifier: str) -> TlsChannel:
    """The computation's MPC channel: inbound connections through the node's standing
    listener when it serves (any number of computations at once), else by listening
    on the MPC address for this one."""
    identity = context.identity
    arguments = (me, [e for e in endpoints(manifest) if e.index in involved],
                 TlsIdentity(identity.tls_certificate_path, identity.tls_key_path),
                 bytes.fromhex(manifest.hash), bytes.fromhex(identifier),
                 context.tls_settings)

    def refused(why: str) -> None:
        """A peer's connection refused during the set-up: an incident, unless it
        merely closed or timed out."""
        if "CERTIFICATE" in why.upper() and why.startswith(
                ("SSLError", "SSLCertVerificationError", "BadFrame")):
            kind = "refused_certificate"
        elif why.startswith(("BadFrame", "ConfigurationError")):
            kind = "refused_frame"
        else:
            return
        record_incident(context, kind, why, peers_named(context, why), identifier)

    if context.listener is None:
        return TlsChannel.connect(*arguments, on_refused=refused)
    with context.listener.expect(bytes.fromhex(identifier), len(involved) - 1) as arrivals:
        return TlsChannel.connect(*arguments, on_refused=refused, arrivals=arrivals)


def _incidents(context: Any, identifier: str, channel: TlsChannel | None,
               error: BaseException) -> None:
    """A failed run's incidents: each frame its channel refused, and the failure
    itself when no ``abort`` or ``refusal`` entry records it (it failed after the
    runner logged its end, as when transcript digests differ, or before the runner
    started, as when a peer's certificate or HELLO was refused)."""
    try:
        _, last = context.audit.page(computation=identifier, limit=1)
        parties = context.manifest.parties
        for peer, reason in channel.refused_frames if channel is not None else ():
            name = [parties[peer].name] if peer < len(parties) else []
            record_incident(context, "refused_frame", reason, name, identifier)
        if last and last[0].kind in ("abort", "refusal"):
            return
        text = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
        kind = "refused_certificate" if isinstance(error, BadFrame) and "certificate" in str(
            error) else "run_failed"
        record_incident(context, kind, text, peers_named(context, str(error)), identifier)
    except Exception:  # recording must not keep the run from failing
        _LOG.exception("could not record the incidents of computation %s", identifier[:16])


def _settle(context: Any, spec: ComputationSpec, session: Session | None, channel: Any,
            charged: list[str], error: BaseException) -> None:
    """A failed run's budget: refunded when nothing was opened (a compute party
    that opened nothing and drew no noise; an outside owner that sent nothing). An outside owner
    that has shared cannot tell what the compute parties opened: its charge
    stands."""
    if not charged:
        return
    computes = context.manifest.parties[context.manifest.index(context.name)].is_compute
    if computes:  # no session yet (its key agreement failed): nothing was opened
        unopened = session is None or not session.opened
    else:
        unopened = channel is None or channel.stats().bytes_sent == 0
    if unopened:
        privacy.refund_run(context, spec, f"aborted before anything was opened: "
                                          f"{type(error).__name__}")


def _job(context: Any, identifier: str) -> None:
    manifest: Manifest = context.manifest
    record = context.store.computation(identifier)
    spec = record.spec
    me = manifest.index(context.name)
    compute = tuple(i for i, p in enumerate(manifest.parties) if p.is_compute)
    involved = set(participants(spec, manifest))
    channel = None
    session: Session | None = None
    charged: list[str] = []
    started = time.monotonic()
    event("run_start", computation=identifier, protocol=manifest.protocol, party=me,
          computes=me in compute)
    try:
        try:
            channel = _connect(context, manifest, me, involved, identifier)
        except PeerUnavailable as error:  # nothing was shared: wait for the peers
            context.store.update(identifier, status="approved", progress=0.0,
                                 error=f"{WAITING}{str(error).splitlines()[0]}")
            event("run_waiting", computation=identifier, reason=type(error).__name__)
            return
        context.store.update(identifier, progress=0.3)
        datasets = {name: load_dataset(context, name) for name in spec.datasets
                    if context.name in spec.owners(name)}
        approvals = context.store.approvals(identifier)
        own = own_entries(context)
        backend = protocol(manifest.protocol)  # the consortium's, never another
        charged = privacy.charge_run(context, spec)  # before anything is shared
        datasets = privacy.with_releases(context, datasets)
        vendor = spec.evaluation.get("vendor") if spec.evaluation else None
        models = held_models(context) if vendor == context.name else None
        if me in compute:
            session = Session(backend.create_backend(channel, compute))
            frame = run_computation(session, spec, approvals, manifest, datasets,
                                    context.audit, me=context.name, own=own, checkpoints=True,
                                    models=models)
        else:
            frame = run_outside(OutsideParty(channel, compute, protocol=backend.name), spec,
                                approvals, manifest, datasets, context.audit,
                                me=context.name, own=own, models=models)
        privacy.release_run(context, spec)
        channel.finish()
        keep = frame if context.name in spec.recipients else None
        context.store.update(identifier, status="completed", progress=1.0,
                             result=result_json(keep), error="")
        traffic = channel.stats()
        event("run_end", computation=identifier, protocol=manifest.protocol,
              duration_ms=round((time.monotonic() - started) * 1000, 1),
              bytes_sent=traffic.bytes_sent, rounds=traffic.rounds)
    except (ConciliumError, OSError) as error:
        if channel is not None:
            detail = f": {error}" if isinstance(error, CheatingDetected) else ""
            channel.abort(f"{context.name} failed: {type(error).__name__}{detail}")
        _incidents(context, identifier, channel, error)
        _settle(context, spec, session, channel, charged, error)
        context.store.update(identifier, status="failed",
                             error=f"{type(error).__name__}: {str(error).splitlines()[0]}")
        event("run_abort", logging.WARNING, computation=identifier,
              reason=type(error).__name__, message=str(error)[:300].partition("\n")[0],
              duration_ms=round((time.monotonic() - started) * 1000, 1))
    except Exception as error:  # a defect: the run still ends, failed, on every party
        _LOG.exception("computation %s failed unexpectedly", identifier[:16])
        if channel is not None:
            detail = f": {error}" if isinstance(error, CheatingDetected) else ""
            channel.abort(f"{context.name} failed: {type(error).__name__}{detail}")
        _incidents(context, identifier, channel, error)
        _settle(context, spec, session, channel, charged, error)
        context.store.update(identifier, status="failed",
                             error=f"InternalError: {type(error).__name__} on this node; "
                                   "see its log")
        event("run_abort", logging.ERROR, computation=identifier, reason="InternalError",
              message=type(error).__name__,
              duration_ms=round((time.monotonic() - started) * 1000, 1))
    finally:
        if channel is not None:
            channel.close()
