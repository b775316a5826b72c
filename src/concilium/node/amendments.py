"""A node's side of manifest amendments (:mod:`concilium.governance.amendments`): propose
one, sign one, receive them from peers, and apply one once it carries every
signature it needs.

Applying an amendment writes the new manifest over the node's manifest file
(atomically: a new file renamed over the old), switches the running node to it
(the control plane, the pinned certificates of the MPC listener, the parties of
the next runs), and logs ``manifest_amended`` to the audit log with the amendment's
id, the old and new hashes, the kind of change and who signed. Computations
already running finish on the connections they have. Specs approved under the
old manifest name its hash, and are refused from then on.

A node that the amendment removes stops being a party of the consortium: peers
refuse its connections and its signed requests.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from concilium.errors import AccessDenied, ApprovalMissing, ConfigurationError
from concilium.governance import audit_events as events
from concilium.governance.amendments import (
    Amendment,
    AmendmentSignature,
    apply,
    check_signature,
    classify,
    propose,
    required_signers,
    sign,
)
from concilium.governance.audit import key_text
from concilium.governance.consortium import Manifest, save_manifest
from concilium.governance.identity import complete_rotation, load_signing_key
from concilium.node import control
from concilium.node.context import NodeContext

__all__ = ["approve_amendment", "list_amendments", "propose_amendment", "receive_amendment"]


def _manifest(context: NodeContext) -> Manifest:
    if context.manifest is None:
        raise ConfigurationError("this node has no consortium manifest; start it with "
                                 "--manifest to amend one")
    return context.manifest


def _signatures(context: NodeContext, identifier: str) -> list[AmendmentSignature]:
    for known in context.store.amendments():
        if known["id"] == identifier:
            return [AmendmentSignature(identifier, node, signature)
                    for node, signature in known["signatures"].items()]
    return []


def _find(context: NodeContext, identifier: str) -> Amendment:
    for known in context.store.amendments():
        if known["id"] == identifier or (len(identifier) >= 8 and
                                         known["id"].startswith(identifier)):
            return Amendment.from_dict(known["body"])
    raise ConfigurationError(f"this node knows no amendment {identifier[:16]}...")


def propose_amendment(context: NodeContext, new: Manifest, reason: str, *, revoke: str = ""
                      ) -> dict[str, Any]:
    """Propose changing the manifest to ``new``; this node signs it if its signature is
    needed, and sends it to every member (old and new)."""
    base = _manifest(context)
    amendment = propose(base, new, reason, context.name, revoke=revoke)
    context.store.add_amendment(amendment.identifier, amendment.as_dict())
    signatures = []
    if context.name in required_signers(base, amendment):
        mine = sign(amendment, context.name, context.key)
        context.store.add_amendment_signature(amendment.identifier, mine.node, mine.signature)
        signatures.append(mine.as_dict())
    _forward(context, base, amendment, signatures)
    return _maybe_apply(context, amendment)


def approve_amendment(context: NodeContext, identifier: str) -> dict[str, Any]:
    """This node's signature on an amendment it received, sent to every member."""
    base = _manifest(context)
    amendment = _find(context, identifier)
    if context.name not in required_signers(base, amendment):
        raise AccessDenied(f"{context.name}'s signature is not one this amendment needs "
                           f"({', '.join(required_signers(base, amendment))} sign it)")
    mine = sign(amendment, context.name, context.key)
    context.store.add_amendment_signature(amendment.identifier, mine.node, mine.signature)
    _forward(context, base, amendment, [mine.as_dict()])
    return _maybe_apply(context, amendment)


def receive_amendment(context: NodeContext, sender: str, body: dict[str, Any]
                      ) -> dict[str, Any]:
    """An amendment and signatures from a peer (its request already verified as
    signed by ``sender``): each signature is checked before it is kept."""
    base = _manifest(context)
    amendment = Amendment.from_dict(body["amendment"])
    context.store.add_amendment(amendment.identifier, amendment.as_dict())
    for data in body.get("signatures", []):
        signature = AmendmentSignature.from_dict(data)
        if amendment.base == base.hash:
            check_signature(base, amendment, signature)  # forged: refused, not kept
        context.store.add_amendment_signature(amendment.identifier, signature.node,
                                              signature.signature)
    return _maybe_apply(context, amendment)


def _forward(context: NodeContext, base: Manifest, amendment: Amendment,
             signatures: list[dict[str, str]]) -> None:
    """To every member of the current manifest (a joining member starts from the
    amended manifest file its operator is given)."""
    control.forward(context, "/peer/amendments",
                    {"amendment": amendment.as_dict(), "signatures": signatures})


def _maybe_apply(context: NodeContext, amendment: Amendment) -> dict[str, Any]:
    base = _manifest(context)
    change = classify(base, amendment) if amendment.base == base.hash else None
    state = {"id": amendment.identifier, "status": "proposed",
             "change": None if change is None else change.description,
             "kind": None if change is None else change.kind,
             "required": [] if change is None else list(required_signers(base, amendment)),
             "signed": sorted(s.node for s in _signatures(context, amendment.identifier))}
    if change is None:
        return {**state, "status": "stale: it amends another manifest"}
    try:
        new = apply(base, amendment, _signatures(context, amendment.identifier))
    except ApprovalMissing:
        return state
    _install(context, new)
    context.store.amendment_applied(amendment.identifier)
    signers = sorted(s.node for s in _signatures(context, amendment.identifier))
    context.audit.record(events.ManifestAmended(
        amendment.identifier, base.hash, new.hash, change.kind, change.description, signers,
        _replaced_keys(base, new)))
    if change.kind == "rotation" and change.parties == (context.name,):
        _switch_keys(context, amendment.identifier)
    return {**state, "status": "applied", "manifest": new.hash}


def _replaced_keys(base: Manifest, new: Manifest) -> dict[str, str]:
    """party -> its signing key in ``base``, for every party whose key ``new`` changes
    (a rotation, a revocation) or drops (a member removed): the co-signatures it made
    on this node's log until now still verify, later ones under that key do not."""
    after = {p.name: p.signing_key for p in new.parties}
    return {p.name: p.signing_key for p in base.parties
            if after.get(p.name) != p.signing_key}


def _install(context: NodeContext, new: Manifest) -> None:
    """The new manifest on disk (atomically) and in the running node."""
    path = context.manifest_path
    if path is not None:
        partial = Path(f"{path}.partial")
        save_manifest(new, partial)
        os.replace(partial, path)
    context.manifest = new
    listener = context.listener
    if listener is not None and hasattr(listener, "update_peers"):
        from concilium.node.launcher import endpoints

        listener.update_peers(endpoints(new))


def _switch_keys(context: NodeContext, amendment: str) -> None:
    """This node's own rotation is in force: its prepared keys replace the old ones,
    for the next TLS handshakes (API and MPC) and the next signatures. Connections
    already open finish on the old keys. A new signing key takes over the audit log
    by a ``signing_key_rotated`` entry signed with the old one."""
    if context.identity is None:
        return
    identity = complete_rotation(context.identity)
    context.identity = identity
    key = load_signing_key(identity)
    if key_text(key) != key_text(context.key):
        context.audit.rotate_key(key, amendment)
    context.key = key
    if context.api_tls is not None:
        context.api_tls.load_cert_chain(identity.tls_certificate_path, identity.tls_key_path)
    if context.listener is not None and context.manifest is not None:
        from concilium.node.launcher import endpoints

        context.listener.update_peers(endpoints(context.manifest))


def list_amendments(context: NodeContext) -> list[dict[str, Any]]:
    """Every amendment this node knows: applied ones are the consortium's history."""
    base = context.manifest
    out = []
    for known in context.store.amendments():
        amendment = Amendment.from_dict(known["body"])
        entry = {"id": known["id"], "status": known["status"], "received": known["received"],
                 "applied": known["applied"], "proposer": amendment.proposer,
                 "reason": amendment.reason, "base": amendment.base,
                 "signed": sorted(known["signatures"])}
        if base is not None and amendment.base == base.hash and known["status"] != "applied":
            change = classify(base, amendment)
            entry.update(change=change.description, kind=change.kind,
                         required=list(required_signers(base, amendment)))
        out.append(entry)
    return out
