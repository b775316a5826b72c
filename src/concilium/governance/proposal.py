"""Proposals: a computation spec built from the consortium's catalog, and the
check every node runs on a spec before it approves, plans or contributes.

Each owner node publishes, for each of its datasets, a :class:`DatasetEntry`:
the dataset's name, the node, its public schema, its output policy and how
many of the node's approvers must approve a use of it. A proposal is turned
into a spec (:func:`build_spec`) that names, per dataset, the nodes that hold
it and the schema they share; the *effective* output policy (the strictest
combination of the proposal's policy and every used dataset's); and the
approvers (per node, the number of distinct approvals), following the
consortium's approval rule.

Nobody has to trust the node that built the spec: every node runs
:func:`check_spec` against its own authoritative registrations and the
manifest, and refuses (before approving, planning or sharing anything) a spec
that lists it as the owner of data it does not hold, misstates its schema,
carries a policy weaker than its own, or asks fewer approvals than its own
rules or the consortium's approval rule require.

A dataset's rules, in the TOML file given to ``concilium dataset add
--policy``::

    [policy]
    min_cohort = 10
    allowed_aggregates = ["count", "avg"]
    metrics_only = true

    [approval]
    required = 2        # distinct approvers at this node must approve each use

    [budget]            # optional: a privacy budget (see concilium.governance.budget);
    rho = 1.0           # it needs dp = { rho = ... } in [policy]
"""

from __future__ import annotations

import secrets
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from concilium.errors import ApprovalMissing, ConfigurationError, PolicyViolation
from concilium.governance.budget import PrivacyBudget
from concilium.governance.consortium import Manifest
from concilium.governance.policy import OutputPolicy
from concilium.governance.spec import ComputationSpec, canonical_json

__all__ = ["DatasetEntry", "DatasetRules", "build_spec", "check_spec", "load_rules",
           "required_approvers"]


@dataclass(frozen=True)
class DatasetRules:
    """An owner's rules for one dataset: its output policy and approvals per use."""

    policy: OutputPolicy = field(default_factory=OutputPolicy)
    approvals: int = 1
    budget: PrivacyBudget | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.approvals, int) or self.approvals < 1:
            raise ConfigurationError("[approval] required must be a whole number >= 1")
        if self.budget is not None and self.policy.dp_rho is None:
            raise ConfigurationError("a dataset with a [budget] needs noise on every query: "
                                     "set dp = { rho = ... } in its [policy] (each query's "
                                     "largest cost)")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> DatasetRules:
        unknown = set(data) - {"policy", "approval", "budget"}
        if unknown:
            raise ConfigurationError(f"unknown sections {sorted(unknown)} in a dataset's "
                                     "rules; it takes [policy], [approval] and [budget]")
        approval = data.get("approval", {})
        if not isinstance(approval, Mapping) or set(approval) - {"required"}:
            raise ConfigurationError("[approval] takes one setting: required = N")
        budget = data.get("budget")
        if budget is not None and not isinstance(budget, Mapping):
            raise ConfigurationError("[budget] is a table: rho = ..., unit = ...")
        return cls(OutputPolicy.from_mapping(data.get("policy", {})),
                   approval.get("required", 1),
                   None if budget is None else PrivacyBudget.from_mapping(budget))

    def as_dict(self) -> dict[str, Any]:
        answer: dict[str, Any] = {"policy": self.policy.as_dict(),
                                  "approval": {"required": self.approvals}}
        if self.budget is not None:
            answer["budget"] = self.budget.as_dict()
        return answer


def load_rules(path: str | Path) -> DatasetRules:
    """A dataset's rules from TOML (``[policy]`` and ``[approval]``)."""
    try:
        return DatasetRules.from_mapping(tomllib.loads(Path(path).read_text()))
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise ConfigurationError(f"cannot read the policy {path}: {error}") from None


@dataclass(frozen=True)
class DatasetEntry:
    """What an owner node publishes about one of its datasets (public)."""

    dataset: str
    node: str
    schema: dict[str, Any]
    rules: DatasetRules = field(default_factory=DatasetRules)

    def as_dict(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "node": self.node, "schema": self.schema,
                "rules": self.rules.as_dict()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DatasetEntry:
        try:
            return cls(str(data["dataset"]), str(data["node"]), dict(data["schema"]),
                       DatasetRules.from_mapping(data.get("rules", {})))
        except (KeyError, TypeError, ValueError) as error:
            raise ConfigurationError(f"malformed catalog entry: {error}") from None


def _schema_text(schema: Mapping[str, Any]) -> bytes:
    return canonical_json(dict(schema))


def required_approvers(tables: Mapping[str, Mapping[str, Any]], manifest: Manifest
                       ) -> dict[str, int]:
    """Whose approval the consortium's rule demands at least (one approver each)."""
    owners = {str(o) for table in tables.values() for o in table["owners"]}
    if manifest.approval == "all_owners":
        owners |= set(manifest.data_owners)
    return {owner: 1 for owner in sorted(owners)}


def build_spec(query: str, datasets: Sequence[str], recipients: Sequence[str], analyst: str,
               manifest: Manifest, catalog: Sequence[DatasetEntry],
               proposal_policy: OutputPolicy | None = None, *,
               evaluation: Mapping[str, Any] | None = None,
               also_approving: Sequence[str] = ()) -> ComputationSpec:
    """The spec of a proposal: owners and schemas from the catalog, the effective
    policy, the approvers. ``evaluation``: a model evaluation instead of the query
    (``query`` empty); ``also_approving``: nodes whose approval it needs beyond the
    owners' (a model's vendor). Raises a typed error naming the first problem."""
    order = {p.name: k for k, p in enumerate(manifest.parties)}
    for recipient in recipients:
        manifest.index(recipient)  # names the parties if unknown
    tables: dict[str, dict[str, Any]] = {}
    policy = proposal_policy or OutputPolicy()
    approvers: dict[str, int] = {}
    for name in dict.fromkeys(datasets):
        entries = sorted((e for e in catalog if e.dataset == name and e.node in order),
                         key=lambda e: order[e.node])
        if not entries:
            known = sorted({e.dataset for e in catalog})
            raise ConfigurationError(f"no node of the consortium holds a dataset {name!r} "
                                     f"(known: {', '.join(known) or 'none'}); its owner "
                                     "registers it with concilium dataset add")
        schemas = {_schema_text(e.schema) for e in entries}
        if len(schemas) > 1:
            raise ConfigurationError(f"the owners of {name!r} "
                                     f"({', '.join(e.node for e in entries)}) registered "
                                     "different schemas; they must agree before it can be "
                                     "used as one table")
        tables[name] = {"owners": [e.node for e in entries], "schema": entries[0].schema}
        for entry in entries:
            policy = policy.combine(entry.rules.policy)
            approvers[entry.node] = max(approvers.get(entry.node, 0), entry.rules.approvals)
    for node, count in required_approvers(tables, manifest).items():
        approvers[node] = max(approvers.get(node, 0), count)
    for node in also_approving:
        manifest.index(node)
        approvers[node] = max(approvers.get(node, 0), 1)
    return ComputationSpec(query=query, datasets=tuple(dict.fromkeys(datasets)),
                           consortium=manifest.hash, protocol=manifest.protocol,
                           recipients=tuple(dict.fromkeys(recipients)), analyst=analyst,
                           policy=policy.as_dict(), tables=tables, approvers=approvers,
                           nonce=secrets.token_hex(16), evaluation=dict(evaluation or {}))


def check_spec(spec: ComputationSpec, manifest: Manifest, me: str,
               own: Sequence[DatasetEntry]) -> None:
    """Refuse a spec that this node must not take part in: another consortium or
    protocol, unknown recipients or owners, an approval rule not met, or (for this
    node's own datasets) a wrong owner list or schema, a weaker policy or fewer
    approvals than its rules require."""
    if spec.consortium != manifest.hash:
        raise ConfigurationError("the computation is for another consortium (manifest hash "
                                 "differs)")
    if spec.protocol != manifest.protocol:
        raise ConfigurationError(f"the computation names protocol {spec.protocol!r}; the "
                                 f"consortium runs {manifest.protocol!r}")
    if not spec.tables:
        raise ConfigurationError("the computation does not say which nodes hold its "
                                 "datasets")
    for recipient in spec.recipients:
        manifest.index(recipient)
    for name in spec.datasets:
        for owner in spec.owners(name):
            if owner not in manifest.data_owners:
                raise ConfigurationError(f"the computation lists {owner!r} as an owner of "
                                         f"{name!r}, but it is not a data owner of the "
                                         "consortium")
    for node, count in required_approvers(spec.tables, manifest).items():
        if spec.approvers.get(node, 0) < count:
            raise ApprovalMissing(f"the consortium's approval rule ({manifest.approval}) "
                                  f"requires {node!r} to approve; the computation does not "
                                  "ask it")
    for node in spec.approvers:
        manifest.index(node)
    mine = {e.dataset: e for e in own if e.node == me}
    policy = OutputPolicy.from_mapping(spec.policy)
    for name in spec.datasets:
        listed = me in spec.owners(name)
        if listed and name not in mine:
            raise ConfigurationError(f"the computation lists {me!r} as an owner of {name!r}, "
                                     "which this node does not hold")
        if not listed:
            continue
        entry = mine[name]
        if _schema_text(spec.tables[name]["schema"]) != _schema_text(entry.schema):
            raise ConfigurationError(f"the computation's schema of {name!r} is not the one "
                                     f"{me!r} registered")
        weaker = policy.shortfalls(entry.rules.policy)
        if weaker:
            raise PolicyViolation(f"the computation's output policy is weaker than "
                                  f"{me!r}'s policy for {name!r}: {'; '.join(weaker)}")
        if spec.approvers.get(me, 0) < entry.rules.approvals:
            raise ApprovalMissing(f"{me!r} requires {entry.rules.approvals} approval(s) for "
                                  f"each use of {name!r}; the computation asks "
                                  f"{spec.approvers.get(me, 0)}")
