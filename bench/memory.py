"""Memory of long-running nodes: resident memory of three node processes over many
governed computations, one after another.

    python bench/memory.py --json                   # 200 computations
    python bench/memory.py --computations 30 --baseline 5

Three real node processes (``concilium.node.cluster.LocalCluster``: mutual TLS,
SQLite, a standing MPC listener each) hold synthetic admissions (numpy's seeded
generator: test data). ``N`` small computations (different queries) are each
proposed, approved by every owner and waited for until every node shows it
completed (``completed`` in the record counts them). Each node's resident memory
(``VmRSS`` from ``/proc``) is sampled after computation ``--baseline`` (20 by
default: imports, caches and pools have warmed up by then), every 20, and at the
end. The record gives, per node, the memory after the baseline and at the end and
their ratio; the target is at most 1.2 for every node.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from concilium.node.cluster import LocalCluster
from concurrency import NAMES, SCHEMA, _frames


def _rss(pid: int) -> int:
    """Resident memory of a process in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def _query(k: int) -> str:
    return (f"SELECT condition, COUNT(*) AS n, SUM(age) AS s, AVG(age) AS a "
            f"FROM admissions WHERE age >= {k % 90} GROUP BY condition")


def run(count: int, baseline: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as root:
        cluster = LocalCluster(Path(root), NAMES)
        try:
            cluster.register("admissions", _frames(), SCHEMA)
            samples: list[dict[str, Any]] = []
            completed = 0
            start = time.perf_counter()
            for k in range(1, count + 1):
                identifier = cluster.propose_and_approve(_query(k))
                for name in NAMES:  # a failed one raises
                    cluster.wait([identifier], timeout=120, name=name)
                completed += 1
                if k in (baseline, count) or k % 20 == 0:
                    samples.append({"after": k, **{name: _rss(cluster.processes[name].pid)
                                                   for name in NAMES}})
            seconds = time.perf_counter() - start
        finally:
            cluster.close()
    first = next(s for s in samples if s["after"] == baseline)
    last = samples[-1]
    ratios = {name: last[name] / first[name] for name in NAMES}
    return {"op": "node_memory", "n": count, "parties": 3, "protocol": "rep3",
            "transport": "tls", "seconds": seconds, "completed": completed,
            "baseline_after": baseline,
            "rss_after_baseline": {n: first[n] for n in NAMES},
            "rss_at_end": {n: last[n] for n in NAMES}, "end_over_baseline": ratios,
            "max_end_over_baseline": max(ratios.values()), "samples": samples}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--computations", type=int, default=200)
    parser.add_argument("--baseline", type=int, default=20)
    args = parser.parse_args(argv)
    if not 1 <= args.baseline <= args.computations:
        parser.error("--baseline must be between 1 and --computations")
    record = run(args.computations, args.baseline)
    if args.json:
        print(json.dumps([record], indent=1))
    else:
        print(json.dumps({k: record[k] for k in ("n", "seconds", "end_over_baseline")}),
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
