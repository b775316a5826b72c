"""Programs run by party processes in the TLS tests (importable by module:function)."""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

from concilium.data import Session


def engine_ops(session: Session, n: int = 1000) -> dict[str, Any]:
    """The engine's operations on fixed inputs: results must equal the in-memory run."""
    me = session.party
    x = np.arange(n, dtype=np.int64) * 3 - 7
    y = np.arange(n, dtype=np.int64) % 11 - 5
    f = np.linspace(-4.0, 4.0, n)
    a = session.input(0, x if me == 0 else None)
    b = session.input(1, y if me == 1 else None)
    c = session.input(2, f if me == 2 else None, fixed=True)
    return {
        "mul": (a * b).reveal(),
        "sum": (a + b * 3 - 2).sum().reveal(),
        "matmul": (a[: n // 10 * 10].reshape(-1, 10) @ b[:10]).reveal(),
        "fixed": (c * c).reveal(),
        "fixed_fast": c.multiply(c, truncation="fast").reveal(),
        "scaled": (c * 0.25 + a).reveal(),
    }


def slow_multiplications(session: Session, rounds: int = 200, n: int = 20000) -> int:
    """Many rounds of work, so a test can kill a party in the middle."""
    a = session.input(0, np.arange(n) if session.party == 0 else None)
    for _ in range(rounds):
        a = a * a
        time.sleep(0.01)
    return int(np.asarray(a.reveal()).sum() % 1000)


def large_multiplications(session: Session, rounds: int = 400, n: int = 4_000_000) -> int:
    """Frames of 32 MB, larger than the sockets' buffers: a stalled peer fills them."""
    a = session.input(0, np.arange(n) if session.party == 0 else None)
    for _ in range(rounds):
        a = a * a
    return int(np.asarray(a[:10].reveal()).sum() % 1000)


def exit_abruptly(session: Session) -> None:
    """Party 1 dies without a word after the inputs."""
    a = session.input(0, np.ones(10, dtype=int) if session.party == 0 else None)
    if session.party == 1:
        os._exit(3)
    (a * a).reveal()


def fail_on_party_two(session: Session) -> None:
    a = session.input(0, np.ones(10, dtype=int) if session.party == 0 else None)
    if session.party == 2:
        raise ValueError("party 2's program failed")
    (a * a).reveal()


def secure_ops(session: Session, n: int = 2000) -> dict[str, Any]:
    """Comparisons, division, sigmoid and a sort with payload, on fixed inputs."""
    from concilium.data import functions as fn

    me = session.party
    x = np.arange(n, dtype=np.int64) * 7919 % 1000 - 500
    y = np.arange(n, dtype=np.int64) % 13 - 6
    f = np.linspace(-6.0, 6.0, n)
    a = session.input(0, x if me == 0 else None)
    b = session.input(1, y if me == 1 else None)
    c = session.input(2, f if me == 2 else None, fixed=True)
    (keys,), (payload,) = fn.sort(a, [b])
    return {
        "less": (a < b).reveal(),
        "equal": (a == b * 0).reveal(),
        "divide": (a / (b * b + 1)).reveal(),
        "sigmoid": fn.sigmoid(c).reveal(),
        "sorted": keys.reveal(),
        "payload": payload.reveal(),
        "max": a.max().reveal(),
    }


def governed_query(session: Session, manifest_path: str, node_dirs: list[str],
                   audit_dir: str) -> dict[str, Any] | None:
    """A governed run over TLS: approvals, policy, audit log with transcript digests."""
    import datetime
    from pathlib import Path

    import pandas as pd

    from concilium.data.dataset import Dataset
    from concilium.data.schema import Schema
    from concilium.governance.approval import sign_approval
    from concilium.governance.audit import AuditLog
    from concilium.governance.consortium import load_manifest
    from concilium.governance.identity import load_node, load_signing_key
    from concilium.governance.policy import OutputPolicy
    from concilium.governance.proposal import DatasetEntry, DatasetRules, build_spec
    from concilium.node.runner import run_computation

    manifest = load_manifest(manifest_path)
    names = {i: p.name for i, p in enumerate(manifest.parties)}
    identity = load_node(node_dirs[session.party])
    key = load_signing_key(identity)
    schema = Schema.from_mapping({"ward": {"type": "category", "domain": ["a", "b"]},
                                  "stay": {"type": "fixed", "low": 0, "high": 100}})
    frame = pd.DataFrame({"ward": ["a", "b"] * 10, "stay": [float(session.party + k)
                                                           for k in range(20)]})
    catalog = [DatasetEntry("visits", names[k], schema.as_mapping(),
                            DatasetRules(OutputPolicy(min_cohort=5))) for k in range(3)]
    spec = build_spec("SELECT ward, COUNT(*) AS n, AVG(stay) AS s FROM visits GROUP BY ward "
                      "ORDER BY ward", ["visits"], [names[0]], "dr-lee", manifest, catalog)
    fixed = datetime.datetime(2026, 11, 23, tzinfo=datetime.UTC)
    approvals = [sign_approval(spec, "approve", "officer-1", names[k],
                               load_signing_key(load_node(node_dirs[k])), time=fixed)
                 for k in range(3)]
    log = AuditLog(Path(audit_dir) / f"{names[session.party]}.sqlite", names[session.party],
                   key)
    try:
        result = run_computation(
            session, spec, approvals, manifest,
            {"visits": Dataset.from_frame("visits", frame, schema)}, log,
            me=names[session.party], own=[catalog[session.party]], checkpoints=True)
    finally:
        log.close()
    if result is None:  # only the recipient, party 0, receives the result
        return None
    return {"n": list(result["n"]), "s": list(result["s"])}



def weighted_total(session: Session, weights: list[float]) -> float:
    """Party 0's hours times party 1's rates, weighted by public weights: one opened total."""
    me = session.party
    hours = session.input(0, np.array([7.5, 8.25, 6.0]) if me == 0 else None, fixed=True)
    rates = session.input(1, np.array([42.0, 55.5, 61.25]) if me == 1 else None, fixed=True)
    return float(((hours * np.array(weights)) @ rates).reveal())
