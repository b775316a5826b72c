"""A compute node that is down for longer than the start-up timeout: the approved
run waits for it ("waiting for peers"), the node comes back, receives what it
missed from its peers' outboxes, and the run completes by itself with the
plaintext's result."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from concilium.node.cluster import LocalCluster
from concilium.node.jobs import WAITING

NAMES = ("hospital-a", "hospital-b", "hospital-c")
SCHEMA = {"columns": {"condition": {"type": "category", "domain": ["asthma", "copd"]},
                      "age": {"type": "int", "low": 0, "high": 100}}}


def test_a_run_waits_for_a_compute_node_that_is_down_and_completes_when_it_is_back(
        tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    frames = {name: pd.DataFrame({"condition": rng.choice(["asthma", "copd"], 50),
                                  "age": rng.integers(0, 101, 50)}) for name in NAMES[:2]}
    cluster = LocalCluster(tmp_path, NAMES, options=["--startup-timeout", "2"])
    try:
        cluster.register("admissions", frames, SCHEMA)  # hospital-c only computes
        time.sleep(1.0)  # the catalogs reach every peer
        cluster.kill("hospital-c")
        identifier = cluster.propose("SELECT COUNT(*) AS n, SUM(age) AS s FROM admissions")
        cluster.approve(identifier, NAMES[:2])
        deadline = time.monotonic() + 30
        while not ((cluster.status("hospital-a", identifier) or {}).get("error") or ""
                   ).startswith(WAITING):
            assert time.monotonic() < deadline, cluster.status("hospital-a", identifier)
            time.sleep(0.2)
        time.sleep(3.0)  # down for longer than the start-up timeout, twice over
        # it keeps trying (approved, running, approved...), neither failed nor done
        assert cluster.status("hospital-a", identifier)["status"] in ("approved", "running")
        cluster.start("hospital-c")
        cluster.wait([identifier], timeout=60)
        union = pd.concat(frames.values(), ignore_index=True)
        assert cluster.result(identifier)["rows"] == [[len(union), int(union["age"].sum())]]
        assert cluster.status("hospital-c", identifier)["status"] == "completed"
    finally:
        cluster.close()
