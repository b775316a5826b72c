"""Conversions, comparisons and selection against numpy, on random and edge inputs."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from concilium.data import Session
from concilium.data import functions as fn
from concilium.errors import InputError
from concilium.ops import conversion
from concilium.testing import run_parties
from tests.conftest import last_input, run3

INT64_EDGES = np.array([0, 1, -1, 2, -2, 2**62, -(2**62), 2**63 - 1, -(2**63), 2**63 - 2,
                        -(2**63) + 1, 12345, -12345], dtype=np.int64)
RNG = np.random.default_rng(20261123)


def _int_pairs(count: int) -> tuple[np.ndarray, np.ndarray]:
    """Random int64 pairs plus every pair of edge values and some ties."""
    x = RNG.integers(-(2**63), 2**63, size=count, dtype=np.int64)
    y = RNG.integers(-(2**63), 2**63, size=count, dtype=np.int64)
    y[: count // 8] = x[: count // 8]  # ties
    ex, ey = np.meshgrid(INT64_EDGES, INT64_EDGES)
    return np.concatenate([x, ex.ravel()]), np.concatenate([y, ey.ravel()])


def test_conversions_match_numpy_on_edge_and_random_words(protocol: str) -> None:
    values = np.concatenate([INT64_EDGES, RNG.integers(-(2**63), 2**63, 500, dtype=np.int64)])
    ring = values.view(np.uint64)

    def program(session: Session) -> list:
        backend = session.backend
        x = backend.input(0, ring if session.party == 0 else None)
        words = conversion.bit_decompose(backend, x)
        return [backend.reveal(conversion.msb(backend, x), boolean=True),
                backend.reveal(backend.bit_inject(conversion.msb(backend, x))),
                backend.reveal(words, boolean=True),
                backend.reveal(conversion.is_zero(backend, x), boolean=True),
                backend.reveal(conversion.to_arithmetic(backend, words))]

    sign, injected, words, zero, back = run3(program, protocol=protocol)
    assert np.array_equal(sign, (values < 0).astype(np.uint64))
    assert np.array_equal(injected, (values < 0).astype(np.uint64))
    assert np.array_equal(words, ring)
    assert np.array_equal(zero, (values == 0).astype(np.uint64))
    assert np.array_equal(back, ring)


def test_integer_comparisons_are_exact_over_the_full_64_bit_range(protocol: str) -> None:
    x, y = _int_pairs(400)

    def program(session: Session) -> list:
        a = session.input(0, x if session.party == 0 else None)
        b = session.input(1, y if session.party == 1 else None)
        return [r.reveal() for r in (a < b, a <= b, a > b, a >= b, a == b, a != b)]

    results = run3(program, protocol=protocol)
    expected = [x < y, x <= y, x > y, x >= y, x == y, x != y]
    for got, want in zip(results, expected, strict=True):
        assert got.dtype == np.int64
        assert np.array_equal(got, want.astype(np.int64))


@given(hnp.arrays(np.int64, st.integers(1, 40)), st.data())
def test_less_than_and_equal_agree_with_numpy(protocol: str, x: np.ndarray,
                                              data: st.DataObject) -> None:
    y = data.draw(hnp.arrays(np.int64, x.shape))

    def program(session: Session) -> list:
        a = session.input(0, x if session.party == 0 else None)
        b = last_input(session, y)
        return [(a < b).reveal(), (a == b).reveal()]

    less, same = run3(program, protocol=protocol)
    assert np.array_equal(less, x < y) and np.array_equal(same, x == y)


def test_fixed_point_comparisons_with_public_values_and_broadcasting(protocol: str) -> None:
    x = np.round(RNG.normal(0, 1000, (6, 50)) * 2**16) / 2**16
    x[0, :5] = [0.0, 2.0**31 - 2**-16, -(2.0**31) + 2**-16, 2**-16, -(2**-16)]
    row = np.round(RNG.normal(0, 1000, 50) * 2**16) / 2**16
    row[10] = x[1, 10]  # a tie

    def program(session: Session) -> list:
        a = session.input(0, x if session.party == 0 else None, fixed=True)
        r = session.input(1, row if session.party == 1 else None, fixed=True)
        n = last_input(session, np.arange(50))
        return [(a < r).reveal(), (a >= 3.25).reveal(), (a > 2).reveal(), (a == r).reveal(),
                (a != 0).reveal(), (n <= a).reveal(), fn.where(a < r, a, r).reveal(),
                fn.where(n > 24, 1.5, -2).reveal(), (a < 0).sum().reveal()]

    less, ge, gt2, same, nonzero, n_le, smaller, chosen, negatives = run3(program,
                                                                          protocol=protocol)
    assert np.array_equal(less, x < row) and np.array_equal(ge, x >= 3.25)
    assert np.array_equal(gt2, x > 2) and np.array_equal(same, x == row)
    assert np.array_equal(nonzero, x != 0) and np.array_equal(n_le, np.arange(50) <= x)
    assert np.array_equal(smaller, np.where(x < row, x, row))
    assert np.array_equal(chosen, np.where(np.arange(50) > 24, 1.5, -2.0))
    assert negatives == int((x < 0).sum())


def test_selection_functions_match_numpy(protocol: str) -> None:
    x = np.round(RNG.normal(0, 50, 300) * 2**16) / 2**16
    x[:3] = [0.0, -(2**-16), 2**-16]
    k = np.concatenate([INT64_EDGES[INT64_EDGES != -(2**63)], [7, -7]])

    def program(session: Session) -> list:
        a = session.input(0, x if session.party == 0 else None, fixed=True)
        b = session.input(1, k if session.party == 1 else None)
        return [abs(a).reveal(), fn.relu(a).reveal(), fn.sign(a).reveal(), fn.sign(b).reveal(),
                fn.minimum(a, 1.0).reveal(), fn.maximum(-3, a).reveal(), abs(b).reveal()]

    absolute, relu, sign_x, sign_k, low, high, abs_k = run3(program, protocol=protocol)
    assert np.array_equal(absolute, np.abs(x)) and np.array_equal(relu, np.maximum(x, 0))
    assert np.array_equal(sign_x, np.sign(x).astype(np.int64))
    assert np.array_equal(sign_k, np.sign(k)) and np.array_equal(abs_k, np.abs(k))
    assert np.array_equal(low, np.minimum(x, 1.0)) and np.array_equal(high, np.maximum(-3, x))


@pytest.mark.parametrize("shape,axis", [((9, 7), 0), ((9, 7), 1), ((9, 7), None), ((1,), 0),
                                        ((4, 1, 5), -1), ((33,), None)])
def test_min_max_and_their_first_index_along_an_axis(shape: tuple, axis: int | None,
                                                     protocol: str) -> None:
    values = RNG.integers(-5, 5, size=shape)  # small range: many ties
    fixed = np.round(RNG.normal(0, 3, size=shape) * 2**16) / 2**16

    def program(session: Session) -> list:
        a = session.input(0, values if session.party == 0 else None)
        f = session.input(1, fixed if session.party == 1 else None, fixed=True)
        return [a.min(axis).reveal(), a.max(axis).reveal(), a.argmin(axis).reveal(),
                a.argmax(axis).reveal(), f.min(axis).reveal(), f.argmax(axis).reveal()]

    low, high, arg_low, arg_high, f_low, f_arg_high = run3(program, protocol=protocol)
    assert np.array_equal(low, values.min(axis)) and np.array_equal(high, values.max(axis))
    assert np.array_equal(arg_low, values.argmin(axis))
    assert np.array_equal(arg_high, values.argmax(axis))
    assert np.array_equal(f_low, fixed.min(axis))
    assert np.array_equal(f_arg_high, fixed.argmax(axis))


def test_all_equal_empty_and_zero_dimensional_inputs(protocol: str) -> None:
    def program(session: Session) -> list:
        same = session.input(0, np.full(10, 4) if session.party == 0 else None)
        empty = session.input(0, np.zeros((0, 3)) if session.party == 0 else None, fixed=True)
        scalar = session.input(1, np.float64(-2.5) if session.party == 1 else None, fixed=True)
        return [same.argmin().reveal(), same.argmax().reveal(), (same < same).reveal(),
                (empty < 1.0).reveal().shape, (empty == empty).reveal().shape,
                (scalar < 0).reveal(), abs(scalar).reveal(), empty.max(axis=1).reveal().shape]

    result = run3(program, protocol=protocol)
    assert result[0] == 0 and result[1] == 0 and not np.any(result[2])
    assert result[3:6] == [(0, 3), (0, 3), 1] and result[6] == 2.5 and result[7] == (0,)


def test_min_of_an_empty_axis_is_refused_with_a_clear_error(protocol: str) -> None:
    def program(session: Session) -> None:
        session.input(0, np.zeros((0, 3), dtype=int) if session.party == 0 else None).min(0)

    with pytest.raises(InputError, match="empty axis"):
        run3(program, timeout=10, protocol=protocol)


@pytest.mark.rep3
def test_comparison_costs_match_the_documented_counts() -> None:
    n = 4096

    def program(session: Session) -> list:
        a = session.input(0, np.arange(n, dtype=float) if session.party == 0 else None,
                          fixed=True)
        b = session.input(0, np.ones(n, dtype=np.int64) if session.party == 0 else None)
        costs = []
        for compare in (lambda: a < 1.5, lambda: a == 1.5, lambda: b < 3):
            before = session.stats()
            compare()
            spent = session.stats().since(before)
            costs.append((spent.rounds, spent.bytes_sent / n))
        return costs

    per_party = run_parties(3, program)
    rounds = [max(costs[k][0] for costs in per_party) for k in range(3)]
    assert rounds == [9, 8, 11]  # communication depth of lt, eq, full-range lt
    for party, costs in enumerate(per_party):
        (_, lt_bytes), (_, eq_bytes), (_, full_bytes) = costs
        # below 12288 elements, party 0 also sends the boolean and injection inputs
        assert lt_bytes <= (49.1 if party == 0 else 33.1)
        assert eq_bytes <= (34.1 if party == 0 else 18.1)
        assert full_bytes <= (99.2 if party == 0 else 91.2)


@pytest.mark.rep3
def test_large_comparisons_spread_the_input_roles_evenly() -> None:
    n = 3 * 4096  # from here on every party shares one slice

    def program(session: Session) -> float:
        a = session.input(0, np.arange(n, dtype=float) if session.party == 0 else None,
                          fixed=True)
        before = session.stats()
        (a < 7.5).reveal()
        return (session.stats().since(before).bytes_sent - 8 * n) / n  # minus the reveal

    per_party = run_parties(3, program)
    assert per_party == [pytest.approx(25 + 8 / 3 + 8 + 8 / 3)] * 3
