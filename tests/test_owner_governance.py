"""Owners govern their own data, between real node processes.

Five nodes: hospital-a, hospital-b and insurer compute and own data;
clinic-d owns data but does not compute; ministry only receives. Each case of
the new user's report is turned into the attacker's failure or the user's
success, checked against DuckDB on the plaintext.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from concilium.cli import app
from concilium.governance.consortium import Manifest, add_party, save_manifest
from concilium.governance.identity import create_node
from concilium.node.client import NodeClient
from concilium.node.service import spawn, stop
from tests.helpers_tls import free_port
from tests.test_node_service import _wait_until_up

NODES = {"hospital-a": ("data_owner", "compute"), "hospital-b": ("data_owner", "compute"),
         "insurer": ("data_owner", "compute"), "clinic-d": ("data_owner",),
         "ministry": ("recipient",)}
ADMISSIONS = ('[columns.patient_id]\ntype = "key"\n'
              '[columns.age]\ntype = "int"\nlow = 0\nhigh = 120\n'
              '[columns.cost]\ntype = "fixed"\nlow = 0\nhigh = 1000000\n'
              '[columns.condition]\ntype = "category"\ndomain = ["asthma", "copd", "sepsis"]\n')
PATIENTS = ('[columns.patient_id]\ntype = "key"\nunique = true\n'
            '[columns.region]\ntype = "category"\ndomain = ["north", "south"]\n')
CLAIMS = '[columns.patient_id]\ntype = "key"\n[columns.amount]\ntype = "fixed"\nlow = 0\n' \
         'high = 10000\n'
runner = CliRunner()


@dataclass
class Consortium:
    root: Path
    dirs: dict[str, Path]
    tokens: dict[tuple[str, str], str]
    manifest: Path
    processes: dict[str, object]
    admissions: dict[str, pd.DataFrame]
    patients: pd.DataFrame
    claims: pd.DataFrame

    def cli(self, node: str, user: str, *arguments: str) -> object:
        return runner.invoke(app, [*arguments, "--node", str(self.dirs[node])],
                             env={"CONCILIUM_TOKEN": self.tokens[(node, user)]})

    def client(self, node: str, user: str) -> NodeClient:
        return NodeClient(self.dirs[node], self.tokens[(node, user)])

    def propose(self, sql: str, datasets: list[str], recipients: list[str],
                *extra: str) -> object:
        arguments = ["propose", sql]
        for name in datasets:
            arguments += ["--dataset", name]
        for name in recipients:
            arguments += ["--recipient", name]
        return self.cli("hospital-a", "analyst", *arguments, *extra)

    def approve_all(self, identifier: str, nodes: list[str]) -> None:
        for node in nodes:
            done = self.cli(node, "officer", "approve", identifier)
            assert done.exit_code == 0, done.output

    def wait(self, identifier: str, node: str = "hospital-a", timeout: float = 90) -> dict:
        client = self.client(node, "analyst" if node != "ministry" else "reader")
        deadline = time.monotonic() + timeout
        try:
            while True:
                state = client.request("GET", f"/computations/{identifier}")
                if state["status"] in ("completed", "failed", "refused"):
                    return state
                assert time.monotonic() < deadline, state
                time.sleep(0.2)
        finally:
            client.close()


def _frames() -> tuple[dict[str, pd.DataFrame], pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(12)
    admissions = {}
    for node, rows in (("hospital-a", 300), ("hospital-b", 250), ("clinic-d", 3000)):
        cost = np.round(rng.uniform(100, 5000, rows), 2)
        if node == "clinic-d":  # a costly specialist clinic: its sum passes 2^31
            cost = np.round(rng.uniform(900000, 1000000, rows), 2)
        condition = rng.choice(["asthma", "copd"], rows, p=[0.6, 0.4])
        if node == "hospital-a":
            condition[:3] = "sepsis"  # a small cell
        admissions[node] = pd.DataFrame({"patient_id": rng.integers(0, 10**6, rows),
                                         "age": rng.integers(0, 100, rows), "cost": cost,
                                         "condition": condition})
    ids = rng.permutation(10**5)[:400]
    patients = pd.DataFrame({"patient_id": ids, "region": rng.choice(["north", "south"], 400)})
    claims = pd.DataFrame({"patient_id": rng.choice(np.r_[ids, np.arange(10**6, 10**6 + 50)],
                                                    600),
                           "amount": np.round(rng.uniform(10, 900, 600), 2)})
    return admissions, patients, claims


@pytest.fixture(scope="module")
def consortium(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Consortium]:
    root = tmp_path_factory.mktemp("owners")
    manifest = Manifest("care", "rep3")
    dirs = {}
    for name, roles in NODES.items():
        identity = create_node(root / name, name, f"127.0.0.1:{free_port()}",
                               f"127.0.0.1:{free_port()}")
        manifest = add_party(manifest, identity, roles)
        dirs[name] = root / name
    save_manifest(manifest, root / "consortium.toml")
    tokens = {}
    for name, node_dir in dirs.items():
        for user, role in (("root", "admin"), ("analyst", "analyst"), ("officer", "approver"),
                           ("reader", "recipient")):
            made = runner.invoke(app, ["user", "add", str(node_dir), user, "--role", role])
            tokens[(name, user)] = made.stdout.strip()
    processes = {name: spawn(node_dir, root / "consortium.toml", quiet=False)
                 for name, node_dir in dirs.items()}
    admissions, patients, claims = _frames()
    try:
        for name, process in processes.items():
            _wait_until_up(dirs[name], process)
        state = Consortium(root, dirs, tokens, root / "consortium.toml", processes,
                           admissions, patients, claims)
        (root / "admissions.toml").write_text(ADMISSIONS)
        (root / "patients.toml").write_text(PATIENTS)
        (root / "claims.toml").write_text(CLAIMS)
        (root / "strict.toml").write_text('[policy]\nmin_cohort = 5\n[approval]\nrequired = 1\n')
        (root / "no-extremes.toml").write_text(
            '[policy]\nallowed_aggregates = ["count", "sum", "avg", "median"]\n')
        policies = {"hospital-a": "strict.toml", "hospital-b": "no-extremes.toml"}
        for node, frame in admissions.items():
            frame.to_csv(root / f"admissions-{node}.csv", index=False)
            extra = ["--policy", str(root / policies[node])] if node in policies else []
            added = state.cli(node, "root", "dataset", "add", "admissions",
                              str(root / f"admissions-{node}.csv"), "--schema",
                              str(root / "admissions.toml"), *extra)
            assert added.exit_code == 0, added.output
        patients.to_csv(root / "patients.csv", index=False)
        claims.to_csv(root / "claims.csv", index=False)
        for node, name in (("hospital-a", "patients"), ("insurer", "claims")):
            added = state.cli(node, "root", "dataset", "add", name, str(root / f"{name}.csv"),
                              "--schema", str(root / f"{name}.toml"))
            assert added.exit_code == 0, added.output
        yield state
    finally:
        stop(list(processes.values()))


def _duckdb(sql: str, tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    connection = duckdb.connect()
    for name, frame in tables.items():
        connection.register(name, frame)
    return connection.sql(sql).df()


def test_the_catalog_knows_which_node_holds_which_table(consortium: Consortium) -> None:
    listed = consortium.cli("insurer", "analyst", "dataset", "list")
    assert listed.exit_code == 0, listed.output
    client = consortium.client("clinic-d", "analyst")
    held = {(e["dataset"], e["node"]) for e in client.request("GET", "/catalog")}
    client.close()
    assert held == {("admissions", "hospital-a"), ("admissions", "hospital-b"),
                    ("admissions", "clinic-d"), ("patients", "hospital-a"),
                    ("claims", "insurer")}


@pytest.mark.parametrize(("sql", "message"), [
    ("SELECT patient_id, SUM(cost) AS s FROM admissions GROUP BY patient_id",
     "'patient_id' is a key"),
    ("SELECT SUM(cost) AS s FROM admissions WHERE patient_id = 4711", "never filtered on"),
    ("SELECT MAX(cost) AS m FROM admissions", "does not allow MAX(cost)"),
])
def test_what_the_owners_policies_forbid_is_refused_at_proposal(
        consortium: Consortium, sql: str, message: str) -> None:
    before = consortium.client("hospital-b", "analyst").request("GET", "/computations")
    refused = consortium.propose(sql, ["admissions"], ["hospital-a"])
    assert refused.exit_code == 2 and message in refused.output, refused.output
    after = consortium.client("hospital-b", "analyst").request("GET", "/computations")
    assert after == before  # nobody was asked to approve anything


def test_an_empty_or_looser_proposal_policy_cannot_weaken_an_owners(
        consortium: Consortium) -> None:
    loose = consortium.root / "loose.toml"
    loose.write_text("[policy]\nmin_cohort = 1\n")
    for extra in ([], ["--policy", str(loose)]):
        proposed = consortium.propose("SELECT condition, COUNT(*) AS n FROM admissions "
                                      "GROUP BY condition", ["admissions"], ["hospital-a"],
                                      *extra)
        assert proposed.exit_code == 0, proposed.output
        shown = consortium.client("hospital-b", "officer").request(
            "GET", f"/computations/{proposed.stdout.strip()}")
        assert shown["policy"]["min_cohort"] == 5  # hospital-a's own
        assert shown["policy"]["allowed_aggregates"] == ["avg", "count", "median", "sum"]
        # only the owners of admissions approve; the insurer's data is not used
        assert shown["approvers"] == {"clinic-d": 1, "hospital-a": 1, "hospital-b": 1}


def test_mistakes_are_refused_before_anyone_signs_with_the_runs_own_message(
        consortium: Consortium) -> None:
    typo = consortium.root / "typo.toml"
    typo.write_text("[policy]\nmin_cohrt = 5\n")
    refused = consortium.propose("SELECT COUNT(*) AS n FROM admissions", ["admissions"],
                                 ["hospital-a"], "--policy", str(typo))
    assert refused.exit_code == 2 and "unknown policy settings ['min_cohrt']" in refused.output
    refused = consortium.propose("SELECT COUNT(*) AS n FROM admissions", ["admissions"],
                                 ["hospital-z"])
    assert refused.exit_code == 2 and "'hospital-z' is not a party" in refused.output
    # an expression has no public bound, so its sums are shared in fixed point: clinic-d's
    # partial sum of costs in thousandths does not fit; clinic-d finds it on its own data
    # when the proposal reaches it, and refuses it for everyone
    sql = "SELECT SUM(cost * 1000) AS s FROM admissions"
    refused = consortium.propose(sql, ["admissions"], ["hospital-a"])
    assert refused.exit_code == 2, refused.output
    assert "clinic-d refused computation" in refused.output
    assert "FixedPointRangeError" in refused.output or "2^31" in refused.output
    listed = consortium.client("hospital-b", "analyst").request("GET", "/computations")
    refusals = [c for c in listed if c["query"] == sql]
    deadline = time.monotonic() + 10
    while refusals[0]["status"] != "refused":
        assert time.monotonic() < deadline
        time.sleep(0.2)
        refusals = [c for c in consortium.client("hospital-b", "analyst").request(
            "GET", "/computations") if c["query"] == sql]


def test_an_owner_only_node_contributes_and_a_recipient_only_node_receives(
        consortium: Consortium) -> None:
    sql = ("SELECT condition, COUNT(*) AS n, AVG(age) AS mean_age, MEDIAN(age) AS median_age "
           "FROM admissions GROUP BY condition ORDER BY condition")
    proposed = consortium.propose(sql, ["admissions"], ["ministry"])
    assert proposed.exit_code == 0, proposed.output
    identifier = proposed.stdout.strip()
    # the insurer holds no admissions: it is not an approver and may not approve
    not_asked = consortium.cli("insurer", "officer", "approve", identifier)
    assert not_asked.exit_code == 2 and "not an approver" in not_asked.output
    status = consortium.cli("hospital-a", "analyst", "status", identifier)
    assert "pending     clinic-d (1 of 1), hospital-a (1 of 1), hospital-b (1 of 1)" in (
        status.stdout)
    assert sql in status.stdout
    assert "effective policy  allowed_aggregates=['avg', 'count', 'median', 'sum'], " \
           "min_cohort=5" in status.stdout
    assert "Locally, at each owner of admissions" in status.stdout
    consortium.approve_all(identifier, ["hospital-a", "hospital-b", "clinic-d"])
    state = consortium.wait(identifier, "ministry")
    assert state["status"] == "completed", state
    union = pd.concat(consortium.admissions.values(), ignore_index=True)
    expected = _duckdb(sql, {"admissions": union})
    small = expected[expected["n"] < 5]["condition"].tolist()
    assert small == ["sepsis"]
    result = consortium.client("ministry", "reader").request(
        "GET", f"/computations/{identifier}/result")
    rules = {c["group"]["condition"]: c["rule"] for c in result["suppressed"]}
    assert rules["sepsis"] == "min_cohort: fewer than 5 rows"
    # and a second cell, so that sepsis cannot be recomputed from a total
    assert len(rules) == 2 and list(rules.values())[1 - list(rules).index("sepsis")
                                                   ].startswith("complementary")
    kept = expected[~expected["condition"].isin(rules)]
    assert [row[0] for row in result["rows"]] == kept["condition"].tolist()
    assert [row[1] for row in result["rows"]] == kept["n"].tolist()
    assert np.allclose([row[2] for row in result["rows"]], kept["mean_age"], atol=1e-3)
    assert np.allclose([row[3] for row in result["rows"]], kept["median_age"], atol=1e-3)
    # only the recipient holds the result; the analyst's own node has none
    elsewhere = consortium.cli("hospital-a", "analyst", "result", identifier)
    assert elsewhere.exit_code == 2
    csv = consortium.cli("ministry", "reader", "result", identifier, "--format", "csv")
    lines = csv.stdout.splitlines()
    assert lines[0] == "condition,n,mean_age,median_age,suppressed"
    assert "sepsis,,,,min_cohort: fewer than 5 rows" in lines[1:]
    table = consortium.cli("ministry", "reader", "result", identifier)
    assert "suppressed" in table.stdout and "sepsis" in table.stdout
    # clinic-d took part as an outside party and logged its commitment
    entries = consortium.client("clinic-d", "root").request("GET", "/audit/entries")
    kinds = [e["kind"] for e in entries if e["body"].get("computation_id") == identifier]
    assert "input_commitment" in kinds and kinds[-1] == "run_end"


def test_a_join_of_two_owners_tables_across_nodes_equals_duckdb(consortium: Consortium
                                                                 ) -> None:
    sql = ("SELECT COUNT(*) AS n, SUM(c.amount) AS total, AVG(c.amount) AS mean "
           "FROM patients p JOIN claims c ON p.patient_id = c.patient_id "
           "WHERE p.region = 'north'")
    proposed = consortium.propose(sql, ["patients", "claims"], ["hospital-a"])
    assert proposed.exit_code == 0, proposed.output
    identifier = proposed.stdout.strip()
    shown = consortium.client("hospital-a", "analyst").request(
        "GET", f"/computations/{identifier}")
    assert shown["approvers"] == {"hospital-a": 1, "insurer": 1}
    assert shown["spec"]["tables"]["claims"]["owners"] == ["insurer"]
    consortium.approve_all(identifier, ["hospital-a", "insurer"])
    followed = consortium.cli("hospital-a", "analyst", "status", identifier, "--wait")
    assert followed.exit_code == 0 and "completed" in followed.stdout, followed.output
    result = consortium.client("hospital-a", "analyst").request(
        "GET", f"/computations/{identifier}/result")
    expected = _duckdb(sql, {"patients": consortium.patients, "claims": consortium.claims})
    row = result["rows"][0]
    assert row[0] == int(expected["n"][0])
    assert np.allclose(row[1:], [expected["total"][0], expected["mean"][0]], atol=1e-2)


def test_an_owner_that_tightens_its_policy_refuses_an_earlier_proposal(
        consortium: Consortium) -> None:
    sql = "SELECT condition, AVG(age) AS a FROM admissions GROUP BY condition"
    proposed = consortium.propose(sql, ["admissions"], ["hospital-a"])
    identifier = proposed.stdout.strip()
    stricter = consortium.root / "stricter.toml"
    stricter.write_text("[policy]\nmin_cohort = 50\n")
    changed = consortium.cli("clinic-d", "root", "dataset", "policy", "admissions",
                             "--policy", str(stricter))
    assert changed.exit_code == 0, changed.output
    refused = consortium.cli("clinic-d", "officer", "approve", identifier)
    assert refused.exit_code == 2 and "weaker than 'clinic-d'" in refused.output
    state = consortium.wait(identifier)
    assert state["status"] == "refused" and "clinic-d" in state["error"]
    followed = consortium.cli("hospital-a", "analyst", "status", identifier, "--wait")
    assert followed.exit_code == 1 and "min_cohort is 5 where the dataset's policy " \
        "requires 50" in followed.stdout
    entries = consortium.client("clinic-d", "root").request("GET", "/audit/entries")
    assert any(e["kind"] == "dataset_rules_changed" and e["body"]["after"]["policy"][
        "min_cohort"] == 50 for e in entries)
    # a new proposal now carries the stricter policy
    again = consortium.propose(sql, ["admissions"], ["hospital-a"])
    assert again.exit_code == 0 and "min_cohort=50" in again.output
    restored = consortium.root / "plain.toml"
    restored.write_text("[policy]\n")
    consortium.cli("clinic-d", "root", "dataset", "policy", "admissions", "--policy",
                   str(restored))


def test_data_files_that_break_their_schema_are_named(consortium: Consortium) -> None:
    root = consortium.root
    (root / "extra.csv").write_text("patient_id,region,ssn\n1,north,123-45-6789\n")
    extra = consortium.cli("hospital-a", "root", "dataset", "add", "extra",
                           str(root / "extra.csv"), "--schema", str(root / "patients.toml"))
    assert extra.exit_code == 2 and "'ssn' that the schema does not list" in extra.output
    assert "123-45" not in extra.output
    (root / "ragged.csv").write_text("patient_id,region\n1,north\n2,south,x\n")
    ragged = consortium.cli("hospital-a", "root", "dataset", "add", "ragged",
                            str(root / "ragged.csv"), "--schema", str(root / "patients.toml"))
    assert ragged.exit_code == 2 and "data row 2 (line 3 of the file) has 3 fields" in (
        ragged.output)
    helped = runner.invoke(app, ["dataset", "add", "--help"])
    assert "[columns.age]" in helped.stdout and 'usage = "ignore"' in helped.stdout


def test_a_cut_audit_log_fails_against_its_peers_checkpoints(consortium: Consortium) -> None:
    """Runs last: stops hospital-b, cuts its log, and starts it again."""
    name = "hospital-b"
    node_dir = consortium.dirs[name]
    log = node_dir / "audit.sqlite"
    client = consortium.client(name, "root")
    peer = consortium.client("hospital-a", "root")
    deadline = time.monotonic() + 20  # the peers co-sign and keep its whole log
    while max((w["size"] for w in peer.request("GET", f"/audit/witnessed?node={name}")),
              default=0) < len(client.request("GET", "/audit/entries")):
        assert time.monotonic() < deadline
        time.sleep(0.5)
    assert client.request("GET", "/audit/verify")["verified"] is True
    client.close()
    peer.close()
    process = consortium.processes[name]
    stop([process])
    with sqlite3.connect(log) as connection:
        size = connection.execute("SELECT COUNT(*) FROM entries").fetchone()[0]
        connection.executescript(f"DELETE FROM entries WHERE position >= {size - 3}; "
                                 "DELETE FROM checkpoints;")
    alone = runner.invoke(app, ["audit", "verify", str(log), "--manifest",
                                str(consortium.manifest)])
    assert alone.exit_code == 0  # on its own, a cut log is consistent
    peer_log = consortium.dirs["hospital-a"] / "audit.sqlite"
    caught = runner.invoke(app, ["audit", "verify", str(log), "--manifest",
                                 str(consortium.manifest), "--against", str(peer_log)])
    assert caught.exit_code == 2 and "its tail was cut" in caught.output, caught.output
    # restarted, the node checks its own log against what its peers keep
    consortium.processes[name] = spawn(node_dir, consortium.manifest, quiet=False)
    _wait_until_up(node_dir, consortium.processes[name])
    health = NodeClient(node_dir, None)
    deadline = time.monotonic() + 30
    while "audit" not in (answer := health.request("GET", "/health")):
        assert time.monotonic() < deadline
        time.sleep(0.3)
    health.close()
    assert answer["audit"]["verified"] is False and "tail was cut" in answer["audit"]["problem"]
