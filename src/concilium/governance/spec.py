"""Computation specs: exactly what will run, and its id.

A spec names the SQL, the datasets, the consortium (by manifest hash), the
protocol, the recipients, the output policy and the analyst. Its canonical
JSON (sorted keys, no spaces, ASCII) is hashed with SHA-256 into the
*computation id*: approvals sign that id, so any change to the spec (one
character of SQL, one more recipient, a looser policy) is a new computation
that needs new approvals.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from concilium.errors import ConfigurationError

__all__ = ["ComputationSpec", "canonical_json"]


def canonical_json(value: Any) -> bytes:
    """The one byte string for a JSON value: sorted keys, no spaces, ASCII only."""
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                          allow_nan=False).encode()
    except (TypeError, ValueError) as error:
        raise ConfigurationError(f"not canonical JSON: {error}") from None


@dataclass(frozen=True)
class ComputationSpec:
    """A proposed computation (public to the consortium)."""

    query: str
    datasets: tuple[str, ...]
    consortium: str  # manifest hash
    protocol: str
    recipients: tuple[str, ...]
    analyst: str
    policy: dict[str, Any] = field(default_factory=dict)  # the output policy, as TOML data

    def __post_init__(self) -> None:
        if not self.query.strip():
            raise ConfigurationError("a computation needs a query")
        if not self.datasets:
            raise ConfigurationError("a computation needs at least one dataset")
        if not self.recipients:
            raise ConfigurationError("a computation needs at least one recipient")
        if not self.analyst:
            raise ConfigurationError("a computation needs the proposing analyst")

    def as_dict(self) -> dict[str, Any]:
        return {"query": self.query, "datasets": sorted(self.datasets),
                "consortium": self.consortium, "protocol": self.protocol,
                "recipients": sorted(self.recipients), "analyst": self.analyst,
                "policy": self.policy}

    def canonical_json(self) -> bytes:
        return canonical_json(self.as_dict())

    @property
    def computation_id(self) -> str:
        """Hex SHA-256 of the canonical JSON."""
        return hashlib.sha256(self.canonical_json()).hexdigest()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ComputationSpec:
        try:
            return cls(query=data["query"], datasets=tuple(data["datasets"]),
                       consortium=data["consortium"], protocol=data["protocol"],
                       recipients=tuple(data["recipients"]), analyst=data["analyst"],
                       policy=dict(data.get("policy", {})))
        except (KeyError, TypeError) as error:
            raise ConfigurationError(f"malformed computation spec: {error}") from None
