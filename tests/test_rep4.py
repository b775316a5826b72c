"""rep4: four-party replicated sharing with joint messages (what is specific to it:
its primitives against numpy, its costs next to rep3's, its key agreement)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from concilium.data import Session
from concilium.errors import CheatingDetected
from concilium.mpc.rep4 import Rep4
from concilium.net.memory import MemoryNetwork
from concilium.testing import run_parties

RNG = np.random.default_rng(41)


def _backends(program: Any, **options: Any) -> list[Any]:
    """Run ``program(backend)`` on the four rep4 backends; every party's result."""
    return run_parties(4, lambda session: program(session.backend), protocol="rep4",
                       **options)


def _same_everywhere(results: list[Any]) -> Any:
    for result in results[1:]:
        for mine, theirs in zip(results[0], result, strict=True):
            assert np.array_equal(mine, theirs)
    return results[0]


def test_products_reveal_and_inputs_equal_numpy() -> None:
    a = RNG.integers(0, 2**64, 20000, dtype=np.uint64)
    b = RNG.integers(0, 2**64, 20000, dtype=np.uint64)

    def program(backend: Rep4) -> Any:
        x = backend.input(0, a if backend.index == 0 else None)
        y = backend.input(3, b if backend.index == 3 else None)
        words_x = backend.input(1, a if backend.index == 1 else None, boolean=True)
        words_y = backend.input(2, b if backend.index == 2 else None, boolean=True)
        matrix = backend.matmul(x[:, :60].reshape(3, 6, 10), y[:, :70].reshape(3, 10, 7))
        return (backend.reveal(backend.mul(x, y)),
                backend.reveal(backend.and_(words_x, words_y), boolean=True),
                backend.reveal(matrix),
                backend.reveal(backend.sum_of_private(np.full(5, backend.index + 1,
                                                              dtype=np.uint64))),
                backend.reveal(backend.add_public(backend.random((3,)) * np.uint64(0),
                                                  np.uint64(7))))
    product, conjunction, matrix, total, constant = _same_everywhere(_backends(program))
    assert np.array_equal(product, a * b)
    assert np.array_equal(conjunction, a & b)
    assert np.array_equal(matrix, a[:60].reshape(6, 10) @ b[:70].reshape(10, 7))
    assert np.array_equal(total, np.full(5, 10))
    assert np.array_equal(constant, np.full(3, 7))


@pytest.mark.parametrize("compiled", [(True, True, False, False), (False, True, False, True)])
@pytest.mark.parametrize("size", [1, 7, 70001, 140000])
def test_the_compiled_products_send_exactly_the_numpy_protocols_messages(
        compiled: tuple[bool, ...], size: int) -> None:
    """Parties on the compiled kernel and parties on the numpy implementation run one
    multiplication together: any difference in a mask, a message or a MAC would be
    a wrong product or a CheatingDetected. Sizes: one slice, two slices, several
    blocks per slice."""
    a = RNG.integers(0, 2**64, size, dtype=np.uint64)
    b = RNG.integers(0, 2**64, size, dtype=np.uint64)

    def program(backend: Rep4) -> Any:
        backend.compiled_products = compiled[backend.index]
        x, y = (backend.input(owner, values if backend.index == owner else None,
                              boolean=boolean)
                for owner, values, boolean in ((0, a, False), (1, b, False)))
        words_x, words_y = (backend.input(owner, values if backend.index == owner else None,
                                          boolean=True)
                            for owner, values in ((2, a), (3, b)))
        return (backend.reveal(backend.mul(x, y)),
                backend.reveal(backend.and_(words_x, words_y), boolean=True))
    product, conjunction = _same_everywhere(_backends(program))
    assert np.array_equal(product, a * b)
    assert np.array_equal(conjunction, a & b)


@pytest.mark.parametrize("mode", ["fast", "reliable"])
def test_both_truncations_are_within_one_unit_and_unbiased(mode: str) -> None:
    # fast fails with probability |x| / 2^64 per element (documented): below 2^30 that is
    # 2.3e-6 for the whole array; the reliable mode holds over the whole promised range
    bound = 2**30 if mode == "fast" else 2**45
    values = RNG.integers(-bound, bound, 40000)
    if mode == "reliable":
        values[:1000] = RNG.integers(-(2**62) + 1, 2**62, 1000)
    ring = values.astype(np.int64).view(np.uint64)

    def program(backend: Rep4) -> Any:
        x = backend.input(2, ring if backend.index == 2 else None)
        return (backend.reveal(backend.trunc(x, 16, mode)),)  # type: ignore[arg-type]
    [result] = _same_everywhere(_backends(program))
    error = result.view(np.int64) - (values >> 16)
    assert set(np.unique(error)) <= {0, 1}
    fraction = (values % (1 << 16)) / (1 << 16)  # the expected rounding up
    assert abs(error.mean() - fraction.mean()) < 0.02


def test_a_shuffle_permutes_columns_together_and_reveals_a_permutation() -> None:
    keys = np.arange(3000, dtype=np.uint64)

    def program(backend: Rep4) -> Any:
        x = backend.input(1, np.stack([keys, keys * np.uint64(3)]) if backend.index == 1
                          else None)
        permutation = backend.new_permutation(3000)
        moved = backend.permute(permutation, x)
        back = backend.permute(permutation, moved, inverse=True)
        return backend.reveal(moved), backend.reveal(back)
    moved, back = _same_everywhere(_backends(program))
    assert np.array_equal(np.sort(moved[0]), keys)
    assert np.array_equal(moved[1], moved[0] * np.uint64(3))
    assert not np.array_equal(moved[0], keys)
    assert np.array_equal(back[0], keys)


def test_outside_owners_and_recipients() -> None:
    values = RNG.integers(0, 1000, (4, 5))

    def compute(session: Session) -> Any:
        x = session.input(4)
        session.reveal(x * x, to=[5])
        return session.reveal(x.sum())

    def owner(handle: Any) -> None:
        handle.contribute(values)

    def recipient(handle: Any) -> Any:
        return handle.receive()
    results = run_parties(4, compute, protocol="rep4", outside=[owner, recipient])
    assert all(r == values.sum() for r in results[:4])
    assert np.array_equal(results[5], values * values)


def test_multiplication_sends_at_most_twice_rep3s_bytes_per_party() -> None:
    size = 100_000
    a = RNG.integers(0, 2**64, size, dtype=np.uint64)

    def measure(protocol: str, parties: int) -> list[int]:
        network = MemoryNetwork(parties)

        def program(session: Session) -> int:
            x = session.input(0, a if session.party == 0 else None)
            before = session.stats().bytes_sent
            _ = x * x
            return session.stats().bytes_sent - before
        return run_parties(parties, program, protocol=protocol, network=network)
    rep4, rep3 = measure("rep4", 4), measure("rep3", 3)
    assert max(rep3) == 8 * size
    assert max(rep4) <= 12 * size + 3 * 32  # 1.5 elements per party, plus digests
    assert max(rep4) <= 2 * max(rep3)


def test_a_party_that_equivocates_in_key_agreement_is_caught_before_any_use() -> None:
    from concilium.net.cheating import CheatingChannel, Injection
    from concilium.testing import run_with_cheater

    outcome = run_with_cheater(lambda session: session.reveal(session.constant(1)), 2,
                               Injection("equivocate", 0))
    assert isinstance(outcome.cheater, CheatingChannel) and outcome.cheater.tampered
    for party in (0, 1, 3):
        assert isinstance(outcome.results[party], CheatingDetected), outcome.results
    assert "key" in str(outcome.results[0]) or "key" in str(outcome.results[1])
