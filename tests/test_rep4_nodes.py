"""Four node processes of a ``rep4`` consortium over mutual TLS: a governed query under
the owners' output policy equals the plaintext reference and states its threat model;
with one node's process replaced by a cheating one, the run aborts on the other three
with CheatingDetected, nothing is released, and every audit log verifies and records
the abort."""

from __future__ import annotations

import os
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from concilium.node.cluster import LocalCluster

NAMES = ("hospital-a", "hospital-b", "hospital-c", "hospital-d")
SCHEMA = {"columns": {"condition": {"type": "category", "domain": ["asthma", "copd", "rare"]},
                      "age": {"type": "int", "low": 0, "high": 110},
                      "readmitted": {"type": "int", "low": 0, "high": 1}}}
SQL = ("SELECT condition, COUNT(*) AS n, AVG(age) AS mean_age, SUM(readmitted) AS back "
       "FROM admissions GROUP BY condition ORDER BY condition")


def _frames() -> dict[str, pd.DataFrame]:
    data = np.random.default_rng(44)  # test data, not secrets
    return {name: pd.DataFrame({
        "condition": data.choice(["asthma", "copd", "rare"], 300, p=[0.6, 0.38, 0.02]),
        "age": data.integers(0, 111, 300), "readmitted": data.integers(0, 2, 300)})
        for name in NAMES}


def test_four_hospitals_under_rep4_and_a_cheating_node(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    cluster = LocalCluster(tmp_path, NAMES, protocol="rep4", options=["--peer-timeout", "20"])
    try:
        cluster.register("admissions", _frames(), SCHEMA, {"policy": {"min_cohort": 30}})
        identifier = cluster.propose_and_approve(SQL)
        cluster.wait([identifier], timeout=300)
        result = cluster.result(identifier)
        union = pd.concat(_frames().values(), ignore_index=True)
        connection = duckdb.connect()
        connection.register("admissions", union)
        expected = connection.sql(SQL).df()
        # the small cell is suppressed, and a second one with it (complementary)
        hidden = {cell["group"]["condition"] for cell in result["suppressed"]}
        assert "rare" in hidden and len(hidden) == 2
        shown = expected[~expected["condition"].isin(hidden)]
        assert [row[0] for row in result["rows"]] == shown["condition"].tolist()
        for row, (_, plain) in zip(result["rows"], shown.iterrows(), strict=True):
            assert row[1] == plain["n"] and row[3] == plain["back"]
            assert row[2] == pytest.approx(plain["mean_age"], abs=1e-3)
        assert result["threat_model"]["summary"].startswith(
            "rep4: malicious with abort, one of four; 4 compute parties")

        cluster.kill("hospital-d")
        monkeypatch.setitem(os.environ, "CONCILIUM_CHEAT", "flip:12")
        cluster.start("hospital-d", entry="concilium.cheating_node")
        again = cluster.propose_and_approve(SQL)
        cluster.wait_failed(again, timeout=300)
        for name in NAMES[:3]:
            status = cluster.status(name, again)
            assert status is not None and "CheatingDetected" in status["error"], status
            assert cluster.client(name).request("GET", f"/computations/{again}")[
                "status"] == "failed"
            checked = cluster.client(name, "admin").request("GET", "/audit/verify")
            assert checked["verified"] is True, checked
            entries = cluster.client(name, "admin").request("GET", "/audit/entries")
            aborts = [e for e in entries if e["kind"] == "abort"
                      and e["body"]["computation_id"] == again]
            assert aborts and aborts[0]["body"]["error"] == "CheatingDetected", aborts
            deliveries = [e for e in entries if e["kind"] == "delivery"
                          and e["body"]["computation_id"] == again]
            assert not deliveries
    finally:
        cluster.close()
