"""``concilium demo --two-party`` / ``make demo-banks``: two banks, two node processes,
no third organization and no dealer.

Two bank nodes form an ``additive`` consortium (any one of the two may be
corrupted: each protects its own customers). Each registers its own synthetic
accounts; an analyst at bank-a proposes per-segment statistics (accounts,
mean balance, flagged accounts, overdrawn accounts) under the banks' policy
(cells need 20 accounts); both banks' officers approve; the two nodes run it
over mutual TLS on additive shares whose Beaver triples come from oblivious
transfer between the two banks; bank-a receives the result, next to a
plaintext check only a demo can make.

Then the overlap: each bank also registers its own book (``book_a`` at bank-a,
``book_b`` at bank-b), and a join on the customer key counts the customers the
two banks share and their flagged accounts and balances at each bank. The
join's secret shuffle runs between the two banks by oblivious switching, so
neither learns which of its customers the other has. Both audit logs are
verified.
"""

from __future__ import annotations

import hashlib
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

from concilium.node.cluster import LocalCluster
from concilium.ring import Prg

__all__ = ["main"]

BANKS = ("bank-a", "bank-b")
SEGMENTS = ("business", "private", "retail", "student")
SCHEMA = {"columns": {"customer": {"type": "key", "unique": True},
                      "segment": {"type": "category", "domain": list(SEGMENTS)},
                      "balance": {"type": "int", "low": -50_000, "high": 5_000_000},
                      "flagged": {"type": "int", "low": 0, "high": 1}}}
QUERY = ("SELECT segment, COUNT(*) AS accounts, AVG(balance) AS mean_balance, "
         "SUM(flagged) AS flagged, SUM(CASE WHEN balance < 0 THEN 1 ELSE 0 END) AS overdrawn "
         "FROM accounts GROUP BY segment ORDER BY segment")
OVERLAP = ("SELECT COUNT(*) AS shared, SUM(a.flagged) AS flagged_at_a, "
           "SUM(b.flagged) AS flagged_at_b, SUM(a.balance) AS balance_at_a, "
           "SUM(b.balance) AS balance_at_b FROM book_a a JOIN book_b b "
           "ON a.customer = b.customer")
console = Console(highlight=False)


def synthetic_accounts(seed: int, count: int) -> pd.DataFrame:
    """A bank's accounts, reproducible from ``seed`` (demo data, not secrets). The
    uniform draws come from the project's AES-CTR PRG under a key derived from the
    seed, like every other random number in the package."""
    key = hashlib.sha256(f"concilium-banks-{seed}".encode()).digest()[:16]
    prg = Prg(key)
    uniform = prg.uniform((4, count))
    edges = np.cumsum([0.2, 0.1, 0.6, 0.1])
    segment = np.array(SEGMENTS)[np.minimum(np.searchsorted(edges, uniform[0], side="right"),
                                            len(SEGMENTS) - 1)]
    scale = np.array([{"business": 80_000, "private": 400_000, "retail": 6_000,
                       "student": 900}[s] for s in segment], dtype=np.float64)
    # two uniforms to one normal (Box-Muller): mean scale, deviation scale / 2
    normal = np.sqrt(-2 * np.log1p(-uniform[1])) * np.cos(2 * np.pi * uniform[2])
    balance = scale + normal * scale / 2
    customers = np.argsort(prg.integers(count * 3), kind="stable")[:count]  # distinct ids
    return pd.DataFrame({"customer": customers, "segment": segment,
                         "balance": np.clip(balance, -50_000, 5_000_000).astype(int),
                         "flagged": (uniform[3] < 0.02).astype(int)})


def _overlap(cluster: LocalCluster, frames: dict[str, pd.DataFrame]) -> None:
    """The join: shared customers, their flagged accounts and balances at each bank."""
    identifier = cluster.propose_and_approve(OVERLAP, datasets=("book_a", "book_b"))
    console.print(f"\nthe overlap of the two books (a join, {identifier[:16]}...), approved "
                  "by both banks")
    cluster.wait([identifier], timeout=300)
    shared, flagged_a, flagged_b, balance_a, balance_b = cluster.result(identifier)["rows"][0]
    both = frames["bank-a"].merge(frames["bank-b"], on="customer", suffixes=("_a", "_b"))
    table = Table("", "secure result", "plaintext check", title="Customers of both banks")
    for label, got, want in (("shared customers", shared, len(both)),
                             ("flagged at bank-a", flagged_a, both["flagged_a"].sum()),
                             ("flagged at bank-b", flagged_b, both["flagged_b"].sum()),
                             ("balances at bank-a", balance_a, both["balance_a"].sum()),
                             ("balances at bank-b", balance_b, both["balance_b"].sum())):
        table.add_row(label, f"{got:,}", f"{int(want):,}")
    console.print(table)


def main() -> int:
    started = time.monotonic()
    frames = {name: synthetic_accounts(2026 + k, (1600, 1200)[k])
              for k, name in enumerate(BANKS)}
    with tempfile.TemporaryDirectory(prefix="concilium-banks-") as scratch:
        cluster = LocalCluster(Path(scratch), BANKS, protocol="additive")
        try:
            cluster.register("accounts", frames, SCHEMA,
                             {"policy": {"min_cohort": 20}})
            for name in BANKS:
                console.print(f"{name} registered {len(frames[name]):,} accounts (they stay "
                              "there); cells need at least 20 accounts")
            cluster.register("book_a", {"bank-a": frames["bank-a"]}, SCHEMA,
                             {"policy": {"min_cohort": 20}})
            cluster.register("book_b", {"bank-b": frames["bank-b"]}, SCHEMA,
                             {"policy": {"min_cohort": 20}})
            identifier = cluster.propose_and_approve(QUERY, datasets=("accounts",))
            console.print(f"\nthe analyst at bank-a proposed {identifier[:16]}...; approved "
                          "by both banks' officers")
            cluster.wait([identifier], timeout=120)
            result = cluster.result(identifier)
            union = pd.concat(frames.values())
            table = Table("segment", "accounts", "mean balance", "flagged", "overdrawn",
                          "plaintext check", title="Accounts across the two banks")
            for segment, accounts, mean, flagged, overdrawn in result["rows"]:
                rows = union[union["segment"] == segment]
                table.add_row(segment, str(accounts), f"{mean:,.2f}", str(flagged),
                              str(overdrawn), f"{len(rows)} / {rows['balance'].mean():,.2f}")
            console.print(table)
            _overlap(cluster, frames)
            for name in BANKS:
                checked = cluster.client(name, "admin").request("GET", "/audit/verify")
                console.print(f"audit log of {name}: {checked['entries']} entries, verified "
                              f"{checked['verified']}")
            console.print(f"\nThreat model (from the run): {result['threat_model']['summary']}."
                          f"\nDemo finished in {time.monotonic() - started:.1f} s.")
        finally:
            cluster.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
