"""Run one function per party of an in-memory network, as threads (for protocol
layers below ``Session``, which ``concilium.testing.run_parties`` does not reach)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from concilium.net import MemoryNetwork


def together(network: MemoryNetwork, program: Callable[[int], Any],
             timeout: float = 120.0) -> list[Any]:
    """``program(party)`` on every party of ``network``; their results, or the first
    failure raised."""
    results: list[Any] = [None] * network.parties
    failures: list[BaseException] = []

    def run(party: int) -> None:
        try:
            results[party] = program(party)
        except BaseException as error:  # surfaced below
            failures.append(error)

    threads = [threading.Thread(target=run, args=(p,)) for p in range(network.parties)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    if failures:
        raise failures[0]
    return results
