"""A node killed (SIGKILL) at random moments of its work comes back with its state
intact: every SQLite file passes its integrity check, the audit log verifies entry
by entry, no run is left half-done (running, or failed with a result), the run it
was in is failed with the reason on every node, and a retry completes it with the
plaintext's result."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import numpy as np
import pandas as pd

from concilium.governance.audit_events import event_from_entry
from concilium.node.cluster import LocalCluster

NAMES = ("hospital-a", "hospital-b", "hospital-c")
SCHEMA = {"columns": {"condition": {"type": "category", "domain": ["asthma", "copd"]},
                      "age": {"type": "int", "low": 0, "high": 100}}}
SQL = "SELECT MEDIAN(age) AS m, COUNT(*) AS n FROM admissions WHERE age >= {k}"


def _integrity(path: Path) -> str:
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return str(connection.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        connection.close()


def _final(cluster: LocalCluster, identifier: str, timeout: float = 120) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while True:
        statuses = {n: (cluster.status(n, identifier) or {}).get("status") for n in NAMES}
        if all(s in ("completed", "failed") for s in statuses.values()):
            return statuses  # type: ignore[return-value]
        assert time.monotonic() < deadline, statuses
        time.sleep(0.1)


def test_a_node_killed_at_random_moments_keeps_a_consistent_state(tmp_path: Path) -> None:
    schedule = np.random.default_rng(11)  # when to kill: test data, not a secret
    frames = {name: pd.DataFrame({"condition": schedule.choice(["asthma", "copd"], 1500),
                                  "age": schedule.integers(0, 101, 1500)}) for name in NAMES}
    union = pd.concat(frames.values(), ignore_index=True)
    cluster = LocalCluster(tmp_path, NAMES, options=["--peer-timeout", "4"])
    try:
        cluster.register("admissions", frames, SCHEMA)
        outcomes = []
        for attempt in range(4):
            k = 10 * attempt
            identifier = cluster.propose_and_approve(SQL.format(k=k))
            time.sleep(float(schedule.uniform(0.0, 2.5)))
            cluster.kill("hospital-a")  # the recipient, mid-run or just after
            cluster.start("hospital-a")
            directory = cluster.dirs["hospital-a"]
            for name in ("state.sqlite", "audit.sqlite", "outbox.sqlite", "users.sqlite"):
                assert _integrity(directory / name) == "ok", name
            verified = cluster.client("hospital-a", "admin").request("GET", "/audit/verify")
            assert verified["verified"] is True
            statuses = _final(cluster, identifier)
            shown = cluster.status("hospital-a", identifier)
            assert shown is not None
            outcomes.append(statuses["hospital-a"])
            if statuses["hospital-a"] == "failed":
                assert "interrupted" in shown["error"] or "Peer" in shown["error"], shown
                # its peers failed it too: nobody holds half a run
                assert set(statuses.values()) == {"failed"}, statuses
                cluster.client("hospital-a").request("POST",
                                                     f"/computations/{identifier}/retry")
                statuses = _final(cluster, identifier)
            assert set(statuses.values()) == {"completed"}, statuses
            kept = union[union["age"] >= k]
            rows = cluster.result(identifier)["rows"]
            assert rows == [[float(np.median(kept["age"])), len(kept)]]
        assert "failed" in outcomes, outcomes  # at least one kill interrupted a run
        for name in NAMES:  # every entry of every log is one of the documented events
            kinds = set()
            for entry in cluster.client(name, "admin").request("GET", "/audit/entries"):
                kinds.add(type(event_from_entry(entry["kind"], entry["body"])).KIND)
            assert {"proposal", "approval", "run_start", "input_commitment", "result",
                    "run_end", "dataset_registered"} <= kinds, kinds
        assert "abort" in kinds or "retry" in kinds
    finally:
        cluster.close()
