"""data/: SecretArray operators, shapes, mixing integers and fixed point, and errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from concilium import (
    ConfigurationError,
    FixedPointRangeError,
    InputError,
    ProtocolAbort,
    SecretArray,
    Session,
    SessionMismatch,
    ShapeMismatch,
    run_parties,
)
from tests.conftest import last_input, last_party, run3

ULP = 2.0**-16
reals = st.floats(-8, 8, allow_nan=False, width=64)
shapes = hnp.array_shapes(min_dims=1, max_dims=2, min_side=1, max_side=4)


def _encoded(values: np.ndarray) -> np.ndarray:
    """What the fixed-point encoder makes of ``values`` (nearest multiple of 2^-16)."""
    return np.rint(np.asarray(values) * 2**16) / 2**16


def _inputs(session: Session, x: np.ndarray, y: np.ndarray, fixed: bool = True):
    a = session.input(0, x if session.party == 0 else None, fixed=fixed)
    b = session.input(1, y if session.party == 1 else None, fixed=fixed)
    return a, b


@given(shapes.flatmap(lambda s: st.tuples(hnp.arrays(np.float64, s, elements=reals),
                                          hnp.arrays(np.float64, s, elements=reals))))
def test_fixed_point_arithmetic_within_one_unit(protocol: str,
                                                pair: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = pair

    def program(session: Session) -> dict[str, np.ndarray]:
        a, b = _inputs(session, x, y)
        return {"add": (a + b).reveal(), "sub": (a - b).reveal(), "neg": (-a).reveal(),
                "mul": (a * b).reveal(), "mul_fast": a.multiply(b, truncation="fast").reveal(),
                "scaled": (a * 0.375 - 2).reveal(), "reflected": (1.5 - a * 3).reveal()}

    result = run3(program, protocol=protocol)
    ex, ey = _encoded(x), _encoded(y)
    assert np.array_equal(result["add"], ex + ey)
    assert np.array_equal(result["sub"], ex - ey)
    assert np.array_equal(result["neg"], -ex)
    for key in ("mul", "mul_fast"):
        error = result[key] - ex * ey
        assert np.all((error > -ULP) & (error < ULP)), key
    assert np.all(np.abs(result["scaled"] - (ex * 0.375 - 2)) < ULP)
    assert np.array_equal(result["reflected"], 1.5 - ex * 3)


@given(shapes.flatmap(lambda s: st.tuples(
    hnp.arrays(np.int64, s, elements=st.integers(-(2**62), 2**62)),
    hnp.arrays(np.int64, s, elements=st.integers(-(2**62), 2**62)))))
def test_integer_arithmetic_is_exact_modulo_2_64(protocol: str,
                                                 pair: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = pair

    def program(session: Session) -> dict[str, np.ndarray]:
        a, b = _inputs(session, x, y, fixed=False)
        return {"mul": (a * b).reveal(), "mix": (3 * a - b * 7 + 11).reveal(),
                "sum": a.sum().reveal()}

    result = run3(program, protocol=protocol)
    with np.errstate(over="ignore"):
        assert np.array_equal(result["mul"], x * y)
        assert np.array_equal(result["mix"], 3 * x - y * 7 + 11)
        assert result["sum"] == x.sum()


def test_broadcasting_follows_numpy(protocol: str) -> None:
    x = np.arange(6.0).reshape(2, 3) / 4
    y = np.array([0.5, -1.0, 2.0])
    column = np.array([[1], [2]])

    def program(session: Session) -> list[np.ndarray]:
        a, b = _inputs(session, x, y)
        c = last_input(session, column)
        return [(a * b).reveal(), (a + b).reveal(), (a * c).reveal(), (c + b).reveal(),
                (a - column).reveal(), (np.array([1.0, 2.0, 3.0]) * a).reveal()]

    mul, add, by_int, int_plus_fixed, minus_public, public_left = run3(program, protocol=protocol)
    assert np.array_equal(mul, x * y)
    assert np.array_equal(add, x + y)
    assert np.array_equal(by_int, x * column)
    assert np.array_equal(int_plus_fixed, column + y)
    assert np.array_equal(minus_public, x - column)
    assert np.array_equal(public_left, np.array([1.0, 2.0, 3.0]) * x)


def test_matrix_products_secret_and_public(protocol: str) -> None:
    weights = np.array([[0.5, -1.25], [2.0, 0.75], [1.0, 1.0]])
    features = np.array([[1.0, 2.0, -3.0], [0.25, 0.5, 4.0]])

    def program(session: Session) -> list[np.ndarray]:
        w, f = _inputs(session, weights, features)
        return [(f @ w).reveal(), (features @ w).reveal(), (f @ weights).reveal(),
                f.matmul(w, truncation="fast").reveal(), (f[0] @ w[:, 1]).reveal()]

    *matrices, dot = run3(program, protocol=protocol)
    for result in matrices:
        assert result.shape == (2, 2)
        assert np.all(np.abs(result - features @ weights) < ULP)
    assert isinstance(dot, float) and abs(dot - features[0] @ weights[:, 1]) < ULP


def test_integer_and_fixed_point_mix_without_extra_truncation(protocol: str) -> None:
    counts = np.array([3, 4, 5])
    rates = np.array([0.5, 0.25, 0.125])

    def program(session: Session) -> tuple[SecretArray, np.ndarray, np.ndarray]:
        c = session.input(0, counts if session.party == 0 else None)
        r = session.input(1, rates if session.party == 1 else None, fixed=True)
        before = session.stats().messages_sent
        product = c * r                        # integer times fixed point: one reshare
        scaled = c * 2.5                       # fractional constant times integer: local
        sent = session.stats().messages_sent - before
        return product, product.reveal(), (scaled.reveal(), sent)

    product, value, (scaled, rounds) = run3(program, protocol=protocol)
    assert product.is_fixed and product.fractional_bits == 16
    assert np.array_equal(value, counts * rates)  # exact: no truncation needed
    assert np.array_equal(scaled, counts * 2.5)
    if protocol == "rep3":
        assert rounds == 1                        # one message: no truncation round


def test_shape_operations_are_local_and_match_numpy(protocol: str) -> None:
    x = np.arange(24).reshape(2, 3, 4)

    def program(session: Session) -> tuple[list[np.ndarray], int]:
        a = session.input(0, x if session.party == 0 else None)
        start = session.stats().bytes_sent
        views = [a[1], a[:, 1:, ::2], a[..., 0], a.T, a.transpose(1, 0, 2), a.reshape(4, 6),
                 a.ravel(), a.sum(axis=1), a.sum(axis=(0, 2), keepdims=True), a[None, 0]]
        local_bytes = session.stats().bytes_sent - start
        return [v.reveal() for v in views], local_bytes

    views, local_bytes = run3(program, protocol=protocol)
    expected = [x[1], x[:, 1:, ::2], x[..., 0], x.T, x.transpose(1, 0, 2), x.reshape(4, 6),
                x.ravel(), x.sum(axis=1), x.sum(axis=(0, 2), keepdims=True), x[None, 0]]
    assert local_bytes == 0
    for got, want in zip(views, expected, strict=True):
        assert np.array_equal(got, want)


def test_reveal_to_a_subset_returns_none_elsewhere(protocol: str) -> None:
    def program(session: Session) -> object:
        last = last_party(session)
        a = session.input(last, np.array([1.5, -2.0]) if session.party == last else None,
                          fixed=True)
        return a.reveal(to=[0])

    results = run_parties(protocol.parties, program, protocol=protocol)
    assert results[0].tolist() == [1.5, -2.0]
    assert results[1:] == [None] * (protocol.parties - 1)


def test_outside_owner_and_recipient_with_fixed_point(protocol: str) -> None:
    computing = max(3, getattr(protocol, "parties", 3))

    def compute(session: Session) -> None:
        salaries = session.input(computing, None, fixed=True)
        (salaries.sum() * 0.5).reveal(to=[computing])

    def owner(handle) -> np.ndarray:
        handle.contribute(np.array([52000.5, 61250.25, 48000.0]), fixed=True)
        return handle.receive(fixed=True)

    assert run_parties(computing, compute, outside=[owner], protocol=protocol)[
        computing] == pytest.approx(80625.375, abs=ULP)


def test_bad_input_is_refused_before_anything_is_shared(protocol: str) -> None:
    sent: dict[int, int] = {}

    def program(session: Session) -> None:
        before = session.stats().bytes_sent   # key agreement traffic
        try:
            session.input(0, np.array([1.0, np.nan]) if session.party == 0 else None,
                          fixed=True)
        finally:
            sent[session.party] = session.stats().bytes_sent - before

    with pytest.raises(FixedPointRangeError, match=r"NaN or infinite \(first at index \(1,\)\)"):
        run3(program, timeout=10, protocol=protocol)
    assert sent[0] == 0  # the owner sent no share of anything


@pytest.mark.parametrize(
    ("values", "fixed", "error", "message"),
    [
        (np.array([1e12]), True, FixedPointRangeError, "safe range"),
        (np.array([1.5]), False, InputError, "fixed=True"),
        (np.array(["a"]), False, InputError, "must be numbers"),
        ([2**70], False, InputError, "does not fit"),
    ],
)
def test_typed_errors_name_the_problem(values, fixed, error, message, protocol: str) -> None:
    def program(session: Session) -> None:
        session.input(0, values if session.party == 0 else None, fixed=fixed)

    with pytest.raises(error, match=message):
        run3(program, timeout=10, protocol=protocol)


def test_mismatched_shapes_raise_shape_mismatch_before_communicating(protocol: str) -> None:
    def program(session: Session) -> None:
        a = session.input(0, np.ones(3, dtype=int) if session.party == 0 else None)
        b = session.input(1, np.ones(4, dtype=int) if session.party == 1 else None)
        before = session.stats().messages_sent
        try:
            a * b
        except ShapeMismatch:
            assert session.stats().messages_sent == before  # refused before any message
            raise

    with pytest.raises(ShapeMismatch, match=r"\(3,\), \(4,\) do not broadcast"):
        run3(program, timeout=10, protocol=protocol)

    def matrix(session: Session) -> None:
        a = session.input(0, np.ones((2, 3), dtype=int) if session.party == 0 else None)
        a @ a

    with pytest.raises(ShapeMismatch, match="inner dimensions differ"):
        run3(matrix, timeout=10, protocol=protocol)


def test_values_from_different_sessions_cannot_mix(protocol: str) -> None:
    def program(session: Session) -> None:
        twin = Session(session.backend, codec=session.codec)
        a = session.input(0, np.ones(2, dtype=int) if session.party == 0 else None)
        b = twin.constant(np.ones(2, dtype=int))
        a + b

    with pytest.raises(SessionMismatch, match="different sessions"):
        run3(program, timeout=10, protocol=protocol)


def test_secret_values_refuse_implicit_disclosure(protocol: str) -> None:
    def program(session: Session) -> list[str]:
        a = session.input(0, np.ones(2, dtype=int) if session.party == 0 else None)
        problems = []
        for attempt in (lambda: bool(a), lambda: np.asarray(a), lambda: bool(a == a),
                        lambda: hash(a)):
            try:
                attempt()
            except TypeError as error:
                problems.append(str(error))
        return [*problems, repr(a)]

    messages = run3(program, protocol=protocol)
    assert len(messages) == 5
    assert "no truth value" in messages[0] and "reveal()" in messages[1]
    assert "no truth value" in messages[2]  # == is a secure comparison, never a bool
    assert messages[4] == f"SecretArray(shape=(2,), integer, protocol={protocol}, party=0)"


def test_only_the_owner_passes_values(protocol: str) -> None:
    def program(session: Session) -> None:
        session.input(0, np.ones(2, dtype=int))

    with pytest.raises(ConfigurationError, match="only the owner passes values"):
        run3(program, timeout=10, protocol=protocol)


def test_a_crashing_party_aborts_the_others(protocol: str) -> None:
    def program(session: Session) -> None:
        a = session.input(0, np.ones(2, dtype=int) if session.party == 0 else None)
        if session.party == 1:
            raise RuntimeError("party 1 lost its disk")
        (a * a).reveal()

    with pytest.raises(RuntimeError, match="lost its disk") as caught:
        run3(program, timeout=10, protocol=protocol)
    assert any("raised by party 1" in note for note in caught.value.__notes__)


def test_silent_party_makes_the_others_raise_protocol_abort(protocol: str) -> None:
    def program(session: Session) -> object:
        a = session.input(0, np.ones(2, dtype=int) if session.party == 0 else None)
        if session.party == last_party(session):
            return None  # goes silent: never shares its input
        return (a * session.input(last_party(session), None)).reveal()

    with pytest.raises(ProtocolAbort, match="sent nothing"):
        run3(program, timeout=0.5, protocol=protocol)
