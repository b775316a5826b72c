"""Concilium: governed secure multiparty computation.

Organizations that cannot pool their data compute joint results on secret
shares; no party sees another's records. Layers, in dependency order:

``ring`` -> ``net`` -> ``mpc`` -> ``ops`` -> ``data`` -> ``query``/``governance``
-> ``node`` -> ``cli``.
"""

from concilium.data import OutsideParty, SecretArray, Session
from concilium.data.dataset import Dataset
from concilium.data.schema import Column, ColumnType, Schema
from concilium.errors import (
    ApprovalMissing,
    BadFrame,
    ConciliumError,
    ConfigurationError,
    DatasetError,
    FixedPointRangeError,
    InputError,
    PeerUnavailable,
    PolicyViolation,
    ProtocolAbort,
    QueryError,
    RingRangeError,
    SessionMismatch,
    ShapeMismatch,
    UnsupportedQuery,
)
from concilium.ring import FixedPointCodec
from concilium.simulate import simulate
from concilium.testing import run_parties

__version__ = "0.1.0"

__all__ = [
    "ApprovalMissing",
    "BadFrame",
    "Column",
    "ColumnType",
    "ConciliumError",
    "ConfigurationError",
    "Dataset",
    "DatasetError",
    "FixedPointCodec",
    "FixedPointRangeError",
    "InputError",
    "OutsideParty",
    "PeerUnavailable",
    "PolicyViolation",
    "ProtocolAbort",
    "QueryError",
    "RingRangeError",
    "Schema",
    "SecretArray",
    "Session",
    "SessionMismatch",
    "ShapeMismatch",
    "UnsupportedQuery",
    "__version__",
    "run_parties",
    "simulate",
]
