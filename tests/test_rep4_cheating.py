"""The cheat-injection harness: one rep4 party tampers with each of its messages of
each primitive in each way (:mod:`concilium.net.cheating`), in each of the four
positions. Every honest party must abort with CheatingDetected or PeerUnavailable,
none may return a value, and the tampering must have changed the message."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from concilium.data import Session
from concilium.errors import CheatingDetected, PeerUnavailable, ProtocolAbort
from concilium.mpc.rep4 import Rep4
from concilium.net.cheating import INJECTIONS, CheatingChannel, Injection
from concilium.testing import run_with_cheater

VALUES = np.array([3, 1 << 40, 7, (1 << 64) - 5, 12, 0, 9, 1 << 63], dtype=np.uint64)
OTHER = np.array([5, 6, (1 << 64) - 1, 2, 1 << 33, 11, 4, 8], dtype=np.uint64)
SMALL = np.array([5 << 16, -(3 << 16) % (1 << 64), 123456, 1 << 30, 7, 0, 1 << 20, 99],
                 dtype=np.uint64)
#: Each primitive: the program of one party's backend, between the marks of the
#: cheater's messages that belong to the primitive, and its plaintext result.
Program = Callable[[Rep4, Callable[[], None]], Any]


def _mark(backend: Rep4) -> int:
    channel = backend.channel
    return len(channel.sent) if isinstance(channel, CheatingChannel) else -1


def _inputs(backend: Rep4) -> tuple[Any, Any, Any, Any]:
    x = backend.input(0, VALUES if backend.index == 0 else None)
    y = backend.input(1, OTHER if backend.index == 1 else None)
    words = backend.input(2, VALUES if backend.index == 2 else None, boolean=True)
    small = backend.input(3, SMALL if backend.index == 3 else None)
    return x, y, words, small


def _pair(backend: Rep4, x: Any) -> Any:
    first, second = backend.boolean_pair(x)
    return np.stack([first, second], axis=1)


PRIMITIVES: dict[str, tuple[Callable[[Rep4, Any], Any], Callable[[], Any], bool]] = {
    # name: (primitive on (backend, inputs) -> shares, plaintext, boolean result)
    "input": (lambda b, v: b.input(0, VALUES if b.index == 0 else None), lambda: VALUES, False),
    "mul": (lambda b, v: b.mul(v[0], v[1]), lambda: VALUES * OTHER, False),
    "and": (lambda b, v: b.and_(v[2], v[2] ^ np.uint64(0)), lambda: VALUES, True),
    "matmul": (lambda b, v: b.matmul(v[0].reshape(3, 2, 4), v[1].reshape(3, 4, 2)),
               lambda: VALUES.reshape(2, 4) @ OTHER.reshape(4, 2), False),
    "trunc fast": (lambda b, v: b.trunc(v[3], 16, "fast"), None, False),  # type: ignore[dict-item]
    "trunc reliable": (lambda b, v: b.trunc(v[3], 16, "reliable"), None, False),  # type: ignore[dict-item]
    "boolean pair": (lambda b, v: b.boolean_pair(v[0])[0], None, True),  # type: ignore[dict-item]
    "bit inject": (lambda b, v: b.bit_inject(v[2]), lambda: VALUES & np.uint64(1), False),
    "shuffle": (lambda b, v: b.permute(b.new_permutation(8), v[0]), None, False),  # type: ignore[dict-item]
    "sum of private": (lambda b, v: b.sum_of_private(np.full(8, b.index, dtype=np.uint64)),
                       lambda: np.full(8, 6, dtype=np.uint64), False),
    "reveal": (lambda b, v: v[0], lambda: VALUES, False),
}


def _program(name: str) -> Callable[[Session], Any]:
    primitive, _, boolean = PRIMITIVES[name]

    def program(session: Session) -> Any:
        backend = session.backend
        assert isinstance(backend, Rep4)
        values = _inputs(backend)
        start = _mark(backend)
        shares = primitive(backend, values)
        if name == "reveal":
            opened = backend.reveal(shares)
            return opened, (start, _mark(backend))
        stop = _mark(backend)
        return backend.reveal(shares, boolean=boolean), (start, stop)
    return program


def _honest(name: str, cheater: int) -> tuple[Any, tuple[int, int]]:
    outcome = run_with_cheater(_program(name), cheater, None)
    results = outcome.results
    assert not any(isinstance(r, BaseException) for r in results), results
    value, marks = results[cheater]
    for result in results:
        assert np.array_equal(result[0], value)
    return value, marks


def _injections(marks: tuple[int, int]) -> list[Injection]:
    found = []
    for at in range(*marks):
        for kind in INJECTIONS:
            found.append(Injection(kind, at))
        found.append(Injection("flip", at, word=-1))  # the digest end of a frame
    return found


def check_every_injection(name: str, cheater: int, *, strict: bool = True) -> tuple[int, int]:
    """Every injection into every message of primitive ``name`` from party ``cheater``:
    (injections tried, injections caught). ``strict``: assert on the first miss
    (the test), else count it (``bench/cheats.py``)."""
    value, marks = _honest(name, cheater)
    _, plain, _ = PRIMITIVES[name]
    if plain is not None:
        assert np.array_equal(value, plain()), name
    tried = detected = 0
    for injection in _injections(marks):
        # a withheld message that every peer waits for is noticed by its timeout
        outcome = run_with_cheater(_program(name), cheater, injection, timeout=1.5)
        if not outcome.cheater.tampered:
            continue  # this kind cannot change this message (e.g. all words equal)
        tried += 1
        honest = [r for p, r in enumerate(outcome.results) if p != cheater]
        caught = all(isinstance(r, (CheatingDetected, PeerUnavailable)) for r in honest)
        if strict:  # no honest party output anything, and each aborted as it should
            assert caught, (name, cheater, injection, honest)
        detected += caught
    return tried, detected


@pytest.mark.parametrize("cheater", [0, 1, 2, 3])
@pytest.mark.parametrize("name", list(PRIMITIVES))
def test_every_injection_into_every_message_is_caught(name: str, cheater: int) -> None:
    tried, detected = check_every_injection(name, cheater)
    assert tried > 0, (name, cheater)
    assert detected == tried


def test_the_setup_is_covered_too() -> None:
    """Every message of the key agreement, tampered, stops the run at set-up."""
    def program(session: Session) -> Any:
        return _mark(session.backend), session.reveal(session.constant(1))  # type: ignore[arg-type]
    for cheater in range(4):
        honest = run_with_cheater(program, cheater, None)
        messages = honest.results[cheater][0]
        assert messages == 6  # two rounds, one message to each peer in each
        for injection in _injections((0, messages)):
            outcome = run_with_cheater(program, cheater, injection)
            if outcome.cheater.tampered:
                for party, result in enumerate(outcome.results):
                    if party != cheater:
                        assert isinstance(result, (CheatingDetected, PeerUnavailable)), (
                            cheater, injection, result)


def test_the_deferred_check_attack_of_eprint_2026_234_is_stopped_in_the_first_product(
        ) -> None:
    """e = (a * b) * d with party 2 adding one to its joint message to party 1 in the
    first product (term A_2: sender 2, backup 3, receiver 1). With deferred checks
    party 1 would send party 2 a second-product message off by the secret d, and
    party 2 could test a guess of d against party 3's hash. Here party 1 aborts in the
    first product, and party 2 receives nothing of the second from party 1."""
    a, b, d = (np.array([v], dtype=np.uint64) for v in (3, 5, 11))

    def program(session: Session) -> Any:
        backend = session.backend
        assert isinstance(backend, Rep4)
        x = backend.input(0, a if backend.index == 0 else None)
        y = backend.input(0, b if backend.index == 0 else None)
        z = backend.input(3, d if backend.index == 3 else None)
        start = _mark(backend)
        c = backend.mul(x, y)
        second = backend.next_tag(0)  # the tag the second product will use
        return backend.reveal(backend.mul(c, z)), (start, second)
    honest = run_with_cheater(program, 2, None)
    _, (start, second_tag) = honest.results[2]
    sent = honest.cheater.sent
    [at] = [i for i in range(start, len(sent)) if sent[i].peer == 1][:1]  # its mul-1 frame
    outcome = run_with_cheater(program, 2, Injection("offset", at), record=True)
    first = outcome.results[1]
    assert isinstance(first, CheatingDetected) and "mul" in str(first)
    assert "2" in str(first) and "3" in str(first)  # sender 2 and backup 3 disagree
    to_cheater = outcome.network.channel(2).received_log
    assert not [m for m in to_cheater if m.sender == 1 and second_tag <= m.tag < 1 << 61]


def test_orq_cases_a_tampered_share_passes_local_steps_and_fails_where_it_is_used() -> None:
    """ORQ's malicious tests: party 2 edits one of its own share components. Adding
    and XOR (local) pass; opening, multiplying and AND abort; untampered values still
    multiply correctly."""
    def tampered(step: str) -> Callable[[Session], Any]:
        def program(session: Session) -> Any:
            backend = session.backend
            assert isinstance(backend, Rep4)
            x = backend.input(0, VALUES if backend.index == 0 else None)
            words = backend.input(0, VALUES if backend.index == 0 else None, boolean=True)
            fine = backend.reveal(backend.mul(x, x))
            if backend.index == 2:
                x = x.copy()
                x[0, 0] += np.uint64(1)  # its x_3, which it sends when opening
                words = words.copy()
                words[0, 3] ^= np.uint64(1)
            if step == "add":
                return fine, backend.add(x, x), backend.xor(words, words)
            if step == "open":
                return fine, backend.reveal(x)
            if step == "mul":
                return fine, backend.reveal(backend.mul(x, x))
            return fine, backend.reveal(backend.and_(words, words), boolean=True)
        return program
    local = run_with_cheater(tampered("add"), 2, None)
    assert all(np.array_equal(r[0], VALUES * VALUES) for r in local.results)
    for step in ("open", "mul", "and"):
        outcome = run_with_cheater(tampered(step), 2, None)
        for party in (0, 1, 3):
            assert isinstance(outcome.results[party], ProtocolAbort), (step, outcome.results)
        assert any(isinstance(outcome.results[p], CheatingDetected) for p in (0, 1, 3))


def test_a_shuffle_with_a_member_applying_another_permutation_is_caught() -> None:
    def program(session: Session) -> Any:
        backend = session.backend
        assert isinstance(backend, Rep4)
        x = backend.input(0, VALUES if backend.index == 0 else None)
        permutation = backend.new_permutation(8)
        if backend.index == 1:  # party 1 swaps two items in every step it knows
            for step in (0, 2, 3):
                from concilium.mpc import rep4_shuffle
                order = rep4_shuffle._component(backend, permutation, step).copy()
                order[[0, 1]] = order[[1, 0]]
                permutation.known[step] = order
        return backend.reveal(backend.permute(permutation, x))
    outcome = run_with_cheater(program, 1, None)
    for party in (0, 2, 3):
        assert isinstance(outcome.results[party], CheatingDetected), outcome.results
