"""Differential privacy at real nodes (three node processes over TLS): noisy results
with their intervals, one budget per dataset shared by every analyst, the
differencing check refusing a one-patient difference (and refunding), the budget
refusing the query that would exceed it, and the ledger surviving a restart, every
charge in the audit log."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

from concilium.errors import BudgetExhausted
from concilium.governance.audit_events import event_from_entry
from concilium.governance.users import UserStore
from concilium.node.client import NodeClient
from concilium.node.cluster import LocalCluster

NAMES = ("hospital-a", "hospital-b", "hospital-c")
SCHEMA = {"columns": {"patient_id": {"type": "key", "unique": True},
                      "ward": {"type": "category", "domain": ["a", "b", "c"]},
                      "age": {"type": "int", "low": 0, "high": 100}}}
RULES = {"policy": {"dp": {"rho": 0.1}, "min_difference": 5},
         "budget": {"rho": 0.45, "unit": "patient_id", "queries_per_day": 50}}
GROUPED = "SELECT ward, COUNT(*) AS n, AVG(age) AS mean_age FROM admissions GROUP BY ward"


def _frames() -> dict[str, pd.DataFrame]:
    data = np.random.default_rng(5)  # test data, not a secret
    frames = {}
    for k, name in enumerate(NAMES):
        ages = data.integers(0, 101, 400)
        ages[ages == 37] = 36  # no 37-year-old anywhere ...
        wards = data.choice(["a", "b"], 400)
        frames[name] = pd.DataFrame({"patient_id": np.arange(400) + 1000 * k,
                                     "ward": wards, "age": ages})
    frames["hospital-b"].loc[0, ["ward", "age"]] = ["c", 37]  # ... but one, in ward c
    return frames


def _final(cluster: LocalCluster, identifier: str, timeout: float = 120) -> dict[str, dict]:
    deadline = time.monotonic() + timeout
    while True:
        shown = {n: cluster.status(n, identifier) or {} for n in NAMES}
        if all(s.get("status") in ("completed", "failed") for s in shown.values()):
            return shown
        assert time.monotonic() < deadline, shown
        time.sleep(0.1)


def _spent(cluster: LocalCluster, name: str) -> float:
    return float(cluster.client(name).request("GET", "/datasets/admissions/budget")[
        "spent_rho"])


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> LocalCluster:
    root = tmp_path_factory.mktemp("dp-nodes")
    running = LocalCluster(root, NAMES, options=["--peer-timeout", "5"])
    running.register("admissions", _frames(), SCHEMA, RULES)
    yield running
    running.close()


def test_a_noisy_grouped_result_comes_with_its_intervals(cluster: LocalCluster) -> None:
    identifier = cluster.propose(GROUPED)
    shown = cluster.status("hospital-b", identifier)
    assert shown is not None
    assert shown["budget"]["admissions"]["cost_rho"] == pytest.approx(0.1)
    assert shown["budget"]["admissions"]["left_after_rho"] == pytest.approx(0.35)
    assert "Skellam noise made on shares, rho=0.1" in shown["plan"]
    cluster.approve(identifier)
    assert {s["status"] for s in _final(cluster, identifier).values()} == {"completed"}
    result = cluster.result(identifier)
    union = pd.concat(_frames().values(), ignore_index=True)
    truth = union.groupby("ward").agg(n=("age", "size"), mean_age=("age", "mean"))
    privacy = result["privacy"]
    assert privacy["mechanism"] == "skellam" and privacy["rho"] == pytest.approx(0.1)
    assert privacy["honest_parties"] == 2 and privacy["parties"] == 3
    rows = {row[0]: row for row in result["rows"]}
    assert sorted(rows) == ["a", "b", "c"]  # every public group, noised
    for k, (ward, row) in enumerate(sorted(rows.items())):
        widths = (privacy["columns"]["n"]["interval95"][k],
                  privacy["columns"]["mean_age"]["interval95"][k])
        if ward != "c":  # ward c holds one patient: its average is noise
            assert abs(row[1] - truth.loc[ward, "n"]) <= 3 * widths[0]
            assert abs(row[2] - truth.loc[ward, "mean_age"]) <= 3 * widths[1]
    for name in NAMES:
        assert _spent(cluster, name) == pytest.approx(0.1)


def test_two_analysts_share_one_budget(cluster: LocalCluster) -> None:
    users = UserStore(cluster.dirs["hospital-a"] / "users.sqlite")
    try:
        token = users.add_user("analyst-2", "analyst")
    finally:
        users.close()
    second = NodeClient(cluster.dirs["hospital-a"], token)
    identifier = str(second.request("POST", "/computations", json={
        "query": "SELECT COUNT(*) AS n FROM admissions WHERE age >= 50",
        "datasets": ["admissions"], "recipients": ["hospital-a"]})["id"])
    cluster.approve(identifier)
    assert {s["status"] for s in _final(cluster, identifier).values()} == {"completed"}
    for name in NAMES:
        charges = cluster.client(name).request("GET", "/datasets/admissions/budget")["charges"]
        assert {c["analyst"] for c in charges} == {"analyst", "analyst-2"}
        assert _spent(cluster, name) == pytest.approx(0.2)


def test_a_one_patient_difference_is_refused_and_charged(cluster: LocalCluster) -> None:
    # the grouped query above counted everyone: everyone but one patient is 1 row away
    attack = "SELECT COUNT(*) AS n FROM admissions WHERE NOT (age = 37 AND ward = 'c')"
    identifier = cluster.propose_and_approve(attack)
    shown = _final(cluster, identifier)
    assert {s["status"] for s in shown.values()} == {"failed"}, shown
    assert any("min_difference" in (s.get("error") or "") for s in shown.values()), shown
    assert cluster.terminal(identifier) == {name: "failed" for name in NAMES}
    for name in NAMES:  # the refusal is one bit about the rows: a release, not refunded
        assert _spent(cluster, name) == pytest.approx(0.3)
        charges = cluster.client(name).request("GET", "/datasets/admissions/budget")["charges"]
        assert [c["state"] for c in charges if c["computation"] == identifier] == ["charged"]


def _rate_limit(cluster: LocalCluster, name: str, per_day: int) -> None:
    rules = {**RULES, "budget": {**RULES["budget"], "queries_per_day": per_day}}
    cluster.client(name, "admin").request("PUT", "/datasets/admissions/rules",
                                          json={"rules": rules})


def test_a_run_refused_by_one_owner_is_refunded_at_the_others(cluster: LocalCluster) -> None:
    _rate_limit(cluster, "hospital-c", 2)  # the analyst has run 2 queries on it today
    try:
        identifier = cluster.propose_and_approve(
            "SELECT COUNT(*) AS n FROM admissions WHERE age < 30")
        shown = _final(cluster, identifier)
        assert {s["status"] for s in shown.values()} == {"failed"}, shown
        assert "RateLimited" in shown["hospital-c"]["error"], shown
        for name in NAMES:  # charged at a and b, refused at c before anything was shared
            assert _spent(cluster, name) == pytest.approx(0.3)
        states = {name: [c["state"] for c in cluster.client(name).request(
            "GET", "/datasets/admissions/budget")["charges"] if c["computation"] == identifier]
            for name in NAMES}
        assert states == {"hospital-a": ["refunded"], "hospital-b": ["refunded"],
                          "hospital-c": []}
    finally:
        _rate_limit(cluster, "hospital-c", 50)
    cluster.client("hospital-a").request("POST", f"/computations/{identifier}/retry")
    assert {s["status"] for s in _final(cluster, identifier).values()} == {"completed"}
    for name in NAMES:
        assert _spent(cluster, name) == pytest.approx(0.4)


def test_the_budget_refuses_what_would_exceed_it_and_survives_a_restart(
        cluster: LocalCluster) -> None:
    with pytest.raises(BudgetExhausted, match=r"0\.05 of 0\.45 is left"):
        cluster.propose("SELECT COUNT(*) AS n FROM admissions WHERE age < 60")
    cluster.kill("hospital-c")
    cluster.start("hospital-c")
    status = cluster.client("hospital-c").request("GET", "/datasets/admissions/budget")
    assert status["spent_rho"] == pytest.approx(0.4)
    assert status["left_rho"] == pytest.approx(0.05)
    assert [c["state"] for c in status["charges"]].count("released") == 3
    for name, charges, refunds in (("hospital-c", 4, 0), ("hospital-a", 5, 1)):
        entries = cluster.client(name, "admin").request("GET", "/audit/entries")
        kinds = [e["kind"] for e in entries]
        assert (kinds.count("budget_charge"), kinds.count("budget_refund")) == (charges,
                                                                               refunds)
        for entry in entries:
            event_from_entry(entry["kind"], entry["body"])
    refusals = [e["body"] for e in cluster.client("hospital-c", "admin").request(
        "GET", "/audit/entries") if e["kind"] == "refusal"]
    assert any(r["error"] == "RateLimited" for r in refusals), refusals


def test_budget_show_prints_what_is_left(cluster: LocalCluster) -> None:
    from typer.testing import CliRunner

    from concilium.cli import app

    token = cluster.tokens["hospital-a"]["analyst"]
    shown = CliRunner().invoke(app, ["budget", "show", "admissions", "--node",
                                     str(cluster.dirs["hospital-a"]), "--token", token])
    assert shown.exit_code == 0, shown.output
    assert "spent rho=0.4, left rho=0.05" in shown.output
