"""Exact truncation, between, prefix sums, edge shapes of the numeric functions,
and the rule that every public operation states what it reveals."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import numpy as np
import pytest

import concilium.ops
from concilium.data import Session
from concilium.data import functions as fn
from tests.conftest import last_input, run3

RNG = np.random.default_rng(4)


def _ring(values: np.ndarray) -> np.ndarray:
    return np.round(values * 2**16).astype(np.int64)


def test_exact_truncation_is_the_floor_for_products_matrices_and_constants(protocol: str) -> None:
    x, y = RNG.normal(0, 300, 4000), RNG.normal(0, 300, 4000)
    x[:4] = [2.0**29, -(2.0**29), 2**-16, -(2**-16)]  # products up to 1.75 * 2^61
    y[:4] = [1.75, 1.75, -1.0, 1.0]
    m = RNG.normal(0, 10, (20, 30))

    def program(session: Session) -> list:
        a = session.input(0, x if session.party == 0 else None, fixed=True)
        b = session.input(1, y if session.party == 1 else None, fixed=True)
        w = last_input(session, m, fixed=True)
        return [a.multiply(b, truncation="exact").reveal(), a.truncate(5).reveal(),
                w.matmul(b[:30], truncation="exact").reveal()]

    product, shifted, matvec = run3(program, truncation="exact", protocol=protocol)
    X, Y, M = _ring(x), _ring(y), _ring(m)
    exact = [int(p) >> 16 for p in (X.astype(object) * Y.astype(object))]
    assert np.array_equal(_ring(product), np.array(exact, dtype=np.int64))
    assert np.array_equal(_ring(shifted), X >> 5)
    dots = [sum(int(a) * int(b) for a, b in zip(row, Y[:30], strict=True)) >> 16 for row in M]
    assert np.array_equal(_ring(matvec), np.array(dots, dtype=np.int64))


def test_between_and_prefix_sums(protocol: str) -> None:
    values = RNG.integers(-20, 20, 300)
    reals = np.round(RNG.normal(0, 5, 300) * 2**16) / 2**16

    def program(session: Session) -> list:
        a = session.input(0, values if session.party == 0 else None)
        f = session.input(1, reals if session.party == 1 else None, fixed=True)
        return [fn.between(a, -5, 7).reveal(), fn.between(f, -1.5, 2.25).reveal(),
                fn.between(a, a - 1, a).reveal(), a.cumsum().reveal(),
                f.reshape(30, 10).cumsum(axis=0).reveal()]

    ints, fixed, own, cumulative, by_column = run3(program, protocol=protocol)
    assert np.array_equal(ints, (values >= -5) & (values <= 7))
    assert np.array_equal(fixed, (reals >= -1.5) & (reals <= 2.25))
    assert np.all(own == 1) and np.array_equal(cumulative, np.cumsum(values))
    assert np.allclose(by_column, np.cumsum(reals.reshape(30, 10), axis=0), atol=1e-9)


@pytest.mark.parametrize("shape", [(0,), (0, 4), (), (1,)])
def test_numeric_functions_keep_empty_and_zero_dimensional_shapes(shape: tuple,
                                                                  protocol: str) -> None:
    def program(session: Session) -> list:
        x = session.input(0, np.full(shape, 2.0) if session.party == 0 else None, fixed=True)
        return [np.asarray(f(x).reveal()) for f in (fn.reciprocal, fn.sqrt, fn.exp, fn.log,
                                                     fn.sigmoid, fn.inverse_sqrt)] + [
            np.asarray((x / (x + 2.0)).reveal())]

    results = run3(program, protocol=protocol)
    expected = [0.5, np.sqrt(2), np.exp(2), np.log(2), 1 / (1 + np.exp(-2)), 1 / np.sqrt(2), 0.5]
    for got, want in zip(results, expected, strict=True):
        assert got.shape == shape
        assert np.allclose(got, want, rtol=2**-20, atol=4 * 2**-16)


def _public_functions() -> list[tuple[str, object]]:
    found = []
    for info in pkgutil.iter_modules(concilium.ops.__path__):
        module = importlib.import_module(f"concilium.ops.{info.name}")
        for name in getattr(module, "__all__", []):
            item = getattr(module, name)
            if inspect.isfunction(item):
                found.append((f"{info.name}.{name}", item))
    return found


def test_every_public_operation_states_what_it_reveals() -> None:
    # ops.bitwise is local bit manipulation only (its docstring says so)
    missing = [name for name, item in _public_functions() if not name.startswith("bitwise.")
               and "Reveals:" not in (inspect.getdoc(item) or "")]
    assert not missing, f"no 'Reveals:' line in {missing}"
    revealing = [name for name, item in _public_functions()
                 if "Reveals:" in (inspect.getdoc(item) or "")
                 and "nothing" not in (inspect.getdoc(item) or "").split("Reveals:")[1][:200]]
    # the only openings: B2A's masked word and the sort's comparisons of shuffled rows
    assert {n.split(".")[1] for n in revealing} <= {"to_arithmetic", "sort", "rank"}, revealing
