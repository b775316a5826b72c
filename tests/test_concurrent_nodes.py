"""Twenty computations at once between three real node processes: each node's
standing MPC listener routes every connection to its computation."""

from __future__ import annotations

import time
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from concilium.node.client import NodeClient
from tests.test_nodes_end_to_end import NAMES, SCHEMA, _cli, three_nodes  # noqa: F401

VISITS = ('[columns.ward]\ntype = "category"\ndomain = ["a", "b", "c"]\n'
          '[columns.age]\ntype = "int"\nlow = 0\nhigh = 100\n')
QUERIES = (
    [("visits", f"SELECT ward, COUNT(*) AS n, SUM(age) AS s FROM visits WHERE age >= {t} "
                "GROUP BY ward ORDER BY ward") for t in range(0, 100, 10)]
    + [("admissions", f"SELECT condition, COUNT(*) AS n, SUM(readmitted) AS r FROM "
                      f"admissions WHERE condition <> '{c}' GROUP BY condition "
                      "ORDER BY condition") for c in ("asthma", "copd", "sepsis")]
    + [("admissions", f"SELECT COUNT(*) AS n, SUM(readmitted) AS r FROM admissions "
                      f"WHERE readmitted >= {r}") for r in (0, 1)]
    + [("visits", f"SELECT COUNT(*) AS n, MAX(age) AS hi, MIN(age) AS lo FROM visits "
                  f"WHERE ward = '{w}'") for w in ("a", "b", "c")]
    + [("visits", "SELECT ward, COUNT(*) AS n FROM visits GROUP BY ward ORDER BY ward"),
       ("admissions", "SELECT COUNT(*) AS n FROM admissions")]
)


def _register(dirs: list[Path], tokens: dict, tmp_path: Path) -> dict[str, pd.DataFrame]:
    (tmp_path / "admissions.toml").write_text(SCHEMA)
    (tmp_path / "visits.toml").write_text(VISITS)
    unions: dict[str, list[pd.DataFrame]] = {"admissions": [], "visits": []}
    for k, (node_dir, name) in enumerate(zip(dirs, NAMES, strict=True)):
        rng = np.random.default_rng(40 + k)
        frames = {"admissions": pd.DataFrame({
                      "condition": rng.choice(["asthma", "copd", "sepsis"], 50),
                      "readmitted": rng.integers(0, 2, 50)}),
                  "visits": pd.DataFrame({"ward": rng.choice(["a", "b", "c"], 40),
                                          "age": rng.integers(0, 101, 40)})}
        for dataset, frame in frames.items():
            path = tmp_path / f"{name}-{dataset}.csv"
            frame.to_csv(path, index=False)
            added = _cli(["dataset", "add", dataset, str(path), "--schema",
                          str(tmp_path / f"{dataset}.toml"), "--node", str(node_dir)],
                         tokens[(name, "root")])
            assert added.exit_code == 0, added.output
            unions[dataset].append(frame)
    return {name: pd.concat(frames, ignore_index=True) for name, frames in unions.items()}


def test_twenty_computations_at_once_between_three_nodes(three_nodes: tuple,  # noqa: F811
                                                         tmp_path: Path) -> None:
    dirs, tokens, _, _ = three_nodes
    unions = _register(dirs, tokens, tmp_path)
    analyst = NodeClient(dirs[0], tokens[("hospital-a", "dr-lee")])
    officers = [NodeClient(d, tokens[(n, "officer")]) for d, n in zip(dirs, NAMES, strict=True)]
    identifiers = [analyst.request("POST", "/computations", json={
        "query": sql, "datasets": [dataset], "recipients": ["hospital-a"]})["id"]
        for dataset, sql in QUERIES]
    assert len(set(identifiers)) == 20
    for identifier in identifiers:  # every approval in: all twenty start at once
        for officer in officers:
            officer.request("POST", f"/computations/{identifier}/approve", json={})
    deadline = time.monotonic() + 240
    states: dict[str, dict] = {}
    while time.monotonic() < deadline:
        states = {i: analyst.request("GET", f"/computations/{i}") for i in identifiers}
        if all(s["status"] in ("completed", "failed") for s in states.values()):
            break
        time.sleep(0.5)
    failed = {i: s.get("error") for i, s in states.items() if s["status"] != "completed"}
    assert not failed, failed
    connection = duckdb.connect()
    for name, frame in unions.items():
        connection.register(name, frame)
    for identifier, (_, sql) in zip(identifiers, QUERIES, strict=True):
        result = analyst.request("GET", f"/computations/{identifier}/result")
        expected = connection.sql(sql).df()
        assert result["rows"] == expected.astype(object).values.tolist(), sql
    # each computation its own session: every node logged its own transcript of it
    transcripts: dict[str, dict[int, list]] = {i: {} for i in identifiers}
    for index, (node_dir, name) in enumerate(zip(dirs, NAMES, strict=True)):
        entries = NodeClient(node_dir, tokens[(name, "root")]).request("GET", "/audit/entries")
        for entry in entries:
            if entry["kind"] == "run_end" and entry["body"]["computation_id"] in transcripts:
                transcripts[entry["body"]["computation_id"]][index] = entry["body"]["transcript"]
        verified = _cli(["audit", "verify", str(node_dir / "audit.sqlite")], "")
        assert verified.exit_code == 0, verified.output
    digests = set()
    for identifier, by_node in transcripts.items():
        assert set(by_node) == {0, 1, 2}, identifier
        for i, entries in by_node.items():
            assert {e["peer"] for e in entries} == {0, 1, 2} - {i}
            digests |= {e["sent"] for e in entries}
    assert len(digests) == 20 * 6  # no two computations (or links) share a transcript
    analyst.close()
    for officer in officers:
        officer.close()
