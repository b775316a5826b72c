"""Division, roots and elementary functions: accuracy against the documented bounds."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from concilium.data import Session
from concilium.data import functions as fn
from concilium.errors import InputError
from concilium.ops.accuracy import ACCURACY, Accuracy
from tests.conftest import run3

ULP = 2.0**-16
_spec = importlib.util.spec_from_file_location(
    "error_table", Path(__file__).resolve().parents[1] / "docs" / "error_table.py")
assert _spec is not None and _spec.loader is not None
error_table = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(error_table)


@pytest.mark.parametrize("spec", ACCURACY, ids=lambda spec: spec.function)
def test_errors_stay_within_the_documented_bounds(spec: Accuracy, protocol: str) -> None:
    result = error_table.measure(spec, points=3000, seed=7, protocol=protocol,
                                parties=protocol.parties)
    assert result["worst_ratio_to_bound"] <= 1.0, result


def test_edge_inputs_give_the_documented_results(protocol: str) -> None:
    largest = 2.0**31 - ULP

    def program(session: Session) -> list:
        x = session.input(0, np.array([1.0, -1.0, ULP, largest, -largest, 0.0])
                          if session.party == 0 else None, fixed=True)
        zero = session.input(1, np.zeros(2) if session.party == 1 else None, fixed=True)
        return [fn.reciprocal(x).reveal(), (x / zero[0]).reveal(), fn.sqrt(abs(x)).reveal(),
                fn.inverse_sqrt(zero).reveal(), fn.exp(x).reveal(), fn.sigmoid(x).reveal(),
                fn.log(abs(x[:5])).reveal()]

    reciprocal, by_zero, root, inverse_root_of_zero, exp, sigmoid, log = run3(program,
                                                                              protocol=protocol)
    expected = 1.0 / np.array([1.0, -1.0, ULP, largest, -largest])
    assert np.allclose(reciprocal[:5], expected, rtol=2**-22, atol=2 * ULP)
    assert reciprocal[5] == 0.0 and np.all(by_zero == 0.0) and np.all(inverse_root_of_zero == 0)
    assert np.allclose(root, np.sqrt([1, 1, ULP, largest, largest, 0]), rtol=2**-22,
                       atol=2 * ULP)
    assert np.allclose(exp, [np.e, 1 / np.e, 1.0, np.exp(21.48), 0.0, 1.0], rtol=2**-14,
                       atol=3 * ULP)
    assert np.allclose(sigmoid, [0.7310586, 0.2689414, 0.5, 1.0, 0.0, 0.5], atol=3 * ULP)
    assert np.allclose(log, np.log([1, 1, ULP, largest, largest]), atol=2 * ULP)


def test_division_operator_mixes_secret_public_integer_and_fixed(protocol: str) -> None:
    totals = np.array([10, 7, -9, 0, 123456])
    counts = np.array([4, 3, 2, 5, 1000])

    def program(session: Session) -> list:
        total = session.input(0, totals if session.party == 0 else None)
        count = session.input(1, counts if session.party == 1 else None)
        return [(total / count).reveal(), (total / 8).reveal(), (1 / count).reveal(),
                (total.as_fixed() / 2.5).reveal()]

    mean, eighth, inverse, scaled = run3(program, protocol=protocol)
    assert np.allclose(mean, totals / counts, atol=4 * ULP)
    assert np.allclose(eighth, totals / 8, atol=ULP)
    # a public divisor becomes a product with 1/c, which keeps 15 significant bits
    assert np.allclose(scaled, totals / 2.5, rtol=2**-15, atol=2 * ULP)
    assert np.allclose(inverse, 1 / counts, atol=2 * ULP)


def test_dividing_by_a_public_zero_is_refused(protocol: str) -> None:
    def program(session: Session) -> None:
        x = session.input(0, np.ones(3) if session.party == 0 else None, fixed=True)
        x / np.array([1.0, 0.0, 2.0])

    with pytest.raises(InputError, match="public zero"):
        run3(program, timeout=10, protocol=protocol)
