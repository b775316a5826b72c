"""The two-party ``additive`` backend (no dealer: triples from OT), driven through
``Session`` and the ops layer exactly as the other backends are: every result
against numpy, every truncation within its contract, outside owners and
recipients, strict single use of triples, and a peer that stops aborting the
other party."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from concilium.data import Session
from concilium.data import functions as fn
from concilium.errors import ConfigurationError, PeerUnavailable, ProtocolAbort
from concilium.mpc.additive import MINIMUM_BATCH, Additive, AdditiveOutsideParty
from concilium.net import MemoryNetwork
from tests.helpers_threads import together

DATA = np.random.default_rng(11)  # test data, not secrets


def _run(program: Callable[[Session], Any], *, outside: Callable[[Any], Any] | None = None,
         network: MemoryNetwork | None = None, parties: int = 2) -> list[Any]:
    """``program`` on ``parties`` additive compute parties (and ``outside`` on the
    next party)."""
    network = network or MemoryNetwork(parties + (1 if outside else 0))

    def party(index: int) -> Any:
        if index == parties:
            assert outside is not None
            return outside(network.channel(parties))
        return program(Session(Additive(network.channel(index), tuple(range(parties)))))

    return together(network, party)


def _inputs(session: Session, x: Any, y: Any, fixed: bool = True) -> tuple[Any, Any]:
    """``x`` from party 0 and ``y`` from the last compute party."""
    last = session.backend.compute_parties[-1]
    return (session.input(0, x if session.party == 0 else None, fixed=fixed),
            session.input(last, y if session.party == last else None, fixed=fixed))


def test_integer_products_and_matrix_products_wrap_like_numpy() -> None:
    x = DATA.integers(-2**62, 2**62, 4000)
    y = DATA.integers(-2**62, 2**62, 4000)
    m, v = DATA.integers(-1000, 1000, (30, 20)), DATA.integers(-1000, 1000, (20, 4))

    def program(session: Session) -> Any:
        a, b = _inputs(session, x, y, fixed=False)
        p, q = _inputs(session, m, v, fixed=False)
        return (a * b).reveal(), (a + b - 7).reveal(), (p @ q).reveal(), (p @ q[:, 0]).reveal()

    product, total, matrix, vector = _run(program)[0]
    with np.errstate(over="ignore"):
        assert np.array_equal(product, x * y) and np.array_equal(total, x + y - 7)
    assert np.array_equal(matrix, m @ v) and np.array_equal(vector, m @ v[:, 0])


def test_fixed_point_products_meet_both_truncation_contracts() -> None:
    x = DATA.uniform(-2**14, 2**14, 20_000)  # encoded products up to 2^60 (< 2^62)
    y = DATA.uniform(-2**14, 2**14, 20_000)

    def program(session: Session) -> Any:
        a, b = _inputs(session, x, y)
        return (a * b).reveal(), a.multiply(b, truncation="fast").reveal()

    reliable, fast = _run(program)[0]
    rounded = np.round(x * 2**16) * np.round(y * 2**16) / 2**32  # the encoded product
    assert np.abs(reliable - rounded).max() <= 2 * 2**-16  # floor or floor + 1: never more
    wrong = np.abs(fast - rounded) > 1  # fast fails with probability |z| / 2^64
    expected = np.mean(np.abs(x * y) * 2.0**32 / 2.0**64)  # about 1.6% here
    assert 0.5 * expected < wrong.mean() < 1.5 * expected
    assert np.abs(fast - rounded)[~wrong].max() <= 2 * 2**-16
    assert abs(np.mean(reliable - rounded)) < 2**-17  # unbiased rounding


@pytest.mark.parametrize("parties", [3, 5])
def test_more_parties_truncate_exactly_in_both_modes(parties: int) -> None:
    # local shifts would fail with n > 2 summands; random-bit truncation never does
    edges = np.array([2**29, -2**29, 0.0, 2**-16, -2**-16])  # products up to 2^61
    x = np.concatenate([DATA.uniform(-2**14, 2**14, 3000), edges])
    y = np.concatenate([DATA.uniform(-2**14, 2**14, 3000), np.ones(5)])

    def program(session: Session) -> Any:
        a, b = _inputs(session, x, y)
        return (a * b).reveal(), a.multiply(b, truncation="fast").reveal()

    reliable, fast = _run(program, parties=parties)[0]
    rounded = np.round(x * 2**16) * np.round(y * 2**16) / 2**32
    for got in (reliable, fast):
        assert np.abs(got - rounded).max() <= 2 * 2**-16
    assert abs(np.mean(reliable - rounded)) < 2**-16  # unbiased rounding


@pytest.mark.parametrize("parties", [3, 5])
def test_more_parties_compute_products_comparisons_and_a_sort(parties: int) -> None:
    edges = np.array([0, -1, 1, 2**62, -2**62, 2**62 - 1])
    x = np.concatenate([DATA.integers(-2**62, 2**62, 500), edges])
    y = np.concatenate([DATA.integers(-2**62, 2**62, 500), edges[::-1]])

    def program(session: Session) -> Any:
        a, b = _inputs(session, x, y, fixed=False)
        (ordered,), _ = fn.sort(a[:200])
        return ((a * b).reveal(), (a < b).reveal(), (a == b).reveal(), ordered.reveal(),
                (a @ b).reveal())

    product, less, equal, ordered, dot = _run(program, parties=parties)[0]
    with np.errstate(over="ignore"):
        assert np.array_equal(product, x * y) and dot == np.sum(x * y)
    assert np.array_equal(less, x < y) and np.array_equal(equal, x == y)
    assert np.array_equal(ordered, np.sort(x[:200]))


def test_comparisons_division_and_functions_over_the_full_range() -> None:
    edges = np.array([0, -1, 1, 2**62, -2**62, 2**62 - 1])
    x = np.concatenate([DATA.integers(-2**62, 2**62, 3000), edges])
    y = np.concatenate([DATA.integers(-2**62, 2**62, 3000), edges[::-1]])
    u, w = DATA.uniform(-8, 8, 2000), DATA.uniform(0.5, 100, 2000)

    def program(session: Session) -> Any:
        a, b = _inputs(session, x, y, fixed=False)
        p, q = _inputs(session, u, w)
        return ((a < b).reveal(), (a == b).reveal(), fn.maximum(a, b).reveal(),
                (p / q).reveal(), fn.sigmoid(p).reveal(), fn.sqrt(q).reveal())

    less, equal, biggest, quotient, sigmoid, root = _run(program)[0]
    assert np.array_equal(less, x < y) and np.array_equal(equal, x == y)
    assert np.array_equal(biggest, np.maximum(x, y))
    assert np.abs(quotient - u / w).max() < 1e-3
    assert np.abs(sigmoid - 1 / (1 + np.exp(-u))).max() < 1e-3
    assert np.abs(root - np.sqrt(w)).max() < 1e-3


def test_outside_owners_and_recipients() -> None:
    values = DATA.integers(-10**9, 10**9, 500)
    factor = DATA.integers(-10**3, 10**3, 500)

    def program(session: Session) -> Any:
        mine = session.input(2)
        other = session.input(0, factor if session.party == 0 else None)
        (mine * other).reveal(to=[2])
        return None

    def owner(channel: Any) -> Any:  # the registry does not list additive yet: its client
        client = AdditiveOutsideParty(channel, (0, 1))
        client.send_input(values.astype(np.int64).view(np.uint64))
        return client.receive_output().view(np.int64)

    assert np.array_equal(_run(program, outside=owner)[2], values * factor)


def test_triples_are_made_ahead_and_each_used_once() -> None:
    def program(session: Session) -> Any:
        backend = session.backend
        assert isinstance(backend, Additive)
        backend.prepare(3000)
        a, b = _inputs(session, np.arange(1000), np.arange(1000), fixed=False)
        products = [(a * b).reveal() for _ in range(3)]  # 3000 prepared triples used
        before = dict(backend.triples_made)
        (a * b).reveal()  # the pool is empty: a batch of MINIMUM_BATCH more is made
        handed = [backend._triple(count, False)[0] for count in (10, 5, 2000, 1)]
        return (products, before, backend.triples_made, backend._pools[False].size(),
                np.concatenate(handed))

    products, before, after, left, handed = _run(program)[0]
    for product in products:
        assert np.array_equal(product, np.arange(1000) ** 2)
    # 1000 more after the 3000: a batch; 10 and 5 from what is left of it; 2000: the
    # 1991 missing; 1: a batch again, of which all but one stay in the pool
    assert before[False] == 3000
    assert after[False] == 3000 + MINIMUM_BATCH + (2000 - (MINIMUM_BATCH - 1015)) + MINIMUM_BATCH
    assert left == MINIMUM_BATCH - 1
    # every triple handed out is a different one: no share of a repeats
    assert len(np.unique(handed)) == handed.size == 2016


def test_dabits_are_made_ahead_and_each_used_once() -> None:
    def program(session: Session) -> Any:
        backend = session.backend
        assert isinstance(backend, Additive)
        backend.prepare_dabits(5000)
        handed = [backend.dabits(count) for count in (1000, 3000, 999)]
        left = backend._dabits.size()
        return handed, left, backend.dabits_made

    per_party = _run(program)
    own = [np.concatenate([h[0] for h in party[0]]) for party in per_party]
    shares = [np.concatenate([h[1] for h in party[0]]) for party in per_party]
    assert per_party[0][1] == 1 and per_party[0][2] == 5000  # nothing made online
    # each daBit: the XOR of the parties' own bits, shared arithmetically
    assert np.array_equal(shares[0] + shares[1], own[0] ^ own[1])
    assert 0.45 < (own[0] ^ own[1]).mean() < 0.55
    # no daBit is handed out twice: a share pair never repeats
    pairs = np.stack([shares[0], shares[1]], axis=1)
    assert len(np.unique(pairs, axis=0)) == 4999


def test_fewer_than_two_parties_is_refused() -> None:
    network = MemoryNetwork(1)
    with pytest.raises(ConfigurationError, match="at least two compute parties"):
        Additive(network.channel(0), (0,))


@pytest.mark.parametrize("how", ["aborts", "goes silent"])
def test_a_peer_that_stops_aborts_the_other_party(how: str) -> None:
    network = MemoryNetwork(2, timeout=2.0)

    def program(session: Session) -> Any:
        a, b = _inputs(session, np.arange(100), np.arange(100), fixed=False)
        if session.party == 1:
            if how == "aborts":
                network.channel(1).abort("party 1 stopped")
            return None
        return (a * b).reveal()  # needs party 1's triple and opening messages

    with pytest.raises(ProtocolAbort, match="party 1 stopped" if how == "aborts"
                       else "party 1"):
        _run(program, network=network)


class _Stopped(Exception):
    """Raised in the stopping party's own thread: it goes silent from then on."""


@pytest.mark.parametrize("sends", range(7))
def test_a_party_that_stops_in_the_offline_or_online_phase_fails_the_other(
        sends: int) -> None:
    # party 1 sends ``sends`` messages and then nothing: 0-3 stop it inside the base
    # OTs or the offline triples, 4-6 at the input, the Beaver opening and the reveal
    network = MemoryNetwork(2, timeout=2.0)
    channel = network.channel(1)
    real, sent = channel.send, [0]

    def send(peer: int, tag: int, array: Any) -> None:
        if sent[0] == sends:
            raise _Stopped
        sent[0] += 1
        real(peer, tag, array)

    channel.send = send  # type: ignore[method-assign]

    def party(index: int) -> Any:
        try:
            backend = Additive(network.channel(index) if index == 0 else channel, (0, 1))
            session = Session(backend)
            backend.prepare(2000)
            a, b = _inputs(session, np.arange(100), np.arange(100), fixed=False)
            return (a * b).reveal()
        except _Stopped:
            return "stopped"

    with pytest.raises(PeerUnavailable, match="party 1 sent nothing"):
        together(network, party)
