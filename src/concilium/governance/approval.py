"""Signed approvals, and the check every node runs before contributing shares.

An approver authenticates to their own node, which signs the canonical JSON
of (computation id, decision, approver, node, time, comment) with the node's
Ed25519 key (``cryptography``). Decisions are ``approve``, ``reject`` and
``revoke`` (withdraws the same approver's earlier approval); for each
approver only the latest decision counts.

:func:`require_approvals` is what a node runs before it shares anything:
every dataset's policy (which node owns it, how many approvals it needs) must
be met by valid approvals *for this computation id*, signed by the owner
node's key as listed in the manifest. A forged, missing, revoked, rejected
or mismatched approval refuses the run with
:class:`~concilium.errors.ApprovalMissing`, naming the dataset and the
reason.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519

from concilium.errors import ApprovalMissing, ConfigurationError
from concilium.governance.consortium import Manifest
from concilium.governance.spec import ComputationSpec, canonical_json

__all__ = ["DECISIONS", "Approval", "ApprovalPolicy", "public_key", "require_approvals",
           "sign_approval", "verify_approval"]

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


@dataclass(frozen=True)
class ApprovalPolicy:
    """A dataset's rule: its owner node and how many distinct approvers it needs."""

    dataset: str
    owner: str
    required: int = 1

    def __post_init__(self) -> None:
        if self.required < 1:
            raise ConfigurationError(f"dataset {self.dataset!r} must need at least one "
                                     "approval")


def public_key(text: str) -> ed25519.Ed25519PublicKey:
    """An ``ed25519:<hex>`` public key from the manifest."""
    prefix = "ed25519:"
    if not text.startswith(prefix):
        raise ConfigurationError(f"not an Ed25519 public key: {text[:20]}...")
    try:
        return ed25519.Ed25519PublicKey.from_public_bytes(bytes.fromhex(text[len(prefix):]))
    except ValueError:
        raise ConfigurationError("malformed Ed25519 public key") from None


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
    try:
        public_key(party.signing_key).verify(bytes.fromhex(approval.signature),
                                             approval.signed_part())
    except (InvalidSignature, ValueError):
        raise ApprovalMissing(f"the approval by {approval.approver!r} at {approval.node!r} "
                              "has a forged or damaged signature") from None


def require_approvals(spec: ComputationSpec, approvals: Iterable[Approval],
                      manifest: Manifest, policies: Mapping[str, ApprovalPolicy]) -> None:
    """Raise :class:`ApprovalMissing` unless every dataset of ``spec`` is approved as
    its policy requires; verifies every signature first."""
    if spec.consortium != manifest.hash:
        raise ApprovalMissing("the computation is for another consortium (manifest hash "
                              "differs)")
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
    for dataset in spec.datasets:
        policy = policies.get(dataset)
        if policy is None:
            raise ApprovalMissing(f"dataset {dataset!r} has no approval policy; its owner "
                                  "must set one before it can be used")
        decisions = [a for (node, _), a in latest.items() if node == policy.owner]
        rejected = [a.approver for a in decisions if a.decision == "reject"]
        if rejected:
            raise ApprovalMissing(f"dataset {dataset!r}: rejected by {', '.join(rejected)} at "
                                  f"{policy.owner!r}")
        approved = {a.approver for a in decisions if a.decision == "approve"}
        if len(approved) < policy.required:
            why = (" (approvals were given for another computation: the spec changed)"
                   if foreign and not approved else "")
            revoked = [a.approver for a in decisions if a.decision == "revoke"]
            if revoked and not why:
                why = f" ({', '.join(revoked)} revoked their approval)"
            raise ApprovalMissing(f"dataset {dataset!r} needs {policy.required} approval(s) "
                                  f"from {policy.owner!r}, has {len(approved)}{why}")
