"""The audit log's events: one frozen dataclass per kind, so an entry of a kind
always has the same body (the fields, in this order, and nothing else).

A node writes them with ``AuditLog.record(event)``; ``event_from_entry`` reads an
entry back as its event (an auditor's tool, and the test that every kind's body
is what this module says). ``docs/audit.md`` lists every kind and field.

Bodies hold identifiers, decisions, hashes, commitments, counts and reasons,
never a record, a share or a secret.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from concilium.errors import AuditError

__all__ = ["EVENTS", "Abort", "Approval", "AuditAlert", "AuditEvent", "BudgetCharge",
           "BudgetRefund", "DatasetRegistered", "DatasetRulesChanged", "Delivery",
           "Incident", "InputCommitment", "ManifestAmended", "ModelRegistered", "PolicyDecision",
           "Proposal", "Refusal", "Result", "Retry", "RunEnd", "RunStart", "SigningKeyRotated",
           "event_from_entry"]


@dataclass(frozen=True)
class AuditEvent:
    """An audit event; ``KIND`` is the entry's kind, the fields are its body."""

    KIND: ClassVar[str] = ""

    def body(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


@dataclass(frozen=True)
class Proposal(AuditEvent):
    """A computation's spec: proposed here or received from a peer (``origin``: the
    node it came from), or, with ``origin`` None, the spec a run executes (logged
    again at the start of every run, with the approvals it holds)."""

    KIND: ClassVar[str] = "proposal"
    computation_id: str
    spec: Mapping[str, Any]
    origin: str | None


@dataclass(frozen=True)
class Approval(AuditEvent):
    """A signed decision of an approver (approve or reject), with everything its
    signature covers (so the entry can be checked against the node's key)."""

    KIND: ClassVar[str] = "approval"
    computation_id: str
    decision: str
    approver: str
    node: str
    time: str
    comment: str
    signature: str

    @classmethod
    def of(cls, approval: Any) -> Approval:
        """The event of a :class:`concilium.governance.approval.Approval`."""
        return cls(**approval.as_dict())


@dataclass(frozen=True)
class Refusal(AuditEvent):
    """This node refused to take part (a missing approval, a policy, a protocol)."""

    KIND: ClassVar[str] = "refusal"
    computation_id: str
    error: str
    reason: str


@dataclass(frozen=True)
class RunStart(AuditEvent):
    """This node's party starts the run: its index, the protocol, the threat model."""

    KIND: ClassVar[str] = "run_start"
    computation_id: str
    party: int
    protocol: str
    threat_model: Mapping[str, Any]


@dataclass(frozen=True)
class InputCommitment(AuditEvent):
    """A commitment to an input: hashes of the table and schema and the row count."""

    KIND: ClassVar[str] = "input_commitment"
    computation_id: str
    dataset: str
    rows: int
    hash: str
    schema_hash: str


@dataclass(frozen=True)
class PolicyDecision(AuditEvent):
    """The output policy applied, and the cells it suppressed (by group and rule)."""

    KIND: ClassVar[str] = "policy_decision"
    computation_id: str
    policy: Mapping[str, Any]
    suppressed: list[dict[str, Any]]


@dataclass(frozen=True)
class Result(AuditEvent):
    """The run's output: its hash where this node received it (else None)."""

    KIND: ClassVar[str] = "result"
    computation_id: str
    result_hash: str | None
    recipients: list[str]


@dataclass(frozen=True)
class RunEnd(AuditEvent):
    """The run ended: bytes this party sent, the transcript digests per peer and the
    communication rounds (the depth of the exchange, 0 in entries from before it was
    recorded)."""

    KIND: ClassVar[str] = "run_end"
    computation_id: str
    bytes_sent: int
    transcript: list[dict[str, Any]]
    rounds: int = 0


@dataclass(frozen=True)
class Abort(AuditEvent):
    """The run aborted here: the error's type and its first line."""

    KIND: ClassVar[str] = "abort"
    computation_id: str
    error: str
    reason: str


@dataclass(frozen=True)
class Delivery(AuditEvent):
    """A result handed to a user of this node (who, and the hash of what)."""

    KIND: ClassVar[str] = "delivery"
    computation_id: str
    user: str
    result_hash: str


@dataclass(frozen=True)
class Retry(AuditEvent):
    """A failed computation reset for another run."""

    KIND: ClassVar[str] = "retry"
    computation_id: str


@dataclass(frozen=True)
class DatasetRegistered(AuditEvent):
    """A dataset registered: its row count, format, owner's rules and schema hash."""

    KIND: ClassVar[str] = "dataset_registered"
    dataset: str
    rows: int
    format: str
    rules: Mapping[str, Any]
    schema_hash: str


@dataclass(frozen=True)
class ModelRegistered(AuditEvent):
    """A vendor's model registered at this node: its file's SHA-256 (what specs name and
    approvers sign), the file's name, the public shape, and who registered it."""

    KIND: ClassVar[str] = "model_registered"
    sha256: str
    file: str
    shape: Mapping[str, Any]
    by: str


@dataclass(frozen=True)
class ManifestAmended(AuditEvent):
    """The consortium's manifest changed by an amendment this node applied: the
    amendment's id, the old and new manifest hashes, the kind of change, what it
    changes, and the members whose signatures it carried."""

    KIND: ClassVar[str] = "manifest_amended"
    amendment: str
    base: str
    manifest: str
    change: str
    description: str
    signers: list[str]
    #: party -> its signing key before this amendment, for every party whose signing
    #: key it changes or drops: the co-signatures made under that key until this
    #: entry still verify, later ones do not
    replaced_keys: Mapping[str, str]


@dataclass(frozen=True)
class SigningKeyRotated(AuditEvent):
    """This node's signing key changed (a rotation amendment it applied): signed by
    the old key, this entry hands the log over to the new one, which signs every
    later entry. ``amendment``: the amendment that announced the new key ("" when a
    node that stopped mid-rotation finishes it at start)."""

    KIND: ClassVar[str] = "signing_key_rotated"
    old_key: str
    new_key: str
    amendment: str


@dataclass(frozen=True)
class DatasetRulesChanged(AuditEvent):
    """An owner's rules for a dataset changed, by whom, from what to what."""

    KIND: ClassVar[str] = "dataset_rules_changed"
    dataset: str
    by: str
    before: Mapping[str, Any]
    after: Mapping[str, Any]


@dataclass(frozen=True)
class AuditAlert(AuditEvent):
    """A log that does not match the checkpoints its peers keep (this node's or a
    peer's), with the problem and the peers involved."""

    KIND: ClassVar[str] = "audit_alert"
    problem: str
    peers: list[str]


@dataclass(frozen=True)
class BudgetCharge(AuditEvent):
    """A run's privacy loss charged to a dataset's budget at its owner (before the run
    shares anything), with what is spent and left afterwards."""

    KIND: ClassVar[str] = "budget_charge"
    computation_id: str
    dataset: str
    unit: str
    analyst: str
    rho: float
    spent: float
    left: float


@dataclass(frozen=True)
class BudgetRefund(AuditEvent):
    """A charge given back: the run aborted before anything was revealed."""

    KIND: ClassVar[str] = "budget_refund"
    computation_id: str
    dataset: str
    rho: float
    reason: str


@dataclass(frozen=True)
class Incident(AuditEvent):
    """Something this node refused that no other kind records: a peer request whose
    signature fails, an MPC connection, certificate or frame refused, a run that failed
    with no ``abort`` entry. ``kind`` says which (docs/audit.md lists them), ``peers``
    the nodes involved as far as this node can tell, ``computation_id`` the computation
    (None when there is none or it is not known)."""

    KIND: ClassVar[str] = "incident"
    kind: str
    reason: str
    peers: list[str]
    computation_id: str | None


#: every kind, by its name
EVENTS: dict[str, type[AuditEvent]] = {event.KIND: event for event in (
    Proposal, Approval, Refusal, RunStart, InputCommitment, PolicyDecision, Result, RunEnd,
    Abort, Delivery, Retry, DatasetRegistered, ModelRegistered, ManifestAmended,
    DatasetRulesChanged, AuditAlert, BudgetCharge, BudgetRefund, Incident, SigningKeyRotated)}


def event_from_entry(kind: str, body: Mapping[str, Any]) -> AuditEvent:
    """The event an entry records; ``AuditError`` for an unknown kind or a body whose
    fields are not the kind's."""
    event = EVENTS.get(kind)
    if event is None:
        raise AuditError(f"unknown audit event kind {kind!r}")
    names = [f.name for f in dataclasses.fields(event)]
    if sorted(body) != sorted(names):
        raise AuditError(f"a {kind} entry has fields {sorted(body)}, not {sorted(names)}")
    return event(**body)
