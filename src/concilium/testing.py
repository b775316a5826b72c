"""Run a whole consortium in one process: ``run_parties(3, program)``, or
``run_parties(program, protocol="reference")`` (the protocol's own number of
compute parties).

Each compute party runs ``program(session)`` in its own thread over the
in-memory transport (SPMD); outside parties (data owners or recipients that
are not compute parties) run their own functions. Backends come from the
protocol registry (:mod:`concilium.mpc.protocols`), which also offers the
plaintext ``reference`` backend for fast tests of the layers above. If any party raises, the
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
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from concilium.data.outside import OutsideParty
from concilium.data.secret_array import Rounding
from concilium.data.session import Session
from concilium.errors import CheatingDetected, ConfigurationError, ProtocolAbort
from concilium.mpc.protocols import implemented
from concilium.mpc.protocols import protocol as registry
from concilium.net.cheating import CheatingChannel, Injection
from concilium.net.memory import MemoryNetwork
from concilium.ring.fixed import FixedPointCodec
from concilium.ring.memory import tune_allocator

__all__ = ["FINISH_TAG", "PROTOCOLS", "CheatOutcome", "run_parties", "run_with_cheater"]

T = TypeVar("T")

#: The protocols the generic suite runs on: those with a backend (``reference``
#: included) that run on three compute parties, as the suite's programs do.
#: ``additive`` (two parties) has its own suite, ``tests/test_additive.py``.
PROTOCOLS = tuple(name for name in implemented() if registry(name).parties_problem(3) is None)


class _Outcome:
    def __init__(self, parties: int) -> None:
        self.results: list[Any] = [None] * parties
        self.errors: list[BaseException | None] = [None] * parties
        self.first_failure: int | None = None
        self.lock = threading.Lock()


def run_parties(
    parties: int | Callable[[Session], T],
    program: Callable[[Session], T] | None = None,
    *,
    outside: Sequence[Callable[[OutsideParty], Any]] = (),
    protocol: str = "rep3",
    truncation: Rounding = "reliable",
    codec: FixedPointCodec | None = None,
    timeout: float = 60.0,
    network: MemoryNetwork | None = None,
) -> list[Any]:
    """Run ``program`` on each of ``parties`` compute parties and return their results.

    ``parties`` may be left out (``run_parties(program, protocol=...)``): the
    protocol's own number of compute parties. ``outside``: functions for outside
    parties, which get network indices ``parties, parties + 1, ...`` in order;
    their results follow the compute parties' in the returned list. ``network``:
    pass a :class:`~concilium.net.memory.MemoryNetwork` to inspect traffic
    afterwards.
    """
    spec = registry(protocol)
    if callable(parties):
        if program is not None:
            raise ConfigurationError("give the program once: run_parties(program) or "
                                     "run_parties(parties, program)")
        program, parties = parties, spec.default_parties
    if program is None:
        raise ConfigurationError("run_parties needs the program every party runs")
    if not spec.implemented:
        raise ConfigurationError(f"protocol {protocol} is not implemented yet; available: "
                                 f"{', '.join(PROTOCOLS)}")
    problem = spec.parties_problem(parties)
    if problem:
        raise ConfigurationError(problem)
    run = program
    total = parties + len(outside)
    net = network if network is not None else MemoryNetwork(total, timeout=timeout)
    if net.parties != total:
        raise ConfigurationError(f"the network has {net.parties} parties; {total} are needed")
    compute = tuple(range(parties))
    outcome = _Outcome(total)
    tune_allocator()

    def compute_party(index: int) -> Any:
        session = Session(spec.create_backend(net.channel(index), compute), codec=codec,
                          truncation=truncation)
        return run(session)

    def outside_party(index: int) -> Any:
        handle = OutsideParty(net.channel(index), compute, protocol=protocol, codec=codec)
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
        detail = f": {error}" if isinstance(error, CheatingDetected) else ""
        net.abort(f"party {index} failed with {type(error).__name__}{detail}")


#: The tag of the closing round of :func:`run_with_cheater`, above every plan tag.
FINISH_TAG = (1 << 62) - 1


@dataclass(frozen=True)
class CheatOutcome:
    """What every party of a run with a cheater ended with (a value or the exception
    it raised), the cheater's channel (what it sent, whether it tampered) and the
    network (``record=True``: what each party received)."""

    results: list[Any]
    cheater: CheatingChannel
    network: MemoryNetwork


def run_with_cheater(program: Callable[[Session], Any], cheater: int,
                     injection: Injection | None, *, protocol: str = "rep4",
                     parties: int | None = None, timeout: float = 10.0,
                     record: bool = False) -> CheatOutcome:
    """Run ``program`` on every compute party, party ``cheater`` behind a
    :class:`~concilium.net.cheating.CheatingChannel` that applies ``injection`` (None:
    it only logs what it sends), and return every party's outcome.

    Every party ends with a closing round (each sends every other compute party one
    byte and waits for theirs), as a node's run ends by comparing transcript digests
    (:meth:`concilium.net.tls_channel.TlsChannel.finish`): a party that aborted makes
    every other party abort too, so no party keeps a result of a run that failed
    anywhere."""
    spec = registry(protocol)
    count = spec.default_parties if parties is None else parties
    net = MemoryNetwork(count, timeout=timeout, record=record)
    compute = tuple(range(count))
    channels = [CheatingChannel(net.channel(i), injection) if i == cheater else net.channel(i)
                for i in range(count)]
    results: list[Any] = [None] * count

    def body(index: int) -> None:
        channel = channels[index]
        try:
            value = program(Session(spec.create_backend(channel, compute)))
            for peer in compute:
                if peer != index:
                    channel.send(peer, FINISH_TAG, np.zeros(1, dtype=np.uint8))
            for peer in compute:
                if peer != index:
                    channel.receive(peer, FINISH_TAG)
            results[index] = value
        except Exception as error:
            results[index] = error
            detail = f": {error}" if isinstance(error, CheatingDetected) else ""
            net.abort(f"party {index} failed with {type(error).__name__}{detail}")

    threads = [threading.Thread(target=body, args=(i,), name=f"concilium-party-{i}",
                                daemon=True) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    cheating = channels[cheater]
    assert isinstance(cheating, CheatingChannel)
    return CheatOutcome(results, cheating, net)
