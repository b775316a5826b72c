"""Computation specs: exactly what will run, and its id.

A spec names the SQL, the datasets, the consortium (by manifest hash), the
protocol, the recipients, the effective output policy (the strictest of the
proposal's and every used dataset's own), the analyst, where each dataset is
held (``tables``: its owner nodes and its public schema) and whose approval it
needs (``approvers``: node name -> distinct approvers there). Its canonical
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
    policy: dict[str, Any] = field(default_factory=dict)  # the effective output policy
    tables: dict[str, dict[str, Any]] = field(default_factory=dict)  # owners and schema
    approvers: dict[str, int] = field(default_factory=dict)  # node -> approvals needed
    #: random hex from the proposing node, so that the same query proposed again (next
    #: month's report) is a new computation with its own id, approvals and run
    nonce: str = ""
    #: a model evaluation instead of a query (see :mod:`concilium.evaluation.governed`):
    #: the model's hash and public shape, the vendor, the dataset's feature and label
    #: columns, the metrics; what approvers sign with the rest of the spec
    evaluation: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.query.strip() and not self.evaluation:
            raise ConfigurationError("a computation needs a query or a model evaluation")
        if self.query.strip() and self.evaluation:
            raise ConfigurationError("a computation is a query or a model evaluation, "
                                     "not both")
        if not self.datasets:
            raise ConfigurationError("a computation needs at least one dataset")
        if not self.recipients:
            raise ConfigurationError("a computation needs at least one recipient")
        if not self.analyst:
            raise ConfigurationError("a computation needs the proposing analyst")
        if self.tables and set(self.tables) != set(self.datasets):
            raise ConfigurationError("the spec's tables must be exactly its datasets")
        for name, table in self.tables.items():
            if not isinstance(table, dict) or not table.get("owners") or not isinstance(
                    table.get("schema"), dict):
                raise ConfigurationError(f"dataset {name!r} needs its owner nodes and schema")
        for node, count in self.approvers.items():
            if not isinstance(count, int) or isinstance(count, bool) or count < 1:
                raise ConfigurationError(f"node {node!r} must give at least one approval")

    def owners(self, dataset: str) -> tuple[str, ...]:
        """The nodes that hold ``dataset`` (its partitions, for horizontal data)."""
        table = self.tables.get(dataset)
        return () if table is None else tuple(str(o) for o in table["owners"])

    @property
    def owner_nodes(self) -> tuple[str, ...]:
        """Every node whose data the computation uses, in name order."""
        return tuple(sorted({o for name in self.datasets for o in self.owners(name)}))

    def as_dict(self) -> dict[str, Any]:
        return {"query": self.query, "datasets": sorted(self.datasets),
                "consortium": self.consortium, "protocol": self.protocol,
                "recipients": sorted(self.recipients), "analyst": self.analyst,
                "policy": self.policy, "tables": self.tables, "approvers": self.approvers,
                **({"nonce": self.nonce} if self.nonce else {}),
                **({"evaluation": self.evaluation} if self.evaluation else {})}

    def canonical_json(self) -> bytes:
        return canonical_json(self.as_dict())

    @property
    def computation_id(self) -> str:
        """Hex SHA-256 of the canonical JSON."""
        return hashlib.sha256(self.canonical_json()).hexdigest()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ComputationSpec:
        try:
            return cls(query=data.get("query", ""), datasets=tuple(data["datasets"]),
                       consortium=data["consortium"], protocol=data["protocol"],
                       recipients=tuple(data["recipients"]), analyst=data["analyst"],
                       policy=dict(data.get("policy", {})),
                       tables={str(k): dict(v) for k, v in data.get("tables", {}).items()},
                       approvers={str(k): v for k, v in data.get("approvers", {}).items()},
                       nonce=str(data.get("nonce", "")),
                       evaluation=dict(data.get("evaluation", {})))
        except (KeyError, TypeError, AttributeError) as error:
            raise ConfigurationError(f"malformed computation spec: {error}") from None
