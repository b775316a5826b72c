"""Fixed point: the truncation guarantees in docs/fixed-point.md, measured.

* fast: catastrophic errors happen with probability |z| / 2^64 per element;
* reliable: none for |z| < 2^62, whatever the values;
* both round without bias, so long sums of products do not drift;
* aggregates over 10^6 rows stay within the documented error.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from concilium.data import Session
from concilium.ring import FixedPointCodec, Prg, to_signed
from tests.conftest import run3

pytestmark = pytest.mark.rep3  # rep3's own costs, views and truncations

RING = np.uint64
ULP = 2.0**-16


def _products(x: np.ndarray, y: np.ndarray, mode: str, bits: int = 16) -> np.ndarray:
    def program(session: Session) -> np.ndarray:
        backend = session.backend
        a = backend.input(0, x if session.party == 0 else None)
        b = backend.input(1, y if session.party == 1 else None)
        return backend.reveal(backend.mul_trunc(a, b, bits, mode))

    return to_signed(run3(program))


def test_fast_truncation_fails_as_often_as_documented() -> None:
    n = 1 << 16
    x = np.full(n, 1 << 29, dtype=RING)
    y = np.full(n, 1 << 29, dtype=RING)           # z = 2^58: p = 2^58 / 2^64 = 1/64
    error = _products(x, y, "fast") - (1 << 42)
    catastrophic = int(np.count_nonzero(np.abs(error) > 1))
    expected, spread = n / 64, math.sqrt(n / 64 * (63 / 64))
    assert abs(catastrophic - expected) < 6 * spread
    assert set(np.unique(np.abs(error[np.abs(error) > 1])).tolist()) <= {1 << 48, (1 << 48) - 1}


def test_reliable_truncation_never_fails_below_2_to_62() -> None:
    n = 1_000_000
    prg = Prg.from_urandom()
    x = (to_signed(prg.integers(n)) >> 32).view(RING)   # |x| < 2^31
    y = (to_signed(prg.integers(n)) >> 34).view(RING)   # |y| < 2^29, |z| < 2^60
    y[:10] = (1 << 30) - 1                              # and some |z| close to 2^61
    x[:10] = (1 << 31) - 1
    floor = (to_signed(x).astype(object) * to_signed(y).astype(object)) >> 16
    error = _products(x, y, "reliable").astype(object) - floor
    assert set(np.unique(error).tolist()) <= {0, 1}
    fast_error = _products(x, y, "fast").astype(object) - floor
    assert np.count_nonzero(np.abs(fast_error.astype(float)) > 1) > 0  # the contrast


@pytest.mark.parametrize("mode", ["fast", "reliable"])
def test_rounding_is_unbiased(mode: str) -> None:
    n = 200_000
    x = np.full(n, (21 << 16) + (1 << 14), dtype=RING)  # 21.25 in fixed point
    y = np.ones(n, dtype=RING)                          # times 1, then drop 16 bits
    result = _products(x, y, mode)
    assert set(np.unique(result).tolist()) == {21.0, 22.0}
    sigma = math.sqrt(0.25 * 0.75 / n)
    assert abs(result.mean() - 21.25) < 6 * sigma


def test_a_million_row_aggregate_has_no_catastrophic_error() -> None:
    n = 1_000_000
    prg = Prg.from_urandom()
    x = (prg.uniform(n) - 0.5) * 2000                   # |x| < 1000
    y = (prg.uniform(n) - 0.5) * 2000                   # |x y| < 10^6 < 2^20
    codec = FixedPointCodec()
    ex, ey = codec.decode(codec.encode(x)), codec.decode(codec.encode(y))

    def program(session: Session) -> tuple[float, float, float]:
        a = session.input(0, x if session.party == 0 else None, fixed=True)
        b = session.input(1, y if session.party == 1 else None, fixed=True)
        per_row = (a * b).sum().reveal()                # truncate each product, then sum
        accumulated = (a @ b).reveal()                  # sum at 2f bits, truncate once
        mean = ((a * b).sum() * (1 / n)).reveal()
        return float(per_row), float(accumulated), float(mean)

    per_row, accumulated, mean = run3(program)
    reference = float(np.dot(ex, ey))
    assert abs(per_row - reference) < 6 * 0.5 * math.sqrt(n) * ULP   # unbiased rounding
    assert abs(accumulated - reference) < 2 * ULP
    # 1/n = 1e-6 keeps 15 significant bits (relative error < 2^-15), plus rounding
    assert abs(mean - reference / n) < abs(reference / n) * 2.0**-14 + 2 * ULP
