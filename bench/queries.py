"""Query benchmark: SQL over secret tables, end to end, next to DuckDB on the plaintext.

    python bench/queries.py --json
    python bench/queries.py --queries grouped_avg_count --rows 100000
    python bench/queries.py --transport tls       # the secure part over mutual TLS
    python bench/queries.py --dp 0.5 --queries grouped_avg_count,sum_money
    python bench/queries.py --differencing 100 --queries count_all --rows 333334

With ``--dp RHO`` each query runs twice in the same invocation, without and with
``dp = { rho = RHO }``; the record adds ``noise_rounds``, ``noise_bytes_per_party``
and ``noise_bytes_per_cell`` (per released cell: per group of the result). With
``--differencing N`` each owner holds N earlier releases (their predicates) and the
query runs with and without ``min_difference = 5``; ``differencing_seconds`` is
what the check adds.

Each record has the engine's fields: ``op``, ``n`` (rows per owner), ``owners``,
``protocol``, ``transport``, ``parties``, ``seconds`` (median of ``--repeats``
runs, end to end: checking every owner's DataFrame against its schema, the
owners' local DuckDB work, sharing, the secure part and the reveal),
``numpy_seconds`` (here the *plaintext baseline*: DuckDB running the same SQL on
the union of the owners' tables, same run; also given as
``plaintext_seconds``), ``ratio``, ``rounds`` and ``bytes_per_party`` (the
busiest compute party), and ``secure_seconds`` (the part after the inputs are
checked and computed locally).

Data are synthetic admissions (age, condition among 20, length of stay,
readmitted) at three hospitals; for ``join_count`` and ``grouped_join`` (by
five regions) bank A's customers (``n`` unique ids) joined with banks B's and
C's ``n`` accounts; for ``sum_money`` three insurers' claims, a cost in cents
from 0 to 10^6. Drawn with numpy's seeded generator: test data, not secrets.
``n`` is rows per owner, except for the joins (rows per table).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from concilium.data.dataset import Dataset
from concilium.data.schema import Schema
from concilium.data.session import Session
from concilium.governance.policy import OutputPolicy
from concilium.query import TableEntry, plan_query, run_plan
from concilium.testing import run_parties
from engine import emit

CONDITIONS = [f"c{k:02d}" for k in range(20)]
SCHEMA = Schema.from_mapping({
    "age": {"type": "int", "low": 0, "high": 120},
    "condition": {"type": "category", "domain": CONDITIONS},
    "stay": {"type": "fixed", "low": 0, "high": 365},
    "readmitted": {"type": "int", "low": 0, "high": 1},
})
QUERIES = {
    "grouped_avg_count": "SELECT condition, COUNT(*), AVG(readmitted) FROM admissions "
                         "GROUP BY condition",
    "grouped_stats": "SELECT condition, COUNT(*), AVG(stay), STDDEV(stay), MAX(age) "
                     "FROM admissions WHERE age >= 18 GROUP BY condition",
    "median": "SELECT MEDIAN(stay) FROM admissions",
    "join_count": "SELECT COUNT(*) FROM customers c JOIN accounts a ON c.id = a.customer",
    "grouped_join": "SELECT c.region, COUNT(*), AVG(a.balance) FROM customers c "
                    "JOIN accounts a ON c.id = a.customer GROUP BY c.region",
    "sum_money": "SELECT SUM(cost) FROM claims",
    "count_all": "SELECT COUNT(*) FROM admissions WHERE age >= 18",
}
JOINS = ("join_count", "grouped_join")
REGIONS = ["north", "south", "east", "west", "central"]
CUSTOMERS = Schema.from_mapping({"id": {"type": "key", "unique": True},
                                 "age": {"type": "int", "low": 0, "high": 120},
                                 "region": {"type": "category", "domain": REGIONS}})
#: a money column in cents, bounded 0 to 10^6
CLAIMS = Schema.from_mapping({"cost": {"type": "fixed", "low": 0, "high": 10**6,
                                       "decimals": 2}})
ACCOUNTS = Schema.from_mapping({"customer": {"type": "key"},
                                "balance": {"type": "fixed", "low": -10**6, "high": 10**6}})
# rows per owner: three owners; the median's 10^5 rows are the three tables together
DEFAULT_ROWS = {"grouped_avg_count": 10**6, "grouped_stats": 10**6, "median": 33_334,
                "join_count": 10**5, "grouped_join": 10**5, "sum_money": 10**6,
                "count_all": 10**6}


def owner_frame(seed: int, rows: int) -> pd.DataFrame:
    generator = np.random.default_rng(seed)
    return pd.DataFrame({
        "age": generator.integers(0, 100, rows),
        "condition": pd.Categorical.from_codes(generator.integers(0, 20, rows),
                                               CONDITIONS).astype(str),
        "stay": np.round(generator.gamma(2.0, 2.5, rows).clip(0, 365), 2),
        "readmitted": (generator.random(rows) < 0.15).astype(np.int64),
    })


def join_tables(rows: int) -> dict[str, list[pd.DataFrame]]:
    """Bank A's ``rows`` customers (unique ids); bank B's and C's ``rows`` accounts
    together, most of them of A's customers."""
    generator = np.random.default_rng(21)
    ids = generator.permutation(4 * rows)[:rows]
    owners = np.r_[ids, 4 * rows + np.arange(rows // 10)]
    accounts = pd.DataFrame({"customer": generator.choice(owners, rows),
                             "balance": np.round(generator.normal(500, 2000, rows), 2)})
    half = rows // 2
    customers = pd.DataFrame({"id": ids, "age": generator.integers(18, 90, rows),
                              "region": generator.choice(REGIONS, rows)})
    return {"customers": [customers], "accounts": [accounts.iloc[:half], accounts.iloc[half:]]}


def claims_frame(seed: int, rows: int) -> pd.DataFrame:
    """Costs in cents up to 10^6 (most small, some near the bound)."""
    generator = np.random.default_rng(seed)
    cost = np.minimum(generator.lognormal(7, 2, rows), 10**6)
    return pd.DataFrame({"cost": np.round(cost, 2)})


def _schemas() -> dict[str, Schema]:
    return {"admissions": SCHEMA, "customers": CUSTOMERS, "accounts": ACCOUNTS,
            "claims": CLAIMS}


def _run_once(sql: str, tables: dict[str, list[pd.DataFrame]],
              policy: OutputPolicy | None = None, releases: int = 0
              ) -> tuple[float, float, list[Any]]:
    start = time.perf_counter()
    schemas = _schemas()
    history = tuple((f"{k:064x}", f"age >= {k % 90}") for k in range(releases))
    datasets = {name: [dataclasses.replace(Dataset.from_frame(name, f, schemas[name]),
                                           releases=history) for f in frames]
                for name, frames in tables.items()}
    first_owner = {"customers": 0, "accounts": 1, "admissions": 0, "claims": 0}
    entries = {name: TableEntry(schemas[name], tuple(first_owner[name] + k
                                                     for k in range(len(frames))))
               for name, frames in tables.items()}
    policy = policy or OutputPolicy()
    plan = plan_query(sql, entries, policy=policy)
    secure_start: list[float] = []

    def held(party: int) -> dict[str, Dataset]:
        return {name: datasets[name][party - first_owner[name]] for name in datasets
                if 0 <= party - first_owner[name] < len(datasets[name])}

    def program(session: Session) -> Any:
        before = session.stats()
        secure_start.append(time.perf_counter())
        result = run_plan(session, plan, held(session.party), policy=policy)
        spent = session.stats().since(before)
        return result, spent.bytes_sent, spent.rounds

    results = run_parties(3, program)
    end = time.perf_counter()
    return end - start, end - min(secure_start), results


def _tables_for(name: str, rows: int) -> dict[str, list[pd.DataFrame]]:
    if name in JOINS:
        return join_tables(rows)
    if name == "sum_money":
        return {"claims": [claims_frame(seed, rows) for seed in (11, 12, 13)]}
    return {"admissions": [owner_frame(seed, rows) for seed in (11, 12, 13)]}


def tls_party(session: Session, query: str, rows: int, repeats: int) -> list[dict[str, Any]]:
    """A party process of ``--transport tls`` (queries:tls_party): loads only its own
    tables, then times the secure part (local DuckDB work, sharing, MPC, reveal)."""
    from engine import _barrier

    schemas = _schemas()
    tables = _tables_for(query, rows)
    first_owner = {"customers": 0, "accounts": 1, "admissions": 0, "claims": 0}
    entries = {name: TableEntry(schemas[name], tuple(first_owner[name] + k
                                                     for k in range(len(frames))))
               for name, frames in tables.items()}
    mine = {name: Dataset.from_frame(name, frames[session.party - first_owner[name]],
                                     schemas[name])
            for name, frames in tables.items()
            if 0 <= session.party - first_owner[name] < len(frames)}
    plan = plan_query(QUERIES[query], entries)
    samples = []
    for index in range(repeats + 1):
        _barrier(session)
        before, start = session.stats(), time.perf_counter()
        run_plan(session, plan, mine)
        end = time.perf_counter()
        if index:  # the first run warms up
            samples.append({"start": start, "end": end,
                            "bytes": session.stats().bytes_sent - before.bytes_sent})
    _barrier(session)
    return samples


def run_query_tls(name: str, rows: int, repeats: int) -> dict[str, Any]:
    """The secure part over mutual TLS between three processes, next to the same
    part in memory, in the same invocation."""
    from engine import TlsRunner

    seconds, per_party = TlsRunner("queries:tls_party").timed(
        {"query": name, "rows": rows, "repeats": repeats}, repeats)
    memory = run_query(name, rows, repeats)
    return {"op": name, "n": rows, "protocol": "rep3", "transport": "tls", "parties": 3,
            "seconds": seconds, "memory_seconds": memory["secure_seconds"],
            "tls_over_memory": seconds / memory["secure_seconds"],
            "numpy_seconds": memory["plaintext_seconds"],
            "plaintext_seconds": memory["plaintext_seconds"],
            "ratio": seconds / memory["plaintext_seconds"], "rounds": memory["rounds"],
            "bytes_per_party": max(p[-1]["bytes"] for p in per_party),
            "sql": QUERIES[name]}


def run_query(name: str, rows: int, repeats: int) -> dict[str, Any]:
    sql = QUERIES[name]
    tables = _tables_for(name, rows)
    connection = duckdb.connect()
    for table, frames in tables.items():
        connection.register(table, pd.concat(frames, ignore_index=True))

    def plaintext() -> float:
        start = time.perf_counter()
        connection.sql(sql).df()
        return time.perf_counter() - start

    plaintext()
    baseline = statistics.median(plaintext() for _ in range(repeats))
    _run_once(sql, tables)  # warm-up
    runs = [_run_once(sql, tables) for _ in range(repeats)]
    seconds = statistics.median(r[0] for r in runs)
    secure = statistics.median(r[1] for r in runs)
    last = runs[-1][2]
    return {
        "op": name, "n": rows, "total_rows": sum(len(f) for fs in tables.values() for f in fs),
        "owners": sum(len(fs) for fs in tables.values()), "protocol": "rep3",
        "transport": "memory", "parties": 3, "seconds": seconds,
        "numpy_seconds": baseline, "plaintext_seconds": baseline,
        "baseline": "duckdb on the plaintext union", "ratio": seconds / baseline,
        "secure_seconds": secure, "rounds": max(r[2] for r in last),
        "bytes_per_party": max(r[1] for r in last), "sql": sql,
    }


def run_variants(name: str, rows: int, repeats: int, policy: OutputPolicy,
                 releases: int = 0) -> dict[str, Any]:
    """The query without and with ``policy`` (and ``releases`` earlier releases per
    owner), alternating, in the same invocation: what the policy adds."""
    sql = QUERIES[name]
    tables = _tables_for(name, rows)
    _run_once(sql, tables)  # warm-up
    _run_once(sql, tables, policy, releases)
    plain, governed = [], []
    for _ in range(repeats):
        plain.append(_run_once(sql, tables))
        governed.append(_run_once(sql, tables, policy, releases))
    def cost(runs: list[Any]) -> tuple[int, int]:
        return max(r[2] for r in runs[-1][2]), max(r[1] for r in runs[-1][2])
    (rounds, sent), (rounds_on, sent_on) = cost(plain), cost(governed)
    frame = governed[-1][2][0][0]
    cells = max(1, len(frame))
    secure = statistics.median(r[1] for r in plain)
    secure_on = statistics.median(r[1] for r in governed)
    return {"op": name, "n": rows, "protocol": "rep3", "transport": "memory", "parties": 3,
            "policy": policy.as_dict(), "releases": releases,
            "seconds": statistics.median(r[0] for r in governed),
            "baseline_seconds": statistics.median(r[0] for r in plain),
            "secure_seconds": secure_on, "baseline_secure_seconds": secure,
            "added_seconds": secure_on - secure, "rounds": rounds_on,
            "baseline_rounds": rounds, "noise_rounds": rounds_on - rounds,
            "bytes_per_party": sent_on, "baseline_bytes_per_party": sent,
            "noise_bytes_per_party": sent_on - sent, "released_cells": cells,
            "noise_bytes_per_cell": (sent_on - sent) / cells, "sql": sql}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--queries", default=",".join(QUERIES))
    parser.add_argument("--rows", type=int, default=0, help="rows per owner (default per query)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--transport", default="memory", choices=["memory", "tls"],
                        help="tls: the secure part between 3 OS processes over mutual TLS")
    parser.add_argument("--dp", type=float, default=0.0,
                        help="also run each query with dp = { rho = DP }")
    parser.add_argument("--differencing", type=int, default=0,
                        help="also run with min_difference and this many earlier releases")
    args = parser.parse_args(argv)
    records = []
    if args.dp or args.differencing:
        policy = OutputPolicy(dp_rho=args.dp or None, min_difference=5 if args.differencing
                              else 0)
        for name in args.queries.split(","):
            record = run_variants(name, args.rows or DEFAULT_ROWS[name], args.repeats,
                                  policy, args.differencing)
            records.append(record)
            if not args.json:
                print(f"{name:>20} rounds {record['baseline_rounds']} -> {record['rounds']}, "
                      f"bytes +{record['noise_bytes_per_party']:,} "
                      f"({record['noise_bytes_per_cell']:.1f} per cell), secure part "
                      f"{record['baseline_secure_seconds']:.2f} -> "
                      f"{record['secure_seconds']:.2f} s", file=sys.stderr)
        return emit(records, args.json)
    run = run_query_tls if args.transport == "tls" else run_query
    for name in args.queries.split(","):
        record = run(name, args.rows or DEFAULT_ROWS[name], args.repeats)
        records.append(record)
        if not args.json:
            if args.transport == "tls":
                print(f"{name:>20} n={record['n']:,}  tls {record['seconds']:.2f} s  memory "
                      f"{record['memory_seconds']:.2f} s  (x{record['tls_over_memory']:.2f})  "
                      f"{record['bytes_per_party']:,} bytes", file=sys.stderr)
                continue
            print(f"{name:>20} {record['total_rows']:,} rows  {record['seconds']:.2f} s  "
                  f"(secure part {record['secure_seconds']:.2f} s)  duckdb "
                  f"{record['plaintext_seconds']:.3f} s  rounds {record['rounds']}  "
                  f"{record['bytes_per_party']:,} bytes", file=sys.stderr)
    return emit(records, args.json)


if __name__ == "__main__":
    raise SystemExit(main())
