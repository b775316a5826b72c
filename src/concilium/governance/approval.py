"""Signed approvals, and the check every node runs before contributing shares.

An approver authenticates to their own node, which signs the canonical JSON
of (computation id, decision, approver, node, time, comment) with the node's
Ed25519 key (``cryptography``). Decisions are ``approve``, ``reject`` and
``revoke`` (withdraws the same approver's earlier approval); for each
approver only the latest decision counts.

:func:`require_approvals` is what a node runs before it shares anything:
every node the spec names as an approver (``spec.approvers``: the owners of
the datasets it uses, and how many distinct approvers each needs) must have
given valid approvals *for this computation id*, signed by that node's key as
listed in the manifest. A forged, missing, revoked, rejected or mismatched
approval refuses the run with :class:`~concilium.errors.ApprovalMissing`,
naming the node, its datasets and the reason. (Each node separately checks
that the spec asks at least what its own rules require:
:func:`concilium.governance.proposal.check_spec`.)
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519

from concilium.errors import ApprovalMissing, ConfigurationError
from concilium.governance.consortium import Manifest
from concilium.governance.spec import ComputationSpec, canonical_json

__all__ = ["DECISIONS", "Approval", "public_key", "require_approvals", "sign_approval",
           "signature_valid", "standing_decisions", "verify_approval"]

Decision = Literal["approve", "reject", "revoke"]
DECISIONS: tuple[Decision, ...] = ("approve", "reject", "revoke")


@dataclass(frozen=True)
class Approval:
    """A node-signed decision on one computation."""

    computation_id: str
    decision: Decision
    approver: str
    node: str
    time: str  # ISO 8601, UTC
    comment: str
    signature: str  # hex Ed25519 signature over the canonical JSON of the fields above

    def signed_part(self) -> bytes:
        return canonical_json({"computation_id": self.computation_id,
                               "decision": self.decision, "approver": self.approver,
                               "node": self.node, "time": self.time,
                               "comment": self.comment})

    def as_dict(self) -> dict[str, str]:
        return {"computation_id": self.computation_id, "decision": self.decision,
                "approver": self.approver, "node": self.node, "time": self.time,
                "comment": self.comment, "signature": self.signature}


def public_key(text: str) -> ed25519.Ed25519PublicKey:
    """An ``ed25519:<hex>`` public key from the manifest."""
    prefix = "ed25519:"
    if not text.startswith(prefix):
        raise ConfigurationError(f"not an Ed25519 public key: {text[:20]}...")
    try:
        return ed25519.Ed25519PublicKey.from_public_bytes(bytes.fromhex(text[len(prefix):]))
    except ValueError:
        raise ConfigurationError("malformed Ed25519 public key") from None


def signature_valid(key_text: str, signature_hex: str, message: bytes) -> bool:
    """Whether ``signature_hex`` is an Ed25519 signature of ``message`` under the
    manifest's ``ed25519:<hex>`` key ``key_text`` (a malformed signature is not)."""
    try:
        public_key(key_text).verify(bytes.fromhex(signature_hex), message)
        return True
    except (InvalidSignature, ValueError):
        return False


def sign_approval(spec: ComputationSpec | str, decision: Decision, approver: str, node: str,
                  key: ed25519.Ed25519PrivateKey, *, comment: str = "",
                  time: datetime.datetime | None = None) -> Approval:
    """The node's signature over an approver's decision (the approver has already
    authenticated to this node)."""
    if decision not in DECISIONS:
        raise ConfigurationError(f"decision must be one of {', '.join(DECISIONS)}")
    identifier = spec.computation_id if isinstance(spec, ComputationSpec) else spec
    when = (time or datetime.datetime.now(datetime.UTC)).astimezone(datetime.UTC)
    unsigned = Approval(identifier, decision, approver, node,
                        when.isoformat(timespec="seconds"), comment, "")
    return dataclasses.replace(unsigned, signature=key.sign(unsigned.signed_part()).hex())


def verify_approval(approval: Approval, manifest: Manifest) -> None:
    """Refuse an approval whose signature is not the named node's."""
    try:
        party = manifest.parties[manifest.index(approval.node)]
    except ConfigurationError:
        raise ApprovalMissing(f"an approval names node {approval.node!r}, which is not in "
                              "the consortium") from None
    if not signature_valid(party.signing_key, approval.signature, approval.signed_part()):
        raise ApprovalMissing(f"the approval by {approval.approver!r} at {approval.node!r} "
                              "has a forged or damaged signature")


def standing_decisions(spec: ComputationSpec, approvals: Iterable[Approval],
                       manifest: Manifest) -> tuple[dict[tuple[str, str], Approval], int]:
    """Each (node, approver)'s latest decision on this computation, every signature
    verified; and how many approvals were for another computation id."""
    latest: dict[tuple[str, str], Approval] = {}
    foreign = 0
    for approval in approvals:
        verify_approval(approval, manifest)
        if approval.computation_id != spec.computation_id:
            foreign += 1
            continue
        key = (approval.node, approval.approver)
        if key not in latest or approval.time >= latest[key].time:
            latest[key] = approval
    return latest, foreign


def require_approvals(spec: ComputationSpec, approvals: Iterable[Approval],
                      manifest: Manifest) -> None:
    """Raise :class:`ApprovalMissing` unless every node in ``spec.approvers`` has given
    the approvals it needs; verifies every signature first."""
    if spec.consortium != manifest.hash:
        raise ApprovalMissing("the computation is for another consortium (manifest hash "
                              "differs)")
    if not spec.approvers:
        raise ApprovalMissing("the computation names no approvers; every use of a dataset "
                              "needs its owners' approval")
    latest, foreign = standing_decisions(spec, approvals, manifest)
    for node, required in sorted(spec.approvers.items()):
        held = [name for name in spec.datasets if node in spec.owners(name)]
        what = f"{node!r} (owner of {', '.join(held)})" if held else repr(node)
        decisions = [a for (by, _), a in latest.items() if by == node]
        rejected = [a.approver for a in decisions if a.decision == "reject"]
        if rejected:
            raise ApprovalMissing(f"{what}: rejected by {', '.join(sorted(rejected))}")
        approved = {a.approver for a in decisions if a.decision == "approve"}
        if len(approved) < required:
            why = (" (approvals were given for another computation: the spec changed)"
                   if foreign and not approved else "")
            revoked = [a.approver for a in decisions if a.decision == "revoke"]
            if revoked and not why:
                why = f" ({', '.join(revoked)} revoked their approval)"
            raise ApprovalMissing(f"{what} needs {required} approval(s), has "
                                  f"{len(approved)}{why}")
