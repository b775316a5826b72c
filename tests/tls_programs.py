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
