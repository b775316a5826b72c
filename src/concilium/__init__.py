"""Concilium: governed secure multiparty computation.

Organizations that cannot pool their data compute joint results on secret
shares; no party sees another's records. Layers, in dependency order:

``ring`` -> ``net`` -> ``mpc`` -> ``ops`` -> ``data`` -> ``query``/``governance``
-> ``node`` -> ``cli``.
"""

from concilium.data import OutsideParty, SecretArray, Session
from concilium.errors import (
    ApprovalMissing,
    BadFrame,
    ConciliumError,
    ConfigurationError,
    FixedPointRangeError,
    InputError,
    PeerUnavailable,
    PolicyViolation,
    ProtocolAbort,
    RingRangeError,
    SessionMismatch,
    ShapeMismatch,
)
from concilium.ring import FixedPointCodec
from concilium.testing import run_parties

__version__ = "0.1.0"

__all__ = [
    "ApprovalMissing",
    "BadFrame",
    "ConciliumError",
    "ConfigurationError",
    "FixedPointCodec",
    "FixedPointRangeError",
    "InputError",
    "OutsideParty",
    "PeerUnavailable",
    "PolicyViolation",
    "ProtocolAbort",
    "RingRangeError",
    "SecretArray",
    "Session",
    "SessionMismatch",
    "ShapeMismatch",
    "__version__",
    "run_parties",
]
