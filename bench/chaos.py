"""Chaos harness: governed computations between three real node processes while
nodes are killed, paused and restarted and the MPC links misbehave.

    python bench/chaos.py --json                 # 100 runs
    python bench/chaos.py --runs 10 --seed 3     # CI size

Three node processes (mutual TLS, SQLite, a standing MPC listener each, a peer
timeout of ``--peer-timeout`` seconds) hold synthetic admissions (numpy's seeded
generator: test data, not secrets). Every node's MPC address in the manifest is
a loopback proxy (``bench/fault_proxy.py``) in front of the port the node binds.
Each run proposes a query (grouped counts and sums, or a median that sorts all
rows), every owner approves, and at a random moment of the run one fault strikes
a random node or link:

* ``none``; ``kill`` (SIGKILL, restarted a second later); ``pause_short``
  (SIGSTOP for a fifth of the peer timeout, then SIGCONT: the run must go on);
  ``pause_long`` (SIGSTOP for the peer timeout plus 3 s); the proxy's ``delay``
  (50 ms per chunk for 2 s), ``blackhole``, ``truncate`` and ``corrupt``.

Each run is classified from every node's state (the harness reads each node's
SQLite stores directly, as an auditor would):

* ``correct``: the recipient's result equals pandas on the plaintext union;
* ``clean_abort``: every node failed the run and no node holds a result or
  logged one;
* ``abort_after_reveal``: the recipient opened the (correct) result and a fault
  then failed the run before it was stored (reveals are not fair: the recipient
  may learn its output first); counted apart, never as correct;
* ``wrong``: a result that differs from the reference;
* ``partial_reveal``: a result held by a node that is not a recipient, or held
  by a node whose run failed, or logged on a node other than the recipient;
* ``hung``: a node still not finished ``--deadline`` seconds after the fault.

``detect_seconds`` is, for aborted runs, the time from the fault to the moment
every node that was not the fault's target had failed the run (target: the
peer timeout plus 2 s). The record gives the counts, the detection times (all,
median and max) and every run's fault and outcome.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from concilium.node.cluster import LocalCluster
from fault_proxy import FaultProxy

NAMES = ("hospital-a", "hospital-b", "hospital-c")
CONDITIONS = ["asthma", "copd", "sepsis"]
SCHEMA = {"columns": {"condition": {"type": "category", "domain": CONDITIONS},
                      "age": {"type": "int", "low": 0, "high": 100}}}
FAULT_KINDS = ("none", "kill", "pause_short", "pause_long", "delay", "blackhole",
               "truncate", "corrupt")
#: two queries: a fast grouped one and a median that sorts every row (a longer run)
QUERIES = {
    "grouped": "SELECT condition, COUNT(*) AS n, SUM(age) AS s FROM admissions "
               "WHERE age >= {k} GROUP BY condition ORDER BY condition",
    "median": "SELECT MEDIAN(age) AS m, COUNT(*) AS n FROM admissions WHERE age >= {k}",
}


@dataclass
class Run:
    index: int
    fault: str
    target: str
    query: str
    at_seconds: float
    outcome: str = ""
    detect_seconds: float | None = None
    seconds: float = 0.0
    statuses: str = ""
    errors: str = ""  # each node's error, for aborted runs


def _frames(rows: int) -> dict[str, pd.DataFrame]:
    frames = {}
    for k, name in enumerate(NAMES):
        generator = np.random.default_rng(100 + k)
        frames[name] = pd.DataFrame({"condition": generator.choice(CONDITIONS, rows),
                                     "age": generator.integers(0, 101, rows)})
    return frames


def _reference(union: pd.DataFrame, query: str, k: int) -> list[list[Any]]:
    kept = union[union["age"] >= k]
    if query == "grouped":
        grouped = kept.groupby("condition")["age"].agg(["count", "sum"]).reset_index()
        return [[c, int(n), int(s)] for c, n, s in grouped.itertuples(index=False)]
    return [[float(np.median(kept["age"])), len(kept)]]


class Harness:
    def __init__(self, root: Path, peer_timeout: float, rows: int, seed: int,
                 faults: tuple[str, ...] = FAULT_KINDS) -> None:
        self.peer_timeout, self.faults = peer_timeout, faults
        self.generator = np.random.default_rng(seed)  # the faults' schedule, not a secret
        self.cluster = LocalCluster(root, NAMES, proxied=True, options=[
            "--peer-timeout", str(peer_timeout), "--startup-timeout", str(peer_timeout)])
        self.proxies: dict[str, FaultProxy] = {}
        try:
            for name in NAMES:
                self.proxies[name] = FaultProxy(_pair(self.cluster.advertised[name]),
                                                _pair(self.cluster.bound[name]))
            frames = _frames(rows)
            self.cluster.register("admissions", frames, SCHEMA)
        except BaseException:
            self.close()
            raise
        self.union = pd.concat(frames.values(), ignore_index=True)
        self.durations: dict[str, float] = {}

    def close(self) -> None:
        for proxy in self.proxies.values():
            proxy.close()
        self.cluster.close()

    def warm_up(self) -> None:
        """One fault-free run of each query: how long its secure part takes here."""
        for query in QUERIES:
            identifier = self.cluster.propose_and_approve(QUERIES[query].format(k=0))
            start = self._running(identifier)
            self.cluster.wait([identifier], timeout=300)
            self.durations[query] = time.monotonic() - start

    def _running(self, identifier: str, timeout: float = 60.0) -> float:
        """When the recipient's node started the job (its status is no longer
        proposed or approved)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._status(NAMES[0], identifier) not in ("proposed", "approved", None):
                break
            time.sleep(0.02)
        return time.monotonic()

    def run(self, index: int, deadline: float) -> Run:
        query = str(self.generator.choice(list(QUERIES)))
        k = int(self.generator.integers(0, 60))
        fault = str(self.generator.choice(self.faults))
        target = str(self.generator.choice(NAMES))
        at = float(self.generator.uniform(0, 0.9 * self.durations[query]))
        run = Run(index, fault, target, query, at)
        start = time.monotonic()
        identifier = self.cluster.propose_and_approve(QUERIES[query].format(k=k))
        time.sleep(max(0.0, self._running(identifier) + at - time.monotonic()))
        if fault in ("delay", "blackhole", "truncate", "corrupt"):  # a link in use
            carrying = [name for name in NAMES if self.proxies[name].active]
            if carrying:
                target = run.target = carrying[int(self.generator.integers(len(carrying)))]
        struck = time.monotonic()
        restore = self._strike(fault, target)
        detected = self._watch(identifier, target, struck, deadline, run)
        restore.join()
        self._restore(target)
        self._settle(identifier, struck, deadline, run)
        run.seconds = time.monotonic() - start
        run.outcome = self._classify(identifier, _reference(self.union, query, k), run)
        run.detect_seconds = detected if run.outcome in ("clean_abort",
                                                         "abort_after_reveal") else None
        return run

    def _strike(self, fault: str, target: str) -> threading.Thread:
        """Inject the fault; the returned thread undoes what is undone by time."""
        cluster, proxy = self.cluster, self.proxies[target]
        actions: list[Any] = []
        if fault == "kill":
            cluster.kill(target)
            actions = [(1.0, lambda: cluster.start(target))]
        elif fault in ("pause_short", "pause_long"):
            cluster.pause(target)
            pause = self.peer_timeout / 5 if fault == "pause_short" else self.peer_timeout + 3
            actions = [(pause, lambda: cluster.resume(target))]
        elif fault == "delay":
            proxy.set_fault("delay", 0.05)
            actions = [(2.0, lambda: proxy.set_fault(None))]
        elif fault in ("blackhole", "truncate", "corrupt"):
            proxy.set_fault(fault)
            if fault == "blackhole":
                actions = [(self.peer_timeout + 3, lambda: proxy.set_fault(None))]

        def undo() -> None:
            for wait, action in actions:
                time.sleep(wait)
                action()

        thread = threading.Thread(target=undo, daemon=True)
        thread.start()
        return thread

    def _restore(self, target: str) -> None:
        self.proxies[target].set_fault(None)
        if not self.cluster.running(target):
            self.cluster.start(target)

    def _watch(self, identifier: str, target: str, struck: float, deadline: float,
               run: Run) -> float | None:
        """Seconds from the fault until every other node failed the run (None if it
        did not fail there, or a node completed)."""
        others = [n for n in NAMES if n != target]
        while time.monotonic() - struck < deadline:
            statuses = [self._status(name, identifier) for name in others]
            if all(s == "failed" for s in statuses):
                return time.monotonic() - struck
            if any(s == "completed" for s in statuses) and all(
                    s in ("completed", "failed") for s in statuses):
                return None
            time.sleep(0.05)
        return None

    def _settle(self, identifier: str, struck: float, deadline: float, run: Run) -> None:
        """Until every node has finished the run (or the deadline passes)."""
        while time.monotonic() - struck < deadline:
            if all(self._status(n, identifier) in ("completed", "failed") for n in NAMES):
                return
            time.sleep(0.1)

    def _status(self, name: str, identifier: str) -> str | None:
        shown = self.cluster.status(name, identifier) if self.cluster.running(name) else None
        return None if shown is None else str(shown["status"])

    def _record(self, name: str, identifier: str) -> tuple[str | None, Any, bool]:
        """(status, stored result, whether the audit log has the hash of an opened result:
        only a node that received the result logs one), read
        read-only from the node's own SQLite files, as an auditor would."""
        directory = self.cluster.dirs[name]
        with _read_only(directory / "state.sqlite") as state:
            row = state.execute("SELECT status, result FROM computations WHERE id = ?",
                                (identifier,)).fetchone()
        with _read_only(directory / "audit.sqlite") as audit:
            bodies = audit.execute("SELECT body FROM entries WHERE kind = 'result'").fetchall()
        logged = any(entry.get("computation_id") == identifier and entry.get("result_hash")
                     for entry in (json.loads(body) for (body,) in bodies))
        if row is None:
            return None, None, logged
        return row[0], None if row[1] is None else json.loads(row[1]), logged

    def _classify(self, identifier: str, reference: list[list[Any]], run: Run) -> str:
        records = {name: self._record(name, identifier) for name in NAMES}
        run.statuses = ",".join(str(r[0]) for r in records.values())
        run.errors = " | ".join(
            str((self.cluster.status(name, identifier) or {}).get("error") or "")[:160]
            for name in NAMES)
        recipient = NAMES[0]
        for name, (status, result, logged) in records.items():
            if name != recipient and (result is not None or logged):
                return "partial_reveal"
            if status == "failed" and result is not None:
                return "partial_reveal"
        if any(r[0] not in ("completed", "failed") for r in records.values()):
            return "hung"
        status, result, logged = records[recipient]
        if status == "completed" and result is not None:
            return "correct" if _same(result["rows"], reference) else "wrong"
        if status == "completed":
            return "wrong"  # completed without its result
        return "abort_after_reveal" if logged else "clean_abort"


def _same(rows: list[list[Any]], reference: list[list[Any]]) -> bool:
    if len(rows) != len(reference):
        return False
    for got, want in zip(rows, reference, strict=True):
        for a, b in zip(got, want, strict=True):
            if isinstance(b, float) and abs(float(a) - b) > 1e-3 * max(1.0, abs(b)):
                return False
            if not isinstance(b, float) and a != b:
                return False
    return True


@contextlib.contextmanager
def _read_only(path: Path) -> Iterator[sqlite3.Connection]:
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        yield connection
    finally:
        connection.close()


def _pair(address: str) -> tuple[str, int]:
    host, port = address.rsplit(":", 1)
    return host, int(port)


def run(runs: int, peer_timeout: float, rows: int, seed: int,
        faults: tuple[str, ...] = FAULT_KINDS) -> dict[str, Any]:
    deadline = 4 * peer_timeout + 30
    with tempfile.TemporaryDirectory() as root:
        harness = Harness(Path(root), peer_timeout, rows, seed, faults)
        try:
            harness.warm_up()
            start = time.perf_counter()
            results = [harness.run(k, deadline) for k in range(runs)]
            seconds = time.perf_counter() - start
        finally:
            harness.close()
    counts = {outcome: sum(1 for r in results if r.outcome == outcome) for outcome in
              ("correct", "clean_abort", "abort_after_reveal", "wrong", "partial_reveal",
               "hung")}
    detections = [r.detect_seconds for r in results if r.detect_seconds is not None]
    return {"op": "chaos", "n": runs, "parties": 3, "protocol": "rep3", "transport": "tls",
            "seconds": seconds, "peer_timeout": peer_timeout, "rows_per_node": rows,
            "seed": seed, **counts,
            "undetected": sum(1 for r in results if r.outcome == "clean_abort"
                              and r.detect_seconds is None),
            "detect_seconds_median": statistics.median(detections) if detections else None,
            "detect_seconds_max": max(detections) if detections else None,
            "detect_target_seconds": peer_timeout + 2,
            "run_seconds": harness.durations,
            "runs": [asdict(r) for r in results]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--peer-timeout", type=float, default=5.0)
    parser.add_argument("--rows", type=int, default=3000, help="rows per node")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--faults", default=",".join(FAULT_KINDS),
                        help="the faults to draw from, comma-separated")
    args = parser.parse_args(argv)
    faults = tuple(args.faults.split(","))
    unknown = set(faults) - set(FAULT_KINDS)
    if unknown:
        parser.error(f"unknown faults {sorted(unknown)}; choose from {', '.join(FAULT_KINDS)}")
    record = run(args.runs, args.peer_timeout, args.rows, args.seed, faults)
    if args.json:
        print(json.dumps([record], indent=1))
    else:
        summary = {k: record[k] for k in ("correct", "clean_abort", "abort_after_reveal",
                                          "wrong", "partial_reveal", "hung",
                                          "detect_seconds_max")}
        print(json.dumps(summary), file=sys.stderr)
    bad = record["wrong"] + record["partial_reveal"] + record["hung"]
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
