"""Two organizations, no third: two node processes of an ``additive`` consortium run
a governed computation over mutual TLS (propose, approve at both, run, result,
audit), the result equal to DuckDB on the plaintext and stating its threat model;
a party killed mid-run fails the run on the other with nothing revealed."""

from __future__ import annotations

import time
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from concilium.cli import app
from concilium.errors import ApprovalMissing
from concilium.governance.consortium import load_manifest
from concilium.node.cluster import LocalCluster

NAMES = ("bank-a", "bank-b")
SCHEMA = {"columns": {"segment": {"type": "category", "domain": ["retail", "business"]},
                      "balance": {"type": "int", "low": -10_000, "high": 1_000_000},
                      "flagged": {"type": "int", "low": 0, "high": 1}}}
SQL = ("SELECT segment, COUNT(*) AS n, AVG(balance) AS mean_balance, SUM(flagged) AS flagged, "
       "MAX(balance) AS top FROM accounts WHERE balance > 0 GROUP BY segment "
       "ORDER BY segment")


def _frames() -> dict[str, pd.DataFrame]:
    data = np.random.default_rng(23)  # test data, not secrets
    return {name: pd.DataFrame({"segment": data.choice(["retail", "business"], 800),
                                "balance": data.integers(-10_000, 1_000_000, 800),
                                "flagged": data.integers(0, 2, 800)}) for name in NAMES}


@pytest.fixture(scope="module")
def banks(tmp_path_factory: pytest.TempPathFactory) -> LocalCluster:
    running = LocalCluster(tmp_path_factory.mktemp("banks"), NAMES, protocol="additive",
                           options=["--peer-timeout", "4"])
    running.register("accounts", _frames(), SCHEMA)
    yield running
    running.close()


def test_two_banks_compute_a_governed_result_over_tls(banks: LocalCluster) -> None:
    assert load_manifest(banks.manifest_path).protocol == "additive"
    identifier = banks.propose_and_approve(SQL, datasets=("accounts",))
    banks.wait([identifier], timeout=120)
    result = banks.result(identifier)
    accounts = pd.concat(_frames().values(), ignore_index=True)
    connection = duckdb.connect()
    connection.register("accounts", accounts)
    expected = connection.sql(SQL).df()
    assert [row[0] for row in result["rows"]] == expected["segment"].tolist()
    for row, (_, plain) in zip(result["rows"], expected.iterrows(), strict=True):
        assert row[1] == plain["n"] and row[3] == plain["flagged"] and row[4] == plain["top"]
        assert row[2] == pytest.approx(plain["mean_balance"], abs=1e-3)
    assert result["threat_model"]["summary"] == (
        "additive: semi-honest, dishonest majority; 2 compute parties, tolerates 1 "
        "corrupted; broken if all 2 compute parties pool what they see")

    for name in NAMES:  # both logs verify, and both ran the additive protocol
        assert banks.client(name, "admin").request("GET", "/audit/verify")["verified"]
        starts = [e["body"] for e in banks.client(name, "admin").request(
            "GET", "/audit/entries") if e["kind"] == "run_start"]
        assert starts and starts[-1]["protocol"] == "additive"


CUSTOMERS = {"columns": {"customer": {"type": "key", "unique": True},
                         "segment": {"type": "category", "domain": ["retail", "business"]}}}
LOANS = {"columns": {"customer": {"type": "key"},
                     "amount": {"type": "int", "low": 0, "high": 100_000},
                     "late": {"type": "int", "low": 0, "high": 1}},
         "max_rows": 1000}
JOIN = ("SELECT c.segment, COUNT(*) AS loans, SUM(l.amount) AS lent, SUM(l.late) AS late, "
        "MAX(l.amount) AS largest, COUNT(DISTINCT l.customer) AS borrowers "
        "FROM customers c JOIN loans l "
        "ON c.customer = l.customer GROUP BY c.segment ORDER BY c.segment")


def test_a_join_across_the_two_banks_equals_duckdb(banks: LocalCluster) -> None:
    # bank-a knows its customers' segments, bank-b the loans it made (to some of the same
    # people, several each): the secret shuffle of the join runs between the two
    data = np.random.default_rng(29)  # test data, not secrets
    ids = data.permutation(5000)[:400]
    customers = pd.DataFrame({"customer": ids,
                              "segment": data.choice(["retail", "business"], 400)})
    loans = pd.DataFrame({"customer": data.choice(np.r_[ids, np.arange(6000, 6100)], 300),
                          "amount": data.integers(0, 100_000, 300),
                          "late": data.integers(0, 2, 300)})
    banks.register("customers", {"bank-a": customers}, CUSTOMERS)
    banks.register("loans", {"bank-b": loans}, LOANS)
    identifier = banks.propose_and_approve(JOIN, datasets=("customers", "loans"))
    banks.wait([identifier], timeout=300)
    result = banks.result(identifier)
    connection = duckdb.connect()
    connection.register("customers", customers)
    connection.register("loans", loans)
    expected = connection.sql(JOIN).df()
    assert [row[0] for row in result["rows"]] == expected["segment"].tolist()
    for row, (_, plain) in zip(result["rows"], expected.iterrows(), strict=True):
        assert row[1:] == [plain["loans"], plain["lent"], plain["late"], plain["largest"],
                           plain["borrowers"]]


def test_a_bank_killed_mid_run_fails_the_run_on_the_other(banks: LocalCluster) -> None:
    identifier = banks.propose_and_approve(SQL.replace("balance > 0", "balance > 5"),
                                           datasets=("accounts",))
    time.sleep(0.3)
    banks.kill("bank-b")
    deadline = time.monotonic() + 60
    while True:
        shown = banks.status("bank-a", identifier) or {}
        if shown.get("status") in ("failed", "completed"):
            break
        assert time.monotonic() < deadline, shown
        time.sleep(0.1)
    banks.start("bank-b")
    if shown["status"] == "completed":  # the run beat the kill: nothing to check
        pytest.skip("the run finished before the kill")
    assert "Peer" in shown["error"] or "interrupted" in shown["error"], shown
    with pytest.raises(ApprovalMissing, match=r"the computation is failed; no result"):
        banks.result(identifier)  # nothing was revealed to anyone


def test_the_cli_creates_an_additive_consortium(tmp_path: Path) -> None:
    manifest = tmp_path / "consortium.toml"
    created = CliRunner().invoke(app, ["consortium", "create", str(manifest), "--name",
                                       "banks", "--protocol", "additive"])
    assert created.exit_code == 0, created.output
    assert load_manifest(manifest).protocol == "additive"
