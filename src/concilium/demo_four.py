"""``concilium demo --four-party`` / ``make demo-four``: four hospitals, four node
processes, malicious security.

Four hospital nodes form a ``rep4`` consortium: secure with abort against one
*actively cheating* hospital. Each registers its own synthetic admissions; an
analyst at hospital-a proposes the readmission statistics under the
hospitals' policy (cells need 20 patients); all four approve; the nodes run
it over mutual TLS, every message vouched for by a second hospital and
checked in its round; hospital-a receives the result, next to a plaintext
check only a demo can make.

Then a fire drill: hospital-d's node is restarted as a cheating node
(:mod:`concilium.cheating_node`: it flips a bit in one of its messages) and
the same query is proposed again. The three honest nodes abort the run with
``CheatingDetected``, naming the hospitals whose copies disagreed; no result
is released; every audit log verifies and records the abort.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import pandas as pd
from rich.console import Console

from concilium.demo import (
    CONDITIONS,
    MIN_COHORT,
    QUERY,
    SCHEMA,
    show_readmissions,
    synthetic_admissions,
)
from concilium.node.cluster import LocalCluster

__all__ = ["HOSPITALS", "main"]

HOSPITALS = ("hospital-a", "hospital-b", "hospital-c", "hospital-d")
PATIENTS = (2100, 1600, 2600, 1900)
console = Console(highlight=False)


def _show(result: dict, frames: dict[str, pd.DataFrame]) -> None:
    union = pd.concat(frames.values())
    reference = union.groupby("condition").agg(rate=("readmitted", "mean"),
                                               stay=("stay", "mean"))
    show_readmissions(result, reference, "Readmissions across the four hospitals")


def _audit(cluster: LocalCluster) -> None:
    for name in HOSPITALS:
        checked = cluster.client(name, "admin").request("GET", "/audit/verify")
        console.print(f"audit log of {name}: {checked['entries']} entries, verified "
                      f"{checked['verified']}")


def main() -> int:
    started = time.monotonic()
    frames = {name: synthetic_admissions(3030 + k, PATIENTS[k])
              for k, name in enumerate(HOSPITALS)}
    with tempfile.TemporaryDirectory(prefix="concilium-four-") as scratch:
        cluster = LocalCluster(Path(scratch), HOSPITALS, protocol="rep4",
                               options=["--peer-timeout", "20"])
        try:
            cluster.register("admissions", frames, {"columns": SCHEMA},
                             {"policy": {"min_cohort": MIN_COHORT}})
            for name in HOSPITALS:
                console.print(f"{name} registered {len(frames[name]):,} admissions (they "
                              f"stay there); cells need at least {MIN_COHORT} patients")
            identifier = cluster.propose_and_approve(QUERY, datasets=("admissions",))
            console.print(f"\ndr-lee at hospital-a proposed {identifier[:16]}...; approved by "
                          "all four hospitals' officers")
            cluster.wait([identifier], timeout=300)
            result = cluster.result(identifier)
            _show(result, frames)
            console.print(f"Threat model (from the run): {result['threat_model']['summary']}.")
            _audit(cluster)

            console.print("\n[bold]Fire drill[/]: hospital-d's node restarts as a cheating "
                          "node (it flips a bit of one of its messages).")
            cluster.kill("hospital-d")
            os.environ["CONCILIUM_CHEAT"] = "flip:12"
            cluster.start("hospital-d", entry="concilium.cheating_node")
            again = cluster.propose_and_approve(QUERY, datasets=("admissions",))
            failure = cluster.wait_failed(again, timeout=300)
            for name in HOSPITALS[:3]:
                shown = cluster.status(name, again) or {}
                console.print(f"  {name}: {shown.get('status')}: "
                              f"{str(shown.get('error', ''))[:150]}")
            console.print(f"No result was released: {failure}.")
            _audit(cluster)
            assert set(CONDITIONS) >= {row[0] for row in result["rows"]}
        finally:
            cluster.close()
    console.print(f"\nDemo finished in {time.monotonic() - started:.1f} s.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
