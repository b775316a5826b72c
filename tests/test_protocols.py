"""The protocol registry: backends only through it, protocols enforced and stated,
capabilities checked at planning."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from concilium import simulate
from concilium.data.schema import Schema
from concilium.errors import ConfigurationError, UnsupportedQuery
from concilium.governance.audit import AuditLog
from concilium.governance.consortium import Manifest
from concilium.governance.policy import OutputPolicy
from concilium.governance.proposal import DatasetEntry, DatasetRules, build_spec
from concilium.mpc.backend import CAPABILITIES, Backend
from concilium.mpc.protocols import PROTOCOLS, deployable, implemented, protocol
from concilium.node.runner import run_computation
from concilium.query import TableEntry, plan_query
from concilium.query.capabilities import check_capabilities, required_capabilities
from concilium.testing import run_parties
from tests.test_queries import OWNERS, SCHEMA


def test_the_registry_says_what_each_protocol_runs_on_and_tolerates() -> None:
    assert implemented() == ["rep3", "rep4", "additive", "reference"]
    assert deployable() == ["rep3", "rep4", "additive"]
    rep3 = protocol("rep3").threat_model(3)
    assert rep3.as_dict() == {
        "protocol": "rep3", "compute_parties": 3, "corruptions": 1,
        "security": "semi-honest, honest majority",
        "broken_by": "any 2 of the 3 compute parties pool what they see",
        "summary": "rep3: semi-honest, honest majority; 3 compute parties, tolerates 1 "
                   "corrupted; broken if any 2 of the 3 compute parties pool what they see"}
    assert protocol("additive").threat_model(2).as_dict()["summary"] == (
        "additive: semi-honest, dishonest majority; 2 compute parties, tolerates 1 "
        "corrupted; broken if all 2 compute parties pool what they see")
    assert protocol("additive").threat_model(5).corruptions == 4
    assert protocol("rep4").threat_model(4).describe() == (
        "rep4: malicious with abort, one of four; 4 compute parties, tolerates 1 corrupted; "
        "broken if any 2 of the 4 compute parties collude")
    assert protocol("reference").threat_model(3).corruptions == 0
    for spec in PROTOCOLS.values():
        assert spec.capabilities <= set(CAPABILITIES)
    with pytest.raises(ConfigurationError, match="unknown protocol 'rep5'; known: rep3, rep4"):
        protocol("rep5")


@pytest.mark.parametrize(("name", "message"), [
    ("reference", "plaintext test backend with no security; a consortium cannot run it"),
    ("spdz", "unknown protocol 'spdz'"),
])
def test_a_manifest_refuses_a_protocol_it_cannot_deploy(name: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        Manifest("hospitals", name)


def test_backends_come_from_the_registry_with_the_right_party_count() -> None:
    def program(session: object) -> str:
        return session.backend.protocol  # type: ignore[attr-defined]

    assert run_parties(program, protocol="reference") == ["reference"]
    assert run_parties(4, program, protocol="reference") == ["reference"] * 4
    with pytest.raises(ConfigurationError, match="protocol rep3 runs on 3 compute parties, "
                                                 "not 4"):
        run_parties(4, program)
    assert run_parties(program, protocol="rep4") == ["rep4"] * 4
    with pytest.raises(ConfigurationError, match="protocol rep4 runs on 4 compute parties, "
                                                 "not 3"):
        run_parties(3, program, protocol="rep4")


def test_the_threat_model_comes_with_every_simulated_result() -> None:
    got = simulate("SELECT COUNT(*) AS n FROM admissions", {"admissions": OWNERS},
                   {"admissions": SCHEMA})
    assert got.attrs["threat_model"] == protocol("rep3").threat_model(3).as_dict()
    plain = simulate("SELECT COUNT(*) AS n FROM admissions", {"admissions": OWNERS},
                     {"admissions": SCHEMA}, protocol="reference")
    assert plain["n"].tolist() == got["n"].tolist()
    assert plain.attrs["threat_model"]["security"].startswith("NONE")


def test_a_run_refuses_a_session_of_another_protocol_than_the_spec(
        tmp_path: Path, signing_consortium: tuple) -> None:
    """An approved rep3 computation run on a session of another backend: refused and
    logged before anything is shared."""
    from concilium.data.dataset import Dataset
    from concilium.governance.approval import sign_approval

    manifest, keys, _ = signing_consortium
    names = ("hospital-a", "hospital-b", "hospital-c")
    schema = Schema.from_mapping(SCHEMA)
    catalog = [DatasetEntry("admissions", n, schema.as_mapping(), DatasetRules()) for n in names]
    spec = build_spec("SELECT COUNT(*) AS n FROM admissions", ["admissions"], ["hospital-a"],
                      "dr-lee", manifest, catalog)
    approvals = [sign_approval(spec, "approve", "officer", n, keys[n]) for n in names]

    def program(session: object) -> object:
        name = names[session.party]  # type: ignore[attr-defined]
        log = AuditLog(tmp_path / f"{name}.sqlite", name, keys[name])
        try:
            return run_computation(session, spec, approvals, manifest,  # type: ignore[arg-type]
                                   {"admissions": Dataset.from_frame("admissions", OWNERS[0],
                                                                     schema)}, log, me=name,
                                   own=catalog)
        finally:
            log.close()

    with pytest.raises(ConfigurationError, match="this session runs protocol reference, but "
                                                 "the approved computation names rep3"):
        run_parties(program, protocol="reference")
    log = AuditLog(tmp_path / "hospital-a.sqlite", "hospital-a", keys["hospital-a"])
    assert [e.kind for e in log.entries()][-1] == "refusal"
    log.close()


def test_a_query_needing_a_capability_the_protocol_lacks_is_refused_at_planning() -> None:
    tables = {"admissions": TableEntry(Schema.from_mapping(SCHEMA), (0, 1, 2))}
    no_shuffle = dataclasses.replace(protocol("reference"), name="no-shuffle",
                                     capabilities=protocol("reference").capabilities - {
                                         "shuffle"})
    median = plan_query("SELECT MEDIAN(stay) FROM admissions", tables)
    assert "shuffle" in required_capabilities(median)
    with pytest.raises(UnsupportedQuery, match="protocol no-shuffle cannot run this query: it "
                                               "does not support shuffle") as caught:
        check_capabilities(median, no_shuffle)
    assert caught.value.construct == "shuffle"
    check_capabilities(plan_query("SELECT AVG(stay) FROM admissions", tables), no_shuffle)
    counting = plan_query("SELECT COUNT(*) FROM admissions", tables)
    assert required_capabilities(counting) == {"truncation:reliable":
                                               "the session's reliable truncation"}
    insiders = dataclasses.replace(protocol("reference"), name="insiders",
                                   capabilities=protocol("reference").capabilities - {
                                       "outside_parties"})
    with pytest.raises(UnsupportedQuery, match="does not support outside_parties"):
        check_capabilities(counting, insiders, outside=True)


def test_every_backend_provides_the_whole_interface() -> None:
    abstract = {name for name, value in vars(Backend).items()
                if getattr(value, "__isabstractmethod__", False)}
    assert {"input", "reveal", "mul", "matmul", "and_", "trunc", "send_public",
            "new_permutation", "permute"} <= abstract
    for name in implemented():
        spec = protocol(name)
        assert spec.backend is not None and spec.outside is not None


@pytest.mark.parametrize("name", ["rep3", "additive", "reference"])
def test_outside_owners_and_recipients_through_the_registry(name: str) -> None:
    frames = [*OWNERS, OWNERS[0].head(50)]
    got = simulate("SELECT condition, COUNT(*) AS n FROM admissions GROUP BY condition "
                   "ORDER BY condition", {"admissions": frames}, {"admissions": SCHEMA},
                   protocol=name)
    union = pd.concat(frames)
    assert got["n"].tolist() == union.groupby("condition").size().tolist()
    assert np.all(got["n"] > 0)


def test_additive_runs_two_or_more_parties_and_plans_that_need_a_shuffle() -> None:
    assert protocol("additive").parties_problem(1) == (
        "protocol additive runs on at least 2 compute parties, not 1")
    assert protocol("additive").parties_problem(5) is None
    assert "shuffle" in protocol("additive").capabilities
    tables = {"admissions": TableEntry(Schema.from_mapping(SCHEMA), (0, 1, 2))}
    plan = plan_query("SELECT MEDIAN(age) FROM admissions", tables)
    check_capabilities(plan, protocol("additive"), outside=True)  # accepted


def test_a_policy_needs_comparisons_even_for_a_plain_count() -> None:
    tables = {"admissions": TableEntry(Schema.from_mapping(SCHEMA), (0, 1, 2))}
    plan = plan_query("SELECT COUNT(*) FROM admissions", tables)
    assert "boolean" in required_capabilities(plan, policy=OutputPolicy(min_cohort=5))
