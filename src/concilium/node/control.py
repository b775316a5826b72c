"""The control plane between nodes: signed peer requests, the catalog, forwarding
proposals and approvals, automatic refusals and audit witnesses (the job that
runs an approved computation is :mod:`concilium.node.jobs`).

**Peer requests** go over HTTPS to the peer's API address, pinned to the
peer's certificate from the manifest. Each carries the sender's name, a time
and an Ed25519 signature (the node key) over (method, path, time, SHA-256 of
the body); the receiver checks it against the manifest and refuses requests
older than five minutes.

**Catalog**: each node publishes what it holds (dataset names, public
schemas, its rules) to every peer when it starts, when it registers a
dataset and when its admin changes a dataset's rules; the answer to a
publication is the peer's own list, so that both sides are current. A
proposal is built from the catalog: which node holds which table.

**Approval rule**: the spec names its approvers (by default the owners of the
datasets it uses, each as many approvers as its own rules ask); every node
checks every signature itself.

**Refusals**: a node that receives a proposal it must not take part in
(:func:`concilium.node.planning.validate`: a policy weaker than its own, its
data not fitting, an unknown recipient, ...) signs an automatic rejection
with the reason and sends it to every node, so the computation is refused
everywhere before anyone is asked to approve it.

**Audit witnesses**: every few seconds a node asks its peers to co-sign its
audit log's current checkpoint; they keep what they sign. At start-up (and on
``/audit/verify``) a node verifies its own log against the checkpoints its
peers keep, so a cut tail or a rebuilt history is found even if the node's own
checkpoints were deleted.
"""

from __future__ import annotations

import datetime
import hashlib
import logging
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
from cryptography.exceptions import InvalidSignature

from concilium.data.dataset import Dataset
from concilium.data.schema import Schema
from concilium.errors import (
    AccessDenied,
    ApprovalMissing,
    AuditError,
    ConciliumError,
    ConfigurationError,
)
from concilium.governance.approval import (
    Approval,
    public_key,
    require_approvals,
    sign_approval,
    standing_decisions,
)
from concilium.governance.audit import Checkpoint, Witnessed, checkpoint_message
from concilium.governance.audit_events import AuditAlert, Refusal
from concilium.governance.audit_verify import verify_log
from concilium.governance.consortium import Manifest, PartyEntry
from concilium.governance.proposal import DatasetEntry
from concilium.governance.spec import ComputationSpec, canonical_json

__all__ = ["AUTOMATIC", "MAX_SKEW", "Forwarded", "all_approved", "catalog", "collect_witnessed",
           "ask", "forward", "load_dataset", "own_entries", "pending_approvers",
           "publish_catalog", "refuse", "request_witnesses", "verify_own_log",
           "verify_peer"]

MAX_SKEW = datetime.timedelta(minutes=5)
#: The approver name of a node's own automatic refusal (its checks, not a person).
AUTOMATIC = "automatic-check"


_LOG = logging.getLogger("concilium.node")


def _message(method: str, path: str, time: str, body: bytes) -> bytes:
    return canonical_json({"method": method, "path": path, "time": time,
                           "body": hashlib.sha256(body).hexdigest()})


@dataclass
class Forwarded:
    """What became of a forwarded item: peers that could not be reached, and peers
    that refused it (name -> (error type, message))."""

    failed: list[str] = field(default_factory=list)
    refused: dict[str, tuple[str, str]] = field(default_factory=dict)


def _post(context: Any, party: PartyEntry, path: str, data: bytes) -> httpx.Response:
    time = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    signature = context.key.sign(_message("POST", path, time, data)).hex()
    tls = ssl.create_default_context(cadata=party.tls_certificate)
    tls.check_hostname = False  # pinned: the peer's certificate is the only anchor
    return httpx.post(f"https://{party.api_address}{path}", content=data, verify=tls,
                      timeout=context.peer_timeout, headers={
                          "Content-Type": "application/json",
                          "X-Concilium-Node": context.name,
                          "X-Concilium-Time": time,
                          "X-Concilium-Signature": signature})


def forward(context: Any, path: str, body: Mapping[str, Any]) -> Forwarded:
    """POST ``body`` to every other party's API, signed; report who could not be
    reached and who refused. A peer that cannot be reached (or still has older
    messages waiting) gets it through the node's outbox (:mod:`concilium.node.outbox`)
    when it comes back."""
    manifest: Manifest | None = context.manifest
    outcome = Forwarded()
    if manifest is None:
        return outcome
    data = canonical_json(dict(body))
    outbox = getattr(context, "outbox", None)
    for party in manifest.parties:
        if party.name == context.name:
            continue
        if outbox is not None and outbox.has_pending(party.name):
            outbox.add(party.name, path, data, "queued behind older messages")
            outcome.failed.append(party.name)
            continue
        try:
            response = _post(context, party, path, data)
        except httpx.HTTPError as error:
            outcome.failed.append(party.name)
            if outbox is not None:
                outbox.add(party.name, path, data, f"{type(error).__name__}: {error}")
            continue
        if _retry_later(response) and outbox is not None:
            outcome.failed.append(party.name)
            outbox.add(party.name, path, data, f"HTTP {response.status_code}")
        elif response.status_code >= 400:
            outcome.refused[party.name] = _refusal(response)
    return outcome


def _retry_later(response: httpx.Response) -> bool:
    """A server error, or a peer that does not know the computation yet (its
    proposal is on its way from another node): send again later."""
    return response.status_code >= 500 or response.status_code == 404


def _refusal(response: httpx.Response) -> tuple[str, str]:
    try:
        answer = response.json()
        return str(answer["error"]), str(answer["message"])
    except (ValueError, KeyError, TypeError):
        return "ConciliumError", response.text[:200]


def deliver_outbox(context: Any) -> int:
    """One pass over the outbox: re-send what is due, oldest first per peer; returns
    how many messages were delivered."""
    outbox = getattr(context, "outbox", None)
    manifest: Manifest | None = context.manifest
    if outbox is None or manifest is None:
        return 0
    parties = {p.name: p for p in manifest.parties}
    delivered = 0
    for peer, items in outbox.due().items():
        party = parties.get(peer)
        for item in items:
            if party is None:  # no longer in the manifest
                outbox.delivered(item)
                continue
            try:
                response = _post(context, party, item.path, item.body)
            except httpx.HTTPError as error:
                outbox.failed(item, f"{type(error).__name__}: {error}")
                break
            if _retry_later(response):
                outbox.failed(item, f"HTTP {response.status_code}")
                break
            if response.status_code >= 400:
                kind, message = _refusal(response)
                _LOG.warning("%s refused a queued %s: %s: %s", peer, item.path, kind, message)
            outbox.delivered(item)
            delivered += 1
    return delivered


def verify_peer(manifest: Manifest | None, method: str, path: str, node: str | None,
                time: str | None, signature: str | None, body: bytes, *,
                incident: Callable[[str, str, list[str]], None] | None = None) -> str:
    """The name of the peer that signed this request, or :class:`AccessDenied`.

    ``incident(kind, reason, peers)`` is told of every refusal first: ``bad_signature``
    (unsigned, or not signed by the node it names) or ``stale_request`` (signed too
    long ago or in the future); ``peers`` is the node it names if that is a member."""
    members = {p.name for p in manifest.parties} if manifest is not None else set()
    claimed = [node] if node in members else []
    who = repr(node) if claimed else "a node that is not in the manifest"

    def refuse(kind: str, reason: str, message: str) -> AccessDenied:
        if incident is not None:
            incident(kind, f"{method} {path[:100]}: {reason}", list(claimed))
        return AccessDenied(message)

    if manifest is None:
        raise refuse("bad_signature", "a peer request, but this node has no manifest",
                     "this node has no consortium manifest; it accepts no peers")
    if not (node and time and signature):
        raise refuse("bad_signature", f"an unsigned peer request (from {who})",
                     "peer requests must be signed (X-Concilium-* headers)")
    try:
        party = manifest.parties[manifest.index(node)]
        sent = datetime.datetime.fromisoformat(time)
        public_key(party.signing_key).verify(bytes.fromhex(signature),
                                             _message(method, path, time, body))
    except (ConfigurationError, ValueError, InvalidSignature):
        raise refuse("bad_signature", f"a peer request claiming to come from {who} is not "
                     "signed by that node", f"a request claiming to come from {node!r} is "
                     "not signed by that node") from None
    if abs(datetime.datetime.now(datetime.UTC) - sent) > MAX_SKEW:
        raise refuse("stale_request", f"a request signed by {node!r} at {time[:40]} is too "
                     "old or from the future",
                     f"a request from {node!r} is too old or from the future")
    return node


# -- the catalog ---------------------------------------------------------------------
def own_entries(context: Any) -> list[DatasetEntry]:
    """What this node holds, as it publishes it (names, schemas, rules)."""
    return [record.entry(context.name) for record in context.store.datasets()]


def catalog(context: Any) -> list[DatasetEntry]:
    """This node's datasets and what every other node last published."""
    return own_entries(context) + [e for e in context.store.catalog() if e.node != context.name]


def _catalog_body(context: Any) -> dict[str, Any]:
    return {"node": context.name, "datasets": [e.as_dict() for e in own_entries(context)]}


def accept_catalog(context: Any, node: str, body: Mapping[str, Any]) -> None:
    """Store what ``node`` published about its datasets (entries for another node
    are refused: a node speaks only for itself)."""
    entries = [DatasetEntry.from_dict(item) for item in body.get("datasets", [])]
    if str(body.get("node")) != node or any(e.node != node for e in entries):
        raise AccessDenied(f"{node!r} may publish only its own datasets")
    context.store.replace_catalog(node, entries)


def ask(context: Any, path: str, body: Mapping[str, Any],
         parties: list[PartyEntry] | None = None) -> dict[str, Any]:
    """POST a signed request to each peer (all but this node, or ``parties``); each
    peer's JSON answer, or None if it could not be reached or refused."""
    manifest: Manifest | None = context.manifest
    if manifest is None:
        return {}
    data = canonical_json(dict(body))
    answers: dict[str, Any] = {}
    for party in parties if parties is not None else manifest.parties:
        if party.name == context.name:
            continue
        try:
            response = _post(context, party, path, data)
            response.raise_for_status()
            answers[party.name] = response.json()
        except (httpx.HTTPError, ValueError):
            answers[party.name] = None
    return answers


def publish_catalog(context: Any) -> list[str]:
    """Send this node's datasets to every peer and store theirs from the answers;
    returns the peers that could not be reached."""
    unreachable = []
    for peer, answer in ask(context, "/peer/catalog", _catalog_body(context)).items():
        try:
            if answer is None:
                raise ConfigurationError(f"{peer} did not answer")
            accept_catalog(context, peer, answer)
        except ConciliumError:
            unreachable.append(peer)
    return unreachable


def load_dataset(context: Any, name: str) -> Dataset:
    """One of this node's datasets, loaded from its file and checked again."""
    known = context.store.dataset(name)
    schema = Schema.from_mapping(known.schema)
    if known.format == "parquet":  # as stated at registration, whatever the file's name
        return Dataset.from_parquet(name, known.source, schema)
    return Dataset.from_csv(name, known.source, schema)


# -- audit witnesses -----------------------------------------------------------------
def request_witnesses(context: Any) -> list[str]:
    """Ask every peer that has not co-signed this node's whole log to co-sign (and
    keep) its current checkpoint; returns the peers that did. The unprotected tail of
    a log is then only what was appended since the last round."""
    manifest: Manifest | None = context.manifest
    size, root = context.audit.checkpoint()
    if manifest is None or size == 0:
        return []
    behind = [p for p in manifest.parties if context.audit.cosigned_size(p.name) < size]
    signed = []
    answers = ask(context, "/peer/witness", {"size": size, "root": root}, behind)
    for peer, answer in answers.items():
        try:
            signature = str(answer["signature"])
            party = manifest.parties[manifest.index(peer)]
            public_key(party.signing_key).verify(bytes.fromhex(signature),
                                                 checkpoint_message(size, root))
        except (KeyError, TypeError, ValueError, InvalidSignature):
            continue
        context.audit.add_cosignature(Checkpoint(size, root, peer, signature))
        signed.append(peer)
    return signed


def collect_witnessed(context: Any) -> tuple[list[Witnessed], list[str]]:
    """The checkpoints of this node's log that its peers keep, and the peers that
    answered (a node verifies its own log against them)."""
    held: list[Witnessed] = []
    answered = []
    for peer, answer in ask(context, "/peer/witnessed", {"node": context.name}).items():
        try:
            items = [Witnessed.from_dict(item) for item in answer]
        except (TypeError, ConciliumError):
            continue
        held += [w for w in items if w.node == context.name and w.signer == peer]
        answered.append(peer)
    return held, answered


def verify_own_log(context: Any) -> dict[str, Any]:
    """This node's audit log, checked entry by entry and against the checkpoints its
    peers keep; the outcome (also logged) for ``/health`` and ``/audit/verify``."""
    manifest: Manifest | None = context.manifest
    signers = None if manifest is None else {p.name: p.signing_key for p in manifest.parties}
    held, answered = collect_witnessed(context)
    try:
        entries = verify_log(context.audit_path, signers, against=held, own_amendments=True)
    except AuditError as error:
        outcome = {"verified": False, "problem": str(error), "peers": answered,
                   "checkpoints": len(held)}
        context.audit.record(AuditAlert(str(error), list(answered)))
    else:
        outcome = {"verified": True, "entries": entries, "peers": answered,
                   "checkpoints": len(held)}
    context.audit_status = outcome
    return outcome


# -- approvals -------------------------------------------------------------------------
def all_approved(spec: ComputationSpec, approvals: list[Approval], manifest: Manifest) -> bool:
    """Every approver the spec names has given its approvals (signatures checked; a
    rejection or revocation counts against)."""
    try:
        require_approvals(spec, approvals, manifest)
    except ApprovalMissing:
        return False
    return True


def pending_approvers(spec: ComputationSpec, approvals: list[Approval],
                      manifest: Manifest) -> dict[str, int]:
    """Approvals still missing per approver node (rejections are not pending)."""
    latest, _ = standing_decisions(spec, approvals, manifest)
    missing = {}
    for node, required in spec.approvers.items():
        given = {a.approver for (by, _), a in latest.items()
                 if by == node and a.decision == "approve"}
        if len(given) < required:
            missing[node] = required - len(given)
    return missing


def refuse(context: Any, spec: ComputationSpec, error: ConciliumError) -> Approval:
    """This node's automatic rejection of a computation it must not take part in,
    with the reason, stored, logged and sent to every node."""
    reason = f"{type(error).__name__}: {error}"
    approval = sign_approval(spec, "reject", AUTOMATIC, context.name, context.key,
                             comment=reason[:1000])
    context.store.add_approval(approval)
    context.store.update(spec.computation_id, status="refused", error=f"{context.name} "
                         f"refused it: {reason}")
    context.audit.record(Refusal(spec.computation_id, type(error).__name__, str(error)))
    forward(context, "/peer/approvals", approval.as_dict())
    return approval
