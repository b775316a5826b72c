"""The control plane between nodes: signed peer requests, forwarding proposals
and approvals, and the job that runs a computation once it is approved.

**Peer requests** go over HTTPS to the peer's API address, pinned to the
peer's certificate from the manifest. Each carries the sender's name, a time
and an Ed25519 signature (the node key) over (method, path, time, SHA-256 of
the body); the receiver checks it against the manifest and refuses requests
older than five minutes.

**Approval rule** (consortium default): every data owner in the manifest
must approve; each node still checks every signature itself.

**Jobs**: when a compute node holds all approvals, it starts the run in a
background thread: it meets the other compute parties over the MPC transport
(mutual TLS, session bound to the computation id), loads its own datasets,
and runs :func:`concilium.node.runner.run_computation` (approvals checked
again, inputs committed, policy enforced, audit logged). Recipient nodes keep
the result; every node records the status and progress.
"""

from __future__ import annotations

import datetime
import hashlib
import ssl
import threading
from collections.abc import Mapping
from typing import Any

import httpx
from cryptography.exceptions import InvalidSignature

from concilium.data.dataset import Dataset
from concilium.data.schema import Schema
from concilium.data.session import Session
from concilium.errors import AccessDenied, ApprovalMissing, ConciliumError, ConfigurationError
from concilium.governance.approval import (
    Approval,
    ApprovalPolicy,
    public_key,
    require_approvals,
)
from concilium.governance.consortium import Manifest
from concilium.governance.policy import OutputPolicy
from concilium.governance.spec import ComputationSpec, canonical_json
from concilium.mpc.rep3 import Rep3
from concilium.net.tls import TlsIdentity
from concilium.net.tls_channel import TlsChannel
from concilium.node.launcher import endpoints
from concilium.node.runner import run_computation
from concilium.query.plan import TableEntry

__all__ = ["MAX_SKEW", "all_owners_approved", "forward", "maybe_start", "verify_peer"]

MAX_SKEW = datetime.timedelta(minutes=5)


def _message(method: str, path: str, time: str, body: bytes) -> bytes:
    return canonical_json({"method": method, "path": path, "time": time,
                           "body": hashlib.sha256(body).hexdigest()})


def forward(context: Any, path: str, body: Mapping[str, Any]) -> list[str]:
    """POST ``body`` to every other party's API; returns the peers that failed (a
    peer that is down gets the item when it is re-sent; nothing is lost here)."""
    manifest: Manifest | None = context.manifest
    if manifest is None:
        return []
    data = canonical_json(dict(body))
    failed = []
    for party in manifest.parties:
        if party.name == context.name:
            continue
        time = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        signature = context.key.sign(_message("POST", path, time, data)).hex()
        tls = ssl.create_default_context(cadata=party.tls_certificate)
        tls.check_hostname = False  # pinned: the peer's certificate is the only anchor
        try:
            response = httpx.post(f"https://{party.api_address}{path}", content=data,
                                  verify=tls, timeout=10, headers={
                                      "Content-Type": "application/json",
                                      "X-Concilium-Node": context.name,
                                      "X-Concilium-Time": time,
                                      "X-Concilium-Signature": signature})
            if response.status_code >= 400:
                failed.append(party.name)
        except httpx.HTTPError:
            failed.append(party.name)
    return failed


def verify_peer(manifest: Manifest | None, method: str, path: str, node: str | None,
                time: str | None, signature: str | None, body: bytes) -> str:
    """The name of the peer that signed this request, or :class:`AccessDenied`."""
    if manifest is None:
        raise AccessDenied("this node has no consortium manifest; it accepts no peers")
    if not (node and time and signature):
        raise AccessDenied("peer requests must be signed (X-Concilium-* headers)")
    try:
        party = manifest.parties[manifest.index(node)]
        sent = datetime.datetime.fromisoformat(time)
        public_key(party.signing_key).verify(bytes.fromhex(signature),
                                             _message(method, path, time, body))
    except (ConfigurationError, ValueError, InvalidSignature):
        raise AccessDenied(f"a request claiming to come from {node!r} is not signed by "
                           "that node") from None
    if abs(datetime.datetime.now(datetime.UTC) - sent) > MAX_SKEW:
        raise AccessDenied(f"a request from {node!r} is too old or from the future")
    return node


def all_owners_approved(spec: ComputationSpec, approvals: list[Approval],
                        manifest: Manifest) -> bool:
    """Every data owner of the manifest has a valid, standing approval of this very
    computation (signatures checked; a rejection or revocation counts against)."""
    owners = [p.name for p in manifest.parties if "data_owner" in p.roles]
    for owner in owners:
        policies = {name: ApprovalPolicy(name, owner) for name in spec.datasets}
        try:
            require_approvals(spec, approvals, manifest, policies)
        except ApprovalMissing:
            return False
    return True


def maybe_start(context: Any, identifier: str) -> bool:
    """Start the job on this node if it is a compute party and every owner approved."""
    manifest: Manifest | None = context.manifest
    if manifest is None or not context.run_jobs:
        return False
    me = manifest.index(context.name)
    if not manifest.parties[me].is_compute:
        return False
    with context.lock:
        record = context.store.computation(identifier)
        if record.status not in ("proposed", "approved") or not all_owners_approved(
                record.spec, context.store.approvals(identifier), manifest):
            return False
        context.store.update(identifier, status="running", progress=0.1)
    thread = threading.Thread(target=_job, args=(context, identifier),
                              name=f"concilium-job-{identifier[:8]}", daemon=True)
    thread.start()
    return True


def _job(context: Any, identifier: str) -> None:
    manifest: Manifest = context.manifest
    record = context.store.computation(identifier)
    spec = record.spec
    me = manifest.index(context.name)
    compute = tuple(i for i, p in enumerate(manifest.parties) if p.is_compute)
    channel = None
    try:
        identity = context.identity
        channel = TlsChannel.connect(me, endpoints(manifest),
                                     TlsIdentity(identity.tls_certificate_path,
                                                 identity.tls_key_path),
                                     bytes.fromhex(manifest.hash), bytes.fromhex(identifier))
        context.store.update(identifier, progress=0.3)
        session = Session(Rep3(channel, compute))
        datasets, tables = {}, {}
        for name in spec.datasets:
            known = context.store.dataset(name)
            schema = Schema.from_mapping(known.schema)
            loader = Dataset.from_parquet if known.source.endswith(".parquet") else (
                Dataset.from_csv)
            datasets[name] = loader(name, known.source, schema)
            tables[name] = TableEntry(schema, compute)
        recipients = [manifest.index(r) for r in spec.recipients]
        frame = run_computation(
            session, spec, context.store.approvals(identifier), manifest,
            {name: ApprovalPolicy(name, context.name) for name in spec.datasets},
            tables, datasets, OutputPolicy.from_mapping(spec.policy), context.audit,
            recipients=recipients, key=context.key,
            names={i: p.name for i, p in enumerate(manifest.parties)})
        channel.finish()
        result = None if frame is None else {
            "columns": [str(c) for c in frame.columns],
            "rows": [[None if v != v else v for v in row]  # NaN (NULL) -> None
                     for row in frame.astype(object).values.tolist()],
            "suppressed": [{"group": c["group"] if isinstance(c["group"], dict)
                            else str(c["group"]), "rule": c["rule"]}
                           for c in frame.attrs.get("suppressed", [])]}
        context.store.update(identifier, status="completed", progress=1.0,
                             result=result)
    except (ConciliumError, OSError) as error:
        context.store.update(identifier, status="failed",
                             error=f"{type(error).__name__}: {str(error).splitlines()[0]}")
    finally:
        if channel is not None:
            channel.close()
