"""Specs built from the catalog, and each node's check of a spec against its own
rules: an analyst, or the node that built the spec, cannot weaken an owner's rules."""

from __future__ import annotations

import dataclasses

import pytest

from concilium.errors import ApprovalMissing, ConfigurationError, PolicyViolation
from concilium.governance.consortium import Manifest
from concilium.governance.policy import OutputPolicy
from concilium.governance.proposal import (
    DatasetEntry,
    DatasetRules,
    build_spec,
    check_spec,
    load_rules,
)

SCHEMA = {"age": {"type": "int", "low": 0, "high": 120}}
FLAGS = {"customer": {"type": "key", "unique": True}, "risk": {"type": "fixed"}}
SQL = "SELECT COUNT(*) FROM admissions"


def _catalog() -> list[DatasetEntry]:
    return [DatasetEntry("admissions", "hospital-a", SCHEMA,
                         DatasetRules(OutputPolicy(min_cohort=10), approvals=2)),
            DatasetEntry("admissions", "hospital-b", SCHEMA,
                         DatasetRules(OutputPolicy(min_cohort=5, allowed_aggregates=frozenset(
                             {"count", "avg"})))),
            DatasetEntry("flags", "hospital-c", FLAGS)]


def test_a_spec_carries_the_strictest_policy_the_owners_and_their_approvers(
        signing_consortium: tuple) -> None:
    manifest, _, _ = signing_consortium
    spec = build_spec(SQL, ["admissions"], ["hospital-a"], "dr-lee", manifest, _catalog(),
                      OutputPolicy(rounding=5))
    policy = OutputPolicy.from_mapping(spec.policy)
    assert policy == OutputPolicy(min_cohort=10, rounding=5,
                                  allowed_aggregates=frozenset({"count", "avg"}))
    assert spec.tables == {"admissions": {"owners": ["hospital-a", "hospital-b"],
                                          "schema": SCHEMA}}
    # hospital-c's data is not used: its approval is not asked
    assert spec.approvers == {"hospital-a": 2, "hospital-b": 1}
    # an analyst's empty policy cannot weaken the owners'
    empty = build_spec(SQL, ["admissions"], ["hospital-a"], "dr-lee", manifest, _catalog())
    assert OutputPolicy.from_mapping(empty.policy).min_cohort == 10
    all_owners = dataclasses.replace(manifest, approval="all_owners")
    spec = build_spec(SQL, ["admissions"], ["hospital-a"], "dr-lee", all_owners, _catalog())
    assert spec.approvers == {"hospital-a": 2, "hospital-b": 1, "hospital-c": 1}


@pytest.mark.parametrize(("datasets", "recipients", "catalog", "message"), [
    (["nope"], ["hospital-a"], _catalog(), "no node of the consortium holds a dataset 'nope'"),
    (["admissions"], ["ministry"], _catalog(), "'ministry' is not a party"),
    (["admissions"], ["hospital-a"],
     [*_catalog(), DatasetEntry("admissions", "hospital-c", {"age": {"type": "int"}})],
     "registered different schemas"),
])
def test_a_spec_that_cannot_work_is_refused_when_it_is_built(
        signing_consortium: tuple, datasets: list, recipients: list, catalog: list,
        message: str) -> None:
    manifest, _, _ = signing_consortium
    with pytest.raises(ConfigurationError, match=message):
        build_spec(SQL, datasets, recipients, "dr-lee", manifest, catalog)


def test_each_owner_refuses_a_spec_weaker_than_its_own_rules(signing_consortium: tuple
                                                             ) -> None:
    manifest, _, _ = signing_consortium
    catalog = _catalog()
    spec = build_spec(SQL, ["admissions"], ["hospital-a"], "dr-lee", manifest, catalog)
    for node in ("hospital-a", "hospital-b", "hospital-c"):
        check_spec(spec, manifest, node, catalog)  # as built: every node accepts it
    weaker = dataclasses.replace(spec, policy=OutputPolicy(min_cohort=3).as_dict())
    with pytest.raises(PolicyViolation, match=r"weaker than 'hospital-a'.*min_cohort is 3 "
                                              r"where the dataset's policy requires 10"):
        check_spec(weaker, manifest, "hospital-a", catalog)
    # hospital-c holds no admissions: the policy is not its to check
    check_spec(weaker, manifest, "hospital-c", catalog)
    fewer = dataclasses.replace(spec, approvers={"hospital-a": 1, "hospital-b": 1})
    with pytest.raises(ApprovalMissing, match="'hospital-a' requires 2 approval"):
        check_spec(fewer, manifest, "hospital-a", catalog)
    skipped = dataclasses.replace(spec, approvers={"hospital-a": 2})
    with pytest.raises(ApprovalMissing, match="requires 'hospital-b' to approve"):
        check_spec(skipped, manifest, "hospital-c", catalog)


def test_a_node_refuses_a_spec_that_misstates_its_data(signing_consortium: tuple) -> None:
    manifest, _, _ = signing_consortium
    catalog = _catalog()
    spec = build_spec(SQL, ["admissions"], ["hospital-a"], "dr-lee", manifest, catalog)
    claimed = dataclasses.replace(spec, tables={"admissions": {
        "owners": ["hospital-a", "hospital-b", "hospital-c"], "schema": SCHEMA}},
        approvers={**spec.approvers, "hospital-c": 1})
    with pytest.raises(ConfigurationError, match="lists 'hospital-c' as an owner of "
                                                 "'admissions', which this node does not hold"):
        check_spec(claimed, manifest, "hospital-c", catalog)
    loose = dataclasses.replace(spec, tables={"admissions": {
        "owners": ["hospital-a", "hospital-b"], "schema": {"age": {"type": "int"}}}})
    with pytest.raises(ConfigurationError, match="not the one 'hospital-a' registered"):
        check_spec(loose, manifest, "hospital-a", catalog)
    other = dataclasses.replace(spec, protocol="rep4")
    with pytest.raises(ConfigurationError, match="consortium runs 'rep3'"):
        check_spec(other, manifest, "hospital-b", catalog)


def test_dataset_rules_load_from_toml(tmp_path: object) -> None:
    from pathlib import Path

    path = Path(str(tmp_path)) / "policy.toml"
    path.write_text('[policy]\nmin_cohort = 10\nallowed_aggregates = ["count"]\n'
                    "[approval]\nrequired = 2\n")
    rules = load_rules(path)
    assert rules.policy.min_cohort == 10 and rules.approvals == 2
    assert DatasetRules.from_mapping(rules.as_dict()) == rules
    path.write_text("[policy]\nmin_cohrt = 10\n")
    with pytest.raises(ConfigurationError, match="unknown policy settings"):
        load_rules(path)
    path.write_text("[approval]\nrequired = 0\n")
    with pytest.raises(ConfigurationError, match="required must be a whole number >= 1"):
        load_rules(path)
    path.write_text("[polcy]\nmin_cohort = 1\n")
    with pytest.raises(ConfigurationError, match="unknown sections"):
        load_rules(path)


def test_manifests_name_their_approval_rule() -> None:
    assert Manifest("x", "rep3").approval == "dataset_owners"
    with pytest.raises(ConfigurationError, match="unknown approval rule"):
        Manifest("x", "rep3", approval="anyone")
