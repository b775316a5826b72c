"""``concilium demo`` / ``make demo``: three hospitals, three node processes, one
governed computation.

1. Three hospital nodes are created in a temporary directory (TLS and signing
   keys, a consortium manifest) and started as separate processes on
   loopback; each registers its own synthetic admissions (a seeded generator:
   conditions with their own readmission rates and lengths of stay).
2. An analyst at hospital-a proposes the readmission-rate query with an
   output policy (cells need at least 20 patients); each hospital's approver
   approves it at their own node, which signs the decision.
3. Once every hospital has approved, the three nodes run the query over
   mutual TLS on secret shares; only hospital-a receives the result. Small
   cells are suppressed on secret shares (and a second cell with them, so
   totals cannot expose them); the table marks them.
4. Every node's audit log is verified (chain, signatures, co-signed
   checkpoints). The processes are stopped and the directory removed.

The plaintext check next to the result is what only a demo can do: it reads
all three hospitals' data in one place.
"""

from __future__ import annotations

import hashlib
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

from concilium.governance.audit_verify import verify_log
from concilium.governance.consortium import Manifest, add_party, load_manifest, save_manifest
from concilium.governance.identity import create_node
from concilium.governance.users import UserStore
from concilium.node.client import NodeClient
from concilium.node.service import spawn, stop
from concilium.ring import Prg

__all__ = ["main", "show_readmissions", "synthetic_admissions"]

HOSPITALS = ("hospital-a", "hospital-b", "hospital-c")
PATIENTS = (4200, 3100, 5300)
CONDITIONS = {  # condition: (share of admissions, readmission rate, mean stay in days)
    "heart failure": (0.26, 0.22, 6.1), "pneumonia": (0.24, 0.17, 5.2),
    "copd": (0.18, 0.20, 4.8), "diabetes": (0.16, 0.13, 4.1),
    "sepsis": (0.1592, 0.19, 9.3), "rare disorder": (0.0008, 0.40, 12.0),
}
QUERY = ("SELECT condition, COUNT(*) AS patients, AVG(readmitted) AS readmission_rate, "
         "AVG(stay) AS mean_stay FROM admissions GROUP BY condition ORDER BY condition")
SCHEMA = {"condition": {"type": "category", "domain": sorted(CONDITIONS)},
          "age": {"type": "int", "low": 0, "high": 110},
          "stay": {"type": "fixed", "low": 0, "high": 365},
          "readmitted": {"type": "int", "low": 0, "high": 1}}
MIN_COHORT = 20
console = Console(highlight=False)


def synthetic_admissions(seed: int, patients: int) -> pd.DataFrame:
    """A hospital's admissions, reproducible from ``seed`` (demo data, not secrets).

    The uniform draws come from the project's AES-CTR PRG under a key derived
    from the seed, like every other random number in the package."""
    key = hashlib.sha256(f"concilium-demo-{seed}".encode()).digest()[:16]
    uniform = Prg(key).uniform((5, patients))
    names = sorted(CONDITIONS)
    shares = np.array([CONDITIONS[n][0] for n in names])
    edges = np.cumsum(shares / shares.sum())
    condition = np.minimum(np.searchsorted(edges, uniform[0], side="right"), len(names) - 1)
    rates = np.array([CONDITIONS[n][1] for n in names])[condition]
    stays = np.array([CONDITIONS[n][2] for n in names])[condition]
    # gamma(2, mean / 2): the sum of two exponential draws with mean stay / 2
    exponentials = -np.log1p(-uniform[1]) - np.log1p(-uniform[2])
    return pd.DataFrame({
        "condition": np.array(names)[condition],
        "age": 18 + (uniform[3] * 82).astype(np.int64),
        "stay": np.round((exponentials * stays / 2.0).clip(0.5, 365), 1),
        "readmitted": (uniform[4] < rates).astype(int),
    })


def _port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _setup(root: Path) -> tuple[list[Path], dict[tuple[str, str], str], Path]:
    manifest = Manifest("hospitals", "rep3")
    dirs = []
    for name in HOSPITALS:
        node = create_node(root / name, name, f"127.0.0.1:{_port()}", f"127.0.0.1:{_port()}")
        manifest = add_party(manifest, node, ("data_owner", "compute"))
        dirs.append(root / name)
    save_manifest(manifest, root / "consortium.toml")
    tokens = {}
    for node_dir, name in zip(dirs, HOSPITALS, strict=True):
        users = UserStore(node_dir / "users.sqlite")
        for user, role in (("admin", "admin"), ("officer", "approver"),
                           ("dr-lee", "analyst")):
            tokens[(name, user)] = users.add_user(user, role)
        users.close()
    return dirs, tokens, root / "consortium.toml"


def _wait_up(node_dir: Path, deadline: float) -> None:
    client = NodeClient(node_dir, None)
    try:
        while True:
            try:
                client.request("GET", "/health")
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
    finally:
        client.close()


def show_readmissions(result: dict[str, Any], reference: pd.DataFrame,
                      title: str = "Readmissions across the three hospitals") -> None:
    """The result table next to the plaintext check, suppressed cells marked."""
    table = Table("condition", "patients", "readmission rate", "mean stay (days)",
                  "plaintext check", title=title)
    for condition, patients, rate, stay in result["rows"]:
        check = reference.loc[condition]
        table.add_row(condition, str(patients), f"{rate:.4f}", f"{stay:.2f}",
                      f"{check['rate']:.4f} / {check['stay']:.2f}")
    for cell in result["suppressed"]:
        table.add_row(str(cell["group"]["condition"]), "suppressed", "suppressed",
                      "suppressed", f"({cell['rule'].split(':')[0]})")
    console.print(table)


def main() -> int:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="concilium-demo-") as scratch:
        root = Path(scratch)
        dirs, tokens, manifest = _setup(root)
        processes = [spawn(d, manifest) for d in dirs]
        try:
            for node_dir in dirs:
                _wait_up(node_dir, time.monotonic() + 30)
            frames = []
            for k, (node_dir, name) in enumerate(zip(dirs, HOSPITALS, strict=True)):
                frame = synthetic_admissions(2026 + k, PATIENTS[k])
                frames.append(frame)
                frame.to_csv(node_dir / "admissions.csv", index=False)
                admin = NodeClient(node_dir, tokens[(name, "admin")])
                admin.request("POST", "/datasets", json={
                    "name": "admissions", "path": str(node_dir / "admissions.csv"),
                    "schema": SCHEMA, "rules": {"policy": {"min_cohort": MIN_COHORT}}})
                admin.close()
                console.print(f"{name} registered {len(frame):,} admissions (they stay there) "
                              f"with its policy: cells need at least {MIN_COHORT} patients")
            analyst = NodeClient(dirs[0], tokens[("hospital-a", "dr-lee")])
            proposal = analyst.request("POST", "/computations", json={
                "query": QUERY, "datasets": ["admissions"], "recipients": ["hospital-a"]})
            identifier = proposal["id"]
            console.print(f"\ndr-lee at hospital-a proposed computation {identifier[:16]}...")
            console.print(f"  {QUERY}\n  effective output policy (the hospitals' own): "
                          f"min_cohort = {proposal['policy']['min_cohort']}; approvers: "
                          f"{', '.join(sorted(proposal['approvers']))}")
            for node_dir, name in zip(dirs, HOSPITALS, strict=True):
                officer = NodeClient(node_dir, tokens[(name, "officer")])
                officer.request("POST", f"/computations/{identifier}/approve",
                                json={"comment": "aggregate statistics only"})
                officer.close()
                console.print(f"  approved by {name}'s officer (signed by {name}'s key)")
            state = analyst.request("GET", f"/computations/{identifier}")
            while state["status"] not in ("completed", "failed", "refused"):
                if time.monotonic() - started > 120:
                    raise TimeoutError("the computation did not finish in two minutes")
                time.sleep(0.2)
                state = analyst.request("GET", f"/computations/{identifier}")
            if state["status"] != "completed":
                console.print(f"[red]the computation {state['status']}: {state['error']}[/]")
                return 1
            result = analyst.request("GET", f"/computations/{identifier}/result")
            threat = result["threat_model"]["summary"]
            analyst.close()
            console.print("\nComputed over mutual TLS on secret shares; only hospital-a "
                          "received the result.\n")
            union = pd.concat(frames)
            reference = union.groupby("condition").agg(rate=("readmitted", "mean"),
                                                       stay=("stay", "mean"))
            show_readmissions(result, reference)
            signers = {p.name: p.signing_key for p in load_manifest(manifest).parties}
            for node_dir, name in zip(dirs, HOSPITALS, strict=True):
                count = verify_log(node_dir / "audit.sqlite", signers)
                console.print(f"audit log of {name}: {count} entries, chain, signatures and "
                              "co-signed checkpoints verified")
        finally:
            stop(processes)
    console.print(f"\nThreat model (from the run): {threat}.\nDemo finished in "
                  f"{time.monotonic() - started:.1f} s; the nodes are stopped and their "
                  "directory removed.", highlight=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
