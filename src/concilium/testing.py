"""Run a whole consortium in one process: ``run_parties(3, program)``.

Each compute party runs ``program(session)`` in its own thread over the
in-memory transport (SPMD); outside parties (data owners or recipients that
are not compute parties) run their own functions. If any party raises, the
run is aborted on every party and the first error is re-raised here, with a
note naming the party.

    >>> import numpy as np
    >>> from concilium.testing import run_parties
    >>> def program(session):
    ...     x = session.input(0, np.array([1, 2, 3]) if session.party == 0 else None)
    ...     y = session.input(1, np.array([4, 5, 6]) if session.party == 1 else None)
    ...     return (x * y).sum().reveal()
    >>> run_parties(3, program)
    [32, 32, 32]
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from concilium.data.outside import OutsideParty
from concilium.data.secret_array import Rounding
from concilium.data.session import Session
from concilium.errors import ConfigurationError, ProtocolAbort
from concilium.mpc.rep3 import Rep3
from concilium.net.memory import MemoryNetwork
from concilium.ring.fixed import FixedPointCodec
from concilium.ring.memory import tune_allocator

__all__ = ["PROTOCOLS", "run_parties"]

T = TypeVar("T")

PROTOCOLS = ("rep3",)


class _Outcome:
    def __init__(self, parties: int) -> None:
        self.results: list[Any] = [None] * parties
        self.errors: list[BaseException | None] = [None] * parties
        self.first_failure: int | None = None
        self.lock = threading.Lock()


def run_parties(
    parties: int,
    program: Callable[[Session], T],
    *,
    outside: Sequence[Callable[[OutsideParty], Any]] = (),
    protocol: str = "rep3",
    truncation: Rounding = "reliable",
    codec: FixedPointCodec | None = None,
    timeout: float = 60.0,
    network: MemoryNetwork | None = None,
) -> list[Any]:
    """Run ``program`` on each of ``parties`` compute parties and return their results.

    ``outside``: functions for outside parties, which get network indices
    ``parties, parties + 1, ...`` in order; their results follow the compute
    parties' in the returned list. ``network``: pass a
    :class:`~concilium.net.memory.MemoryNetwork` to inspect traffic afterwards.
    """
    if protocol not in PROTOCOLS:
        raise ConfigurationError(
            f"unknown protocol {protocol!r}; available: {', '.join(PROTOCOLS)}"
        )
    if parties != 3:
        raise ConfigurationError(f"protocol rep3 runs on exactly 3 compute parties, not {parties}")
    total = parties + len(outside)
    net = network if network is not None else MemoryNetwork(total, timeout=timeout)
    if net.parties != total:
        raise ConfigurationError(f"the network has {net.parties} parties; {total} are needed")
    compute = tuple(range(parties))
    outcome = _Outcome(total)
    tune_allocator()

    def compute_party(index: int) -> Any:
        session = Session(Rep3(net.channel(index), compute), codec=codec, truncation=truncation)
        return program(session)

    def outside_party(index: int) -> Any:
        handle = OutsideParty(net.channel(index), compute, codec=codec)
        return outside[index - parties](handle)

    threads = [
        threading.Thread(
            target=_run_one,
            args=(net, outcome, index, compute_party if index < parties else outside_party),
            name=f"concilium-party-{index}",
            daemon=True,
        )
        for index in range(total)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if outcome.first_failure is not None:
        error = outcome.errors[outcome.first_failure]
        assert error is not None
        raise error
    return outcome.results


def _run_one(net: MemoryNetwork, outcome: _Outcome, index: int,
             body: Callable[[int], Any]) -> None:
    try:
        outcome.results[index] = body(index)
    except BaseException as error:
        with outcome.lock:
            outcome.errors[index] = error
            caused_by_abort = isinstance(error, ProtocolAbort) and net.mailboxes[
                index].aborted is not None
            if outcome.first_failure is None and not caused_by_abort:
                outcome.first_failure = index
                error.add_note(f"(raised by party {index}; the run was aborted on all parties)")
            elif outcome.first_failure is None:
                outcome.first_failure = index
        net.abort(f"party {index} failed with {type(error).__name__}")
