"""The one exception tree of Concilium.

Every error a user can meet is a subclass of :class:`ConciliumError`, and its
message says what went wrong and what to do next. Messages never contain
secret values: they name columns, indices, shapes, parties and counts, not
data.

```
ConciliumError
├── InputError (also a ValueError)           bad values handed to the engine
│   ├── FixedPointRangeError                 NaN, infinity or out of the safe range
│   ├── RingRangeError                       integer outside the 64-bit ring
│   ├── ShapeMismatch                        shapes that do not broadcast or multiply
│   ├── DatasetError                         a dataset row breaks its schema (column, row)
│   ├── QueryError                           SQL that does not fit the catalog
│   │   └── UnsupportedQuery                 valid SQL that Concilium cannot run
│   └── ModelError                           a model that does not fit the dataset or job
│       └── UnsupportedModel                 a model kind or ONNX operator Concilium cannot run
├── SessionMismatch                          secret values from different sessions/backends
├── ConfigurationError                       a setting that cannot work (wrong party count, ...)
├── ProtocolAbort                            the run stopped; nothing further is revealed
│   ├── PeerUnavailable                      a peer went silent or disconnected
│   └── CheatingDetected                     two parties' copies of a message disagree
├── BadFrame                                 a malformed, oversized or unexpected frame
├── PolicyViolation                          an output policy forbids the result
│   ├── BudgetExhausted                      the dataset's privacy budget would be exceeded
│   └── RateLimited                          an analyst's query rate on a dataset is reached
├── ApprovalMissing                          a required approval is absent or invalid
├── AccessDenied                             a user's role does not allow the action
└── AuditError                               an audit log fails verification (names the index)
```
"""

from __future__ import annotations

__all__ = [
    "AccessDenied",
    "TooManyAttempts",
    "ApprovalMissing",
    "AuditError",
    "BadFrame",
    "BudgetExhausted",
    "CheatingDetected",
    "ConciliumError",
    "ConfigurationError",
    "DatasetError",
    "FixedPointRangeError",
    "InputError",
    "ModelError",
    "PeerUnavailable",
    "PolicyViolation",
    "ProtocolAbort",
    "QueryError",
    "RateLimited",
    "RingRangeError",
    "SessionMismatch",
    "ShapeMismatch",
    "UnsupportedModel",
    "UnsupportedQuery",
]


class ConciliumError(Exception):
    """Base class of every error raised by Concilium."""


class InputError(ConciliumError, ValueError):
    """Values handed to the engine are unusable; nothing was shared."""


class FixedPointRangeError(InputError):
    """A value is NaN, infinite, or outside the fixed-point codec's safe range."""


class RingRangeError(InputError):
    """An integer does not fit the 64-bit ring (two's complement or unsigned)."""


class ShapeMismatch(InputError):
    """Operand shapes do not broadcast, or do not agree for a matrix product."""


class DatasetError(InputError):
    """A dataset does not match its schema: names the column and the 1-based data row
    (never the value), so the owner can fix the source. Nothing was shared."""

    def __init__(self, message: str, *, column: str | None = None,
                 row: int | None = None) -> None:
        super().__init__(message)
        self.column = column
        self.row = row


class QueryError(InputError):
    """A query names an unknown table or column, or mixes types in a way SQL forbids."""


class UnsupportedQuery(QueryError):
    """Valid SQL that Concilium cannot run (yet); ``construct`` is the offending part."""

    def __init__(self, message: str, *, construct: str | None = None) -> None:
        super().__init__(message)
        self.construct = construct


class ModelError(InputError):
    """A model for an evaluation that cannot be used as given: its features do not
    match the dataset's schema, its classes are not 0..k-1, its numbers are malformed."""


class UnsupportedModel(ModelError):
    """A model kind, ONNX operator or attribute Concilium cannot evaluate;
    ``operator`` names it (for ONNX: ``domain:op_type`` and the opset version)."""

    def __init__(self, message: str, *, operator: str | None = None) -> None:
        super().__init__(message)
        self.operator = operator


class SessionMismatch(ConciliumError):
    """Secret values from different sessions or backends were combined."""


class ConfigurationError(ConciliumError):
    """A setting cannot work as given (party count, protocol, parameters)."""


class ProtocolAbort(ConciliumError):
    """The run was aborted on this party; nothing further is revealed."""


class PeerUnavailable(ProtocolAbort):
    """A peer did not answer within the timeout, or its connection closed."""

    #: Marks an abort reason that a peer sends when another went silent.
    MARK = "PeerUnavailable"


class CheatingDetected(ProtocolAbort):
    """A party deviated from a malicious-secure protocol: a message and the copy (or
    hash) a second party vouches for it with disagree, or a message breaks the plan.

    ``parties``: the positions involved (one of them cheated, or lied about it);
    ``step``: which message. The run is aborted on every party before anything
    derived from the message is sent or opened. A party that only learns of the
    abort from a peer raises it too (with the detecting party's description), so
    its claim about who disagreed is that peer's word.
    """

    #: Marks an abort reason that a peer sends when it detected cheating.
    MARK = "CheatingDetected"

    def __init__(self, text: str, *, parties: tuple[int, ...] = (), step: str = "") -> None:
        super().__init__(text)
        self.parties = parties
        self.step = step


def abort_error(reason: str) -> ProtocolAbort:
    """The error a party raises on an abort for ``reason``: CheatingDetected when the
    aborting party detected cheating, PeerUnavailable when a peer went silent on it,
    ProtocolAbort otherwise."""
    if CheatingDetected.MARK in reason:
        return CheatingDetected(reason)
    if PeerUnavailable.MARK in reason:
        return PeerUnavailable(reason)
    return ProtocolAbort(reason)


class BadFrame(ConciliumError):
    """A frame is malformed, oversized, replayed, or carries an unexpected tag."""


class PolicyViolation(ConciliumError):
    """An output policy forbids releasing a result as requested."""


class BudgetExhausted(PolicyViolation):
    """A run would spend more of a dataset's privacy budget than is left (the message
    says what is left); the owner node refuses to contribute."""


class RateLimited(PolicyViolation):
    """An analyst has reached the number of queries a dataset's owner allows per day."""


class ApprovalMissing(ConciliumError):
    """A required approval is missing, revoked, forged or for another computation."""


class AuditError(ConciliumError):
    """An audit log entry was edited, deleted, inserted or reordered, or a signature
    fails; ``index`` is the first bad entry."""

    def __init__(self, message: str, *, index: int | None = None) -> None:
        super().__init__(message)
        self.index = index


class AccessDenied(ConciliumError):
    """An unknown or revoked token, or a role that does not allow the action."""


class TooManyAttempts(AccessDenied):
    """Too many failed token attempts from one address: refused for a while."""
