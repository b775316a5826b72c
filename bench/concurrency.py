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

from concilium.node.cluster import LocalCluster

NAMES = ("hospital-a", "hospital-b", "hospital-c")
SCHEMA = {"columns": {"condition": {"type": "category", "domain": ["asthma", "copd", "sepsis"]},
                      "age": {"type": "int", "low": 0, "high": 100}}}


def _queries(count: int) -> list[str]:
    return [f"SELECT condition, COUNT(*) AS n, SUM(age) AS s FROM admissions "
            f"WHERE age >= {k % 90} GROUP BY condition" for k in range(count)]


def _frames() -> dict[str, pd.DataFrame]:
    frames = {}
    for k, name in enumerate(NAMES):
        generator = np.random.default_rng(k)
        frames[name] = pd.DataFrame({"condition": generator.choice(["asthma", "copd", "sepsis"],
                                                                   200),
                                     "age": generator.integers(0, 101, 200)})
    return frames


def run(count: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as root:
        nodes = LocalCluster(Path(root), NAMES)
        try:
            nodes.register("admissions", _frames(), SCHEMA)
            queries = _queries(count)
            nodes.wait([nodes.propose_and_approve(queries[0])])  # warm-up
            start = time.perf_counter()
            for sql in queries:
                nodes.wait([nodes.propose_and_approve(sql)])
            sequential = time.perf_counter() - start
            start = time.perf_counter()
            nodes.wait([nodes.propose_and_approve(sql) for sql in queries])
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
