"""Concurrent computations between real node processes, next to the same ones run
one after another.

    python bench/concurrency.py --json              # 20 computations, 3 nodes
    python bench/concurrency.py --computations 5

Three node processes (mutual TLS, SQLite, a standing MPC listener each) hold
synthetic admissions (test data from numpy's seeded generator, not secrets).
The same ``N`` small governed computations (different queries) run first one
after another (each proposed, approved by every owner and waited for before the
next), then all ``N`` proposed and approved at once. The record gives both wall
times, from the first proposal to the last completion, and their ratio
(``concurrent_over_sequential``; the target is at most 1.5: the computations must
not serialize on a port or a lock). The machine's cores are shared by the three
nodes, so the ratio, not the absolute time, is the figure.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from concilium.errors import ConfigurationError
from concilium.governance.consortium import Manifest, add_party, save_manifest
from concilium.governance.identity import create_node
from concilium.governance.users import UserStore
from concilium.node.client import NodeClient
from concilium.node.service import spawn, stop

NAMES = ("hospital-a", "hospital-b", "hospital-c")
SCHEMA = {"columns": {"condition": {"type": "category", "domain": ["asthma", "copd", "sepsis"]},
                      "age": {"type": "int", "low": 0, "high": 100}}}


def _port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _queries(count: int) -> list[str]:
    return [f"SELECT condition, COUNT(*) AS n, SUM(age) AS s FROM admissions "
            f"WHERE age >= {k % 90} GROUP BY condition" for k in range(count)]


class Nodes:
    """Three node processes with their users and datasets."""

    def __init__(self, root: Path) -> None:
        manifest = Manifest("bench", "rep3")
        self.dirs = []
        for name in NAMES:
            node = create_node(root / name, name, f"127.0.0.1:{_port()}",
                               f"127.0.0.1:{_port()}")
            manifest = add_party(manifest, node, ("data_owner", "compute"))
            self.dirs.append(root / name)
        save_manifest(manifest, root / "consortium.toml")
        self.tokens = {}
        for node_dir, name in zip(self.dirs, NAMES, strict=True):
            users = UserStore(node_dir / "users.sqlite")
            self.tokens[name] = {role: users.add_user(role, role)
                                 for role in ("admin", "analyst", "approver")}
            users.close()
        self.processes = [spawn(d, root / "consortium.toml", quiet=False) for d in self.dirs]
        self.clients = {}
        for node_dir, name in zip(self.dirs, NAMES, strict=True):
            self._wait_until_up(node_dir)
            self.clients[name] = {role: NodeClient(node_dir, token)
                                  for role, token in self.tokens[name].items()}
        for k, name in enumerate(NAMES):
            generator = np.random.default_rng(k)
            path = root / f"{name}.csv"
            pd.DataFrame({"condition": generator.choice(["asthma", "copd", "sepsis"], 200),
                          "age": generator.integers(0, 101, 200)}).to_csv(path, index=False)
            self.clients[name]["admin"].request("POST", "/datasets", json={
                "name": "admissions", "path": str(path), "schema": SCHEMA})

    @staticmethod
    def _wait_until_up(node_dir: Path) -> None:
        client = NodeClient(node_dir, None)
        deadline = time.monotonic() + 60
        try:
            while True:
                try:
                    client.request("GET", "/health")
                    return
                except ConfigurationError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
        finally:
            client.close()

    def start(self, sql: str) -> str:
        analyst = self.clients[NAMES[0]]["analyst"]
        identifier = str(analyst.request("POST", "/computations", json={
            "query": sql, "datasets": ["admissions"], "recipients": [NAMES[0]]})["id"])
        for name in NAMES:
            self.clients[name]["approver"].request(
                "POST", f"/computations/{identifier}/approve", json={})
        return identifier

    def wait(self, identifiers: list[str], timeout: float = 600) -> None:
        analyst = self.clients[NAMES[0]]["analyst"]
        deadline = time.monotonic() + timeout
        pending = set(identifiers)
        while pending:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(pending)} computations did not finish")
            for identifier in list(pending):
                state = analyst.request("GET", f"/computations/{identifier}")
                if state["status"] == "failed":
                    raise RuntimeError(f"{identifier[:12]} failed: {state['error']}")
                if state["status"] == "completed":
                    pending.discard(identifier)
            time.sleep(0.1)

    def close(self) -> None:
        for clients in self.clients.values():
            for client in clients.values():
                client.close()
        stop(self.processes)


def run(count: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as root:
        nodes = Nodes(Path(root))
        try:
            queries = _queries(count)
            nodes.wait([nodes.start(queries[0])])  # warm-up
            start = time.perf_counter()
            for sql in queries:
                nodes.wait([nodes.start(sql)])
            sequential = time.perf_counter() - start
            start = time.perf_counter()
            nodes.wait([nodes.start(sql) for sql in queries])
            concurrent = time.perf_counter() - start
        finally:
            nodes.close()
    return {"op": "concurrent_computations", "n": count, "parties": 3, "protocol": "rep3",
            "transport": "tls", "sequential_seconds": sequential,
            "concurrent_seconds": concurrent, "seconds": concurrent,
            "concurrent_over_sequential": concurrent / sequential}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--computations", type=int, default=20)
    args = parser.parse_args(argv)
    record = run(args.computations)
    if args.json:
        print(json.dumps([record], indent=1))
    else:
        print(f"{args.computations} computations: one after another "
              f"{record['sequential_seconds']:.1f} s, at once {record['concurrent_seconds']:.1f} s "
              f"(x{record['concurrent_over_sequential']:.2f})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
