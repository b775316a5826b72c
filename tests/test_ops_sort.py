"""Shuffle, sort, rank and segmented sums against numpy; what the sort opens."""

from __future__ import annotations

import numpy as np
import pytest

from concilium.data import Session
from concilium.data import functions as fn
from concilium.errors import InputError
from concilium.ops import sort as sorting
from concilium.testing import run_parties
from tests.conftest import last_input, run3

RNG = np.random.default_rng(99)


def test_shuffle_keeps_rows_together_and_its_inverse_restores_them(protocol: str) -> None:
    n = 2000
    a = RNG.permutation(n)
    b = a * 7 - 3

    def program(session: Session) -> list:
        backend = session.backend
        x = session.input(0, a if session.party == 0 else None)
        y = session.input(1, b if session.party == 1 else None)
        before = session.stats()
        (sx, sy), permutation = sorting.shuffle(backend, [x.shares, y.shares])
        cost = session.stats().since(before)
        back = backend.permute(permutation, np.stack([sx, sy], axis=1), inverse=True)
        return [backend.reveal(sx), backend.reveal(sy), backend.reveal(back),
                cost.rounds, cost.bytes_sent / n]

    results = run_parties(protocol.parties, program, protocol=protocol)
    shuffled_a, shuffled_b, restored, rounds, _ = results[0]
    assert sorted(shuffled_a) == list(range(n)) and not np.array_equal(shuffled_a, a)
    assert np.array_equal(shuffled_b.astype(np.int64), shuffled_a.astype(np.int64) * 7 - 3)
    assert np.array_equal(restored[0], a) and np.array_equal(restored[1].astype(np.int64), b)
    if protocol == "rep3":  # its costs: three resharing steps
        assert rounds == 3
        # 16 bytes per 64-bit word and column: each party sends in two of the three steps
        assert all(r[4] == 2 * 16 for r in results)


def _reference_order(*keys: np.ndarray, descending: tuple[bool, ...]) -> list[int]:
    def key(i: int) -> tuple:
        return tuple(-int(k[i]) if d else float(k[i]) for k, d in zip(keys, descending,
                                                                         strict=True))
    return sorted(range(len(keys[0])), key=key)  # Python's sort is stable


def test_sort_is_stable_and_carries_payload_with_several_keys(protocol: str) -> None:
    n = 700
    group = RNG.integers(0, 12, n)  # many ties
    big = RNG.integers(-(2**63), 2**63, n, dtype=np.int64)
    big[:20] = [-(2**63), 2**63 - 1] * 10
    price = np.round(RNG.normal(0, 100, n) * 2**16) / 2**16
    payload = np.arange(n) * 10

    def program(session: Session) -> list:
        g = session.input(0, group if session.party == 0 else None)
        k = session.input(1, big if session.party == 1 else None)
        p = last_input(session, price, fixed=True)
        w = session.input(0, payload if session.party == 0 else None)
        (sg, sk), (sw, sp) = fn.sort([g, k], [w, p], descending=[False, True])
        (only,), (by_price,) = fn.sort(p, [w])
        return [c.reveal() for c in (sg, sk, sw, sp, only, by_price)]

    sg, sk, sw, sp, only, by_price = run3(program, protocol=protocol)
    order = _reference_order(group, big, descending=(False, True))
    assert np.array_equal(sg, group[order]) and np.array_equal(sk, big[order])
    assert np.array_equal(sw, payload[order]) and np.array_equal(sp, price[order])
    stable = np.argsort(price, kind="stable")
    assert np.array_equal(only, price[stable]) and np.array_equal(by_price, payload[stable])


@pytest.mark.parametrize("values", [np.array([], dtype=np.int64), np.array([5]),
                                    np.array([3, 3]), np.full(50, -2), np.arange(40)[::-1]])
def test_sort_and_rank_edge_cases(values: np.ndarray, protocol: str) -> None:
    def program(session: Session) -> list:
        x = session.input(0, values if session.party == 0 else None)
        (keys,), (positions,) = fn.sort(x, [session.constant(np.arange(len(values)))])
        return [keys.reveal(), positions.reveal(), fn.rank(x).reveal()]

    keys, positions, ranks = run3(program, protocol=protocol)
    stable = np.argsort(values, kind="stable")
    assert np.array_equal(keys, values[stable]) and np.array_equal(positions, stable)
    expected = np.empty(len(values), dtype=np.int64)
    expected[stable] = np.arange(len(values))
    assert np.array_equal(ranks, expected)


def test_rank_descending_on_fixed_point_with_ties(protocol: str) -> None:
    scores = np.round(RNG.choice([0.5, 1.25, -3.0, 7.75], 300) * 4) / 4

    def program(session: Session) -> np.ndarray:
        x = last_input(session, scores, fixed=True)
        return fn.rank(x, descending=True).reveal()

    ranks = run3(program, protocol=protocol)
    order = np.argsort(-scores, kind="stable")
    expected = np.empty(len(scores), dtype=np.int64)
    expected[order] = np.arange(len(scores))
    assert np.array_equal(ranks, expected)


def test_segmented_sums_give_group_totals_and_counts(protocol: str) -> None:
    groups = np.sort(RNG.integers(0, 30, 500))
    values = np.round(RNG.normal(5, 2, 500) * 2**16) / 2**16

    def program(session: Session) -> list:
        g = session.input(0, groups if session.party == 0 else None)
        v = session.input(1, values if session.party == 1 else None, fixed=True)
        (running, counts), last = fn.segmented_sum(g, v, session.constant(np.ones(500, int)))
        return [running.reveal(), counts.reveal(), last.reveal()]

    running, counts, last = run3(program, protocol=protocol)
    keys, first, sizes = np.unique(groups, return_index=True, return_counts=True)
    ends = first + sizes - 1
    assert np.array_equal(np.flatnonzero(last), ends)
    totals = np.array([values[groups == k].sum() for k in keys])
    assert np.allclose(running[ends], totals, atol=1e-9)
    assert np.array_equal(counts[ends], sizes)
    assert np.allclose(running[first], values[first])  # each run starts afresh


@pytest.mark.rep3
def test_what_the_sort_opens_does_not_depend_on_the_data() -> None:
    """The sort opens the order of the shuffled rows: for any input it must be a
    fresh uniformly random permutation (here: where the smallest row landed)."""
    n, runs = 6, 24

    def landing(values: np.ndarray) -> list[int]:
        def program(session: Session) -> int:
            x = session.input(0, values if session.party == 0 else None)
            outcome = sorting.sort(session.backend, [sorting.SortKey(x.shares)])
            return int(outcome.order[0])
        return [run_parties(3, program)[0] for _ in range(runs)]

    for values in (np.arange(n), np.arange(n)[::-1], np.zeros(n, dtype=int)):
        spots = landing(values)
        counts = np.bincount(spots, minlength=n)
        assert (counts > 0).sum() >= 4, counts  # not fixed by the data: spread out
        assert counts.max() <= 12, counts


def test_sort_columns_must_share_one_length(protocol: str) -> None:
    def program(session: Session) -> None:
        x = session.input(0, np.arange(5) if session.party == 0 else None)
        fn.sort(x, [x[:3]])

    with pytest.raises(InputError, match="one common length"):
        run3(program, timeout=10, protocol=protocol)
