"""Division of wide values by counts, against Python's exact quotients."""

from __future__ import annotations

import secrets

import numpy as np
import pytest

from concilium.errors import ConfigurationError
from concilium.ops.count_division import divide_by_count, fits
from concilium.ring.arithmetic import from_signed, to_signed
from tests.conftest import run3


def _divide(numerators: list[int], counts: list[int], count_bits: int, quotient_bits: int,
            fraction_bits: int, protocol: str) -> np.ndarray:
    def program(session: object) -> np.ndarray:
        backend = session.backend  # type: ignore[attr-defined]
        me = session.party  # type: ignore[attr-defined]
        n = backend.input(0, from_signed(np.array(numerators, dtype=object)) if me == 0 else None)
        d = backend.input(1, from_signed(np.array(counts, dtype=object)) if me == 1 else None)
        return to_signed(backend.reveal(divide_by_count(
            backend, n, d, count_bits=count_bits, quotient_bits=quotient_bits,
            fraction_bits=fraction_bits)))

    return np.array([int(v) for v in run3(program, protocol=protocol)], dtype=object)


def _check(got: np.ndarray, numerators: list[int], counts: list[int], fraction_bits: int
           ) -> None:
    for value, n, d in zip(got, numerators, counts, strict=True):
        if d == 0:
            assert value == 0
            continue
        exact = n * 2**fraction_bits / d
        assert abs(value - exact) <= 4, (n, d, value, exact)  # a few units


def test_wide_sums_divide_by_their_counts(protocol: str) -> None:
    # sums of a money column (2^-16 units) over up to 2^26 rows: quotients below 2^36
    counts = [1, 2, 3, 7, 1000, 2**20 + 17, 2**26 - 1, 10**7, 0, 65536]
    means = [999_999.5, -3.25, 0.0, 123_456.789, -1e6, 0.001, 17.0, 1e6 - 1, 5.0, 2**-16]
    numerators = [round(m * 2**16) * c for m, c in zip(means, counts, strict=True)]
    numerators[3] += 5  # not an exact multiple
    got = _divide(numerators, counts, count_bits=26, quotient_bits=37, fraction_bits=0,
                  protocol=protocol)
    _check(got, numerators, counts, 0)


def test_random_numerators_and_counts_with_fraction_bits(protocol: str) -> None:
    counts = [secrets.randbelow(2**24) + 1 for _ in range(60)]
    quotients = [secrets.randbelow(2**30) - 2**29 for _ in range(60)]
    numerators = [q * c + secrets.randbelow(c) for q, c in zip(quotients, counts, strict=True)]
    got = _divide(numerators, counts, count_bits=24, quotient_bits=30, fraction_bits=8,
                  protocol=protocol)
    _check(got, numerators, counts, 8)


def test_without_fraction_bits_the_correction_leaves_a_few_units(protocol: str) -> None:
    counts = [secrets.randbelow(2**26) + 1 for _ in range(60)]
    quotients = [secrets.randbelow(2**37) - 2**36 for _ in range(60)]  # means to 1e6
    numerators = [q * c + secrets.randbelow(c) for q, c in zip(quotients, counts, strict=True)]
    got = _divide(numerators, counts, count_bits=26, quotient_bits=37, fraction_bits=0,
                  protocol=protocol)
    _check(got, numerators, counts, 0)


def test_sizes_beyond_the_ring_are_refused() -> None:
    assert fits(26, 37) and fits(26, 44) and not fits(26, 45) and not fits(10, 40, 10)
    assert not fits(32, 20)
    with pytest.raises(ConfigurationError, match="at most 61 bits"):
        divide_by_count(None, None, None, count_bits=30, quotient_bits=50)  # type: ignore[arg-type]
