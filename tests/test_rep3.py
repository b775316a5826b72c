"""mpc/rep3: every primitive against a numpy reference, and its exact cost."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from concilium.data import Session
from concilium.errors import BadFrame, ConfigurationError
from concilium.mpc import Rep3
from concilium.mpc.rep3_outside import Rep3OutsideParty
from concilium.net import MemoryNetwork
from concilium.ring import Prg, to_signed
from concilium.testing import run_parties
from tests.conftest import run3

pytestmark = pytest.mark.rep3  # rep3's own costs, views and truncations

RING = np.uint64
shapes = hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=4)


def ring_arrays(shape: tuple[int, ...]) -> st.SearchStrategy[np.ndarray]:
    return hnp.arrays(RING, shape, elements=st.integers(0, 2**64 - 1))


def _pair(shape: tuple[int, ...]) -> st.SearchStrategy[tuple[np.ndarray, np.ndarray]]:
    return st.tuples(ring_arrays(shape), ring_arrays(shape))


def _shared(session: Session, owner: int, values: np.ndarray) -> np.ndarray:
    return session.backend.input(owner, values if session.party == owner else None)


@given(shapes.flatmap(_pair))
def test_ring_operations_match_numpy_exactly(pair: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = pair

    def program(session: Session) -> dict[str, np.ndarray]:
        backend = session.backend
        a, b = _shared(session, 0, x), _shared(session, 1, y)
        return {
            "add": backend.reveal(backend.add(a, b)),
            "sub": backend.reveal(backend.sub(a, b)),
            "neg": backend.reveal(backend.neg(a)),
            "mul": backend.reveal(backend.mul(a, b)),
            "add_public": backend.reveal(backend.add_public(a, y)),
            "mul_public": backend.reveal(backend.mul_public(a, y)),
            "and": backend.reveal(backend.and_(a, b), boolean=True),
        }

    results = run_parties(3, program)
    for result in results:  # every party gets the same, exact values
        assert np.array_equal(result["add"], x + y)
        assert np.array_equal(result["sub"], x - y)
        assert np.array_equal(result["neg"], np.negative(x))
        assert np.array_equal(result["mul"], x * y)
        assert np.array_equal(result["add_public"], x + y)
        assert np.array_equal(result["mul_public"], x * y)


@given(shapes.flatmap(_pair))
def test_boolean_sharing_and_and(pair: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = pair

    def program(session: Session) -> dict[str, np.ndarray]:
        backend = session.backend
        a = backend.input(0, x if session.party == 0 else None, boolean=True)
        b = backend.input(2, y if session.party == 2 else None, boolean=True)
        return {
            "and": backend.reveal(backend.and_(a, b), boolean=True),
            "xor": backend.reveal(backend.xor(a, b), boolean=True),
            "xor_public": backend.reveal(backend.xor_public(a, y), boolean=True),
            "and_public": backend.reveal(backend.and_public(a, y), boolean=True),
        }

    result = run3(program)
    assert np.array_equal(result["and"], x & y)
    assert np.array_equal(result["xor"], x ^ y)
    assert np.array_equal(result["xor_public"], x ^ y)
    assert np.array_equal(result["and_public"], x & y)


@pytest.mark.parametrize(
    ("left", "right"),
    [((3, 4), (4, 2)), ((5,), (5,)), ((5,), (5, 3)), ((2, 5), (5,)), ((2, 3, 4), (4, 2)),
     ((4, 3), (2, 3, 1)), ((1, 1), (1, 1))],
)
def test_matmul_matches_numpy_for_every_shape_rule(left: tuple, right: tuple) -> None:
    prg = Prg.from_urandom()
    x, y = prg.integers(left), prg.integers(right)

    def program(session: Session) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        backend = session.backend
        a, b = _shared(session, 0, x), _shared(session, 1, y)
        return (backend.reveal(backend.matmul(a, b)),
                backend.reveal(backend.matmul_public(a, y)),
                backend.reveal(backend.matmul_public(b, x, public_left=True)))

    secret, public_right, public_left = run3(program)
    assert np.array_equal(secret, x @ y)
    assert np.array_equal(public_right, x @ y)
    assert np.array_equal(public_left, x @ y)


def _floor_product(x: np.ndarray, y: np.ndarray, bits: int) -> np.ndarray:
    product = to_signed(x).astype(object) * to_signed(y).astype(object)
    return np.vectorize(lambda v: v >> bits, otypes=[object])(product)


@pytest.mark.parametrize("mode", ["fast", "reliable"])
@given(shape=shapes, data=st.data())
def test_truncated_products_are_floor_or_floor_plus_one(mode: str, shape: tuple,
                                                        data: st.DataObject) -> None:
    bound = 2**40 if mode == "reliable" else 2**20   # |z| < 2^80 / 2^40: see docs
    elements = st.integers(-bound, bound)
    x = data.draw(hnp.arrays(np.int64, shape, elements=elements)).view(RING)
    y = data.draw(hnp.arrays(np.int64, shape, elements=elements)).view(RING)
    bits = data.draw(st.integers(1, 30))
    if mode == "reliable":
        y = (to_signed(y) >> 20).view(RING)  # keep |x * y| < 2^62

    def program(session: Session) -> tuple[np.ndarray, np.ndarray]:
        backend = session.backend
        a, b = _shared(session, 0, x), _shared(session, 1, y)
        product = backend.mul(a, b)
        return (backend.reveal(backend.mul_trunc(a, b, bits, mode)),
                backend.reveal(backend.trunc(product, bits, mode)))

    fused, separate = run3(program)
    floor = _floor_product(x, y, bits)
    for result in (fused, separate):
        error = to_signed(result).astype(object) - floor
        assert set(np.ravel(error).tolist()) <= {0, 1}


@pytest.mark.parametrize("mode", ["fast", "reliable"])
@pytest.mark.parametrize(("left", "right"), [((30, 7), (7,)), ((5000, 3), (3, 4)), ((6,), (6,))])
def test_truncated_matrix_products(mode: str, left: tuple, right: tuple) -> None:
    prg = Prg.from_urandom()
    # fast truncation fails with probability |z| / 2^64 per output: with 24-bit
    # factors (|z| ~ 2^46) a 20000-output test failed a few percent of the time
    shift = 48 if mode == "fast" else 40
    x = (to_signed(prg.integers(left)) >> shift).view(RING)
    y = (to_signed(prg.integers(right)) >> shift).view(RING)

    def program(session: Session) -> np.ndarray:
        backend = session.backend
        return backend.reveal(backend.matmul_trunc(_shared(session, 0, x),
                                                   _shared(session, 2, y), 16, mode))

    exact = to_signed(x).astype(object) @ to_signed(y).astype(object)
    floor = np.vectorize(lambda v: v >> 16, otypes=[object])(exact)
    error = to_signed(np.asarray(run3(program))).astype(object) - floor
    assert set(np.ravel(error).tolist()) <= {0, 1}


def test_reveal_to_chosen_compute_parties_only() -> None:
    x = np.array([5, 6], dtype=RING)

    def program(session: Session) -> object:
        backend = session.backend
        shares = _shared(session, 0, x)
        return backend.reveal(shares, to=[1, 2])

    results = run_parties(3, program)
    assert results[0] is None
    assert results[1].tolist() == [5, 6] and results[2].tolist() == [5, 6]


def test_outside_owner_contributes_and_outside_recipient_receives() -> None:
    values = np.array([[1, 2], [3, 2**64 - 1]], dtype=RING)

    def compute(session: Session) -> np.ndarray:
        backend = session.backend
        shares = backend.input(3, None)
        doubled = backend.add(shares, shares)
        backend.reveal(doubled, to=[4])
        return backend.reveal(shares)

    def owner(handle) -> None:
        Rep3OutsideParty(handle._channel).send_input(values)

    def recipient(handle) -> np.ndarray:
        return Rep3OutsideParty(handle._channel).receive_output()

    results = run_parties(3, compute, outside=[owner, recipient])
    assert all(np.array_equal(r, values) for r in results[:3])
    assert np.array_equal(results[4], values + values)


def test_shared_random_values_are_consistent_and_fresh() -> None:
    def program(session: Session) -> tuple[np.ndarray, np.ndarray]:
        backend = session.backend
        return backend.reveal(backend.random((1000,))), backend.reveal(backend.random((1000,)))

    first, second = run3(program)
    assert not np.array_equal(first, second)
    assert len(np.unique(first)) == 1000


def test_costs_match_the_documented_table() -> None:
    n = 30_000  # above the size where roles rotate over three slices

    def program(session: Session) -> dict[str, tuple[int, int]]:
        backend = session.backend
        a, b = _shared(session, 0, np.ones(n, RING)), _shared(session, 1, np.ones(n, RING))
        wide, vec = _shared(session, 0, np.ones((100, 50), RING)), _shared(
            session, 1, np.ones(50, RING))
        costs = {}
        for name, op in [
            ("mul", lambda: backend.mul(a, b)),
            ("and", lambda: backend.and_(a, b)),
            ("mul_trunc_fast", lambda: backend.mul_trunc(a, b, 16, "fast")),
            ("mul_trunc_reliable", lambda: backend.mul_trunc(a, b, 16, "reliable")),
            ("trunc_reliable", lambda: backend.trunc(a, 16, "reliable")),
            ("matvec", lambda: backend.matmul(wide, vec)),
            ("random", lambda: backend.random((n,))),
        ]:
            before = backend.stats()
            op()
            after = backend.stats()
            costs[name] = (after.bytes_sent - before.bytes_sent, before.rounds, after.rounds)
        return costs

    per_party = run_parties(3, program)
    busiest = {name: max(p[name][0] for p in per_party) for name in per_party[0]}
    # rounds added to the critical path: growth of the largest communication depth
    rounds = {name: max(p[name][2] for p in per_party) - max(p[name][1] for p in per_party)
              for name in per_party[0]}
    assert busiest["mul"] == 8 * n and busiest["and"] == 8 * n
    assert busiest["mul_trunc_fast"] == 8 * n
    assert busiest["matvec"] == 8 * 100           # independent of the inner dimension 50
    assert busiest["random"] == 0
    # reliable: roles rotate over 3 slices of n/3: (16 + 16 + 32) / 3 bytes per element
    assert busiest["mul_trunc_reliable"] <= 22 * n
    assert busiest["trunc_reliable"] <= 16 * n + 16
    assert rounds == {"mul": 1, "and": 1, "mul_trunc_fast": 1, "mul_trunc_reliable": 2,
                      "trunc_reliable": 2, "matvec": 1, "random": 0}


def test_protocol_runs_unchanged_through_the_real_frame_codec() -> None:
    x, y = np.arange(20, dtype=RING), np.arange(20, dtype=RING) + 3
    net = MemoryNetwork(3, encode_frames=True)

    def program(session: Session) -> np.ndarray:
        backend = session.backend
        a, b = _shared(session, 0, x), _shared(session, 1, y)
        return backend.reveal(backend.mul_trunc(a, b, 1, "reliable"))

    result = run_parties(3, program, network=net)[0]
    assert set((to_signed(result) - (x * y) // 2).tolist()) <= {0, 1}


def test_rep3_needs_three_distinct_compute_parties() -> None:
    net = MemoryNetwork(4)
    with pytest.raises(ConfigurationError, match="exactly 3 distinct"):
        Rep3(net.channel(0), (0, 1, 1))
    with pytest.raises(ConfigurationError, match="not one of the compute parties"):
        Rep3(net.channel(3), (0, 1, 2))


def test_unknown_truncation_mode_is_refused() -> None:
    def program(session: Session) -> None:
        shares = session.backend.input(0, np.ones(1, RING) if session.party == 0 else None)
        session.backend.trunc(shares, 16, "sloppy")  # type: ignore[arg-type]

    with pytest.raises(ConfigurationError, match="unknown truncation mode 'sloppy'"):
        run3(program)


def test_a_party_with_a_different_plan_aborts_everyone() -> None:
    def program(session: Session) -> None:
        backend = session.backend
        shares = _shared(session, 0, np.ones(4, RING))
        if session.party == 2:
            backend.next_tag()  # party 2 skips ahead: its messages carry other tags
        backend.mul(shares, shares)

    with pytest.raises(BadFrame, match="not running the same plan"):
        run3(program, timeout=20)
