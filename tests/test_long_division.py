"""Exact long division of wide integers, against Python's integers."""

from __future__ import annotations

import numpy as np
import pytest

from concilium.errors import ConfigurationError
from concilium.ops.long_division import long_divide
from concilium.ring.arithmetic import RING_DTYPE, from_signed, to_signed
from tests.conftest import run3


def _divide(numerators: list[int], denominators: list[int], quotient_bits: int,
            fraction_bits: int, protocol: str) -> list[int]:
    def program(session: object) -> np.ndarray:
        backend = session.backend  # type: ignore[attr-defined]
        me = session.party  # type: ignore[attr-defined]
        n = backend.input(0, from_signed(np.array(numerators, dtype=object)) if me == 0 else None)
        d = backend.input(1, from_signed(np.array(denominators, dtype=object)) if me == 1
                          else None)
        return to_signed(backend.reveal(long_divide(backend, n, d, quotient_bits=quotient_bits,
                                                    fraction_bits=fraction_bits)))

    return [int(v) for v in run3(program, protocol=protocol)]


def _expected(n: int, d: int, fraction_bits: int) -> int:
    if d == 0:
        return 0
    q = abs(n) * 2**fraction_bits // d
    return -q if n < 0 else q


def test_wide_fixed_point_sums_divide_into_their_means(protocol: str) -> None:
    # sums of a money column over ten million rows, in 2^-16 units (fixed point): the
    # quotient is the fixed-point mean, within the column's bounds
    numerators = [10**13 * 2**16 // 3, -(2**61), 0, 2**46 + 1, 10**6 * 2**16 * 7]
    denominators = [10**7, 2**40, 9, 2**20, 7]
    got = _divide(numerators, denominators, quotient_bits=20 + 16, fraction_bits=0,
                  protocol=protocol)
    assert got == [_expected(n, d, 0) for n, d in zip(numerators, denominators, strict=True)]


def test_integer_sums_divide_with_fraction_bits(protocol: str) -> None:
    numerators = [123456789012, 7, -5, -(2**40) - 3, 10**12]
    denominators = [1000, 3, 2, 2**10, 10**12]
    got = _divide(numerators, denominators, quotient_bits=31, fraction_bits=16,
                  protocol=protocol)
    assert got == [_expected(n, d, 16) for n, d in zip(numerators, denominators, strict=True)]


def test_a_zero_divisor_gives_zero_and_integer_quotients_need_no_fraction(protocol: str
                                                                         ) -> None:
    got = _divide([1000, 999, -12, 5, 2**61 - 1], [0, 10, 5, 7, 2**60], quotient_bits=8,
                  fraction_bits=0, protocol=protocol)
    assert got == [0, 99, -2, 0, 1]


def test_bit_budgets_are_checked() -> None:
    with pytest.raises(ConfigurationError, match="at most 62"):
        run3(lambda s: long_divide(s.backend, s.backend.share_public(
            np.ones(1, dtype=RING_DTYPE)), s.backend.share_public(np.ones(1, dtype=RING_DTYPE)),
            quotient_bits=50, fraction_bits=20))
