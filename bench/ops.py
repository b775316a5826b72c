"""Operations-library benchmark: comparisons, division, sigmoid, sort, shuffle.

    python bench/ops.py --json                    # all operations, JSON list on stdout
    python bench/ops.py --ops lt --sizes 1000000
    python bench/ops.py --transport tls --ops lt,eq

Same record format as ``bench/engine.py`` (``seconds`` median of the timed
runs, ``numpy_seconds`` the plaintext operation in the same run, ``ratio``,
``rounds``, ``bytes_per_party`` of the busiest party, ``bytes_per_element``).
Comparison records add ``theory_bytes_per_element``, the count of the adder
Concilium uses for the sign bit (a carry tree whose lanes halve per level:
8 * (1 + 1 + 1/2 + 1/4 + 1/4 + 1/8 + 1/8) = 25 bytes, plus the 8-byte input
and the 16-byte bit injection of party 0, or 8/3 and 8 + 8/3 for every party
from 12288 elements on, where the input roles rotate over three slices), next
to ``kogge_stone_bytes_per_element``, what a full 64-bit Kogge-Stone adder
(ABY3 Section 5.3, 96 bytes) would send with the same input and injection.

Operations: ``lt`` (fixed point, ``x < y``), ``lt_int`` (full 64-bit range),
``eq`` (integers), ``a2b`` (full bit decomposition), ``div_fxp`` (secret /
secret), ``sigmoid``, ``exp``, ``sqrt``, ``sort`` (one fixed-point key and one
payload column), ``shuffle`` (one column).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from concilium.data import Session
from concilium.data import functions as fn
from concilium.ops import conversion
from concilium.ring import Prg
from engine import OpSpec, _party_program, _two_inputs, _uniform, main

SPU_LT = ("SPU 0.9.5 ABY3 on this machine: 0.032 s for 10^4 comparisons "
          "(issue 4); about 3 s extrapolated to 10^6")
BALANCED = 12288  # from here on the input roles rotate over three slices


def _adder_bytes(tree: float) -> Callable[[int], float]:
    """Bytes per comparison of the busiest party: the boolean-pair input (8, or 8/3
    each when balanced), the adder, and the bit injection (16, or 8 + 8/3)."""
    return lambda n: round(tree + (8 / 3 + 8 + 8 / 3 if n >= BALANCED else 8 + 16), 3)


COMPARISON = {"theory_bytes_per_element": _adder_bytes(25.0),
              "kogge_stone_bytes_per_element": _adder_bytes(96.0), "peer": SPU_LT}


def _binary(op: Callable[[Any, Any], Any], fixed: bool) -> Callable[[Session, int], Callable]:
    def prepare(session: Session, n: int) -> Callable[[], Any]:
        x, y = _two_inputs(session, n, fixed=fixed)
        return lambda: op(x, y)
    return prepare


def _unary(op: Callable[[Any], Any], low: float, high: float) -> Callable[[Session, int],
                                                                          Callable]:
    def prepare(session: Session, n: int) -> Callable[[], Any]:
        x = session.input(0, _uniform(n, low, high) if session.party == 0 else None, fixed=True)
        return lambda: op(x)
    return prepare


def _a2b(session: Session, n: int) -> Callable[[], Any]:
    x, _ = _two_inputs(session, n, fixed=False)
    return lambda: conversion.bit_decompose(session.backend, x.shares)


def _divide(session: Session, n: int) -> Callable[[], Any]:
    me = session.party
    a = session.input(0, _uniform(n, -1000, 1000) if me == 0 else None, fixed=True)
    b = session.input(1, _uniform(n, 0.5, 1000) if me == 1 else None, fixed=True)
    return lambda: a / b


def _sort(session: Session, n: int) -> Callable[[], Any]:
    me = session.party
    key = session.input(0, _uniform(n, -1000, 1000) if me == 0 else None, fixed=True)
    payload = session.input(1, np.arange(n) if me == 1 else None)
    return lambda: fn.sort(key, [payload])


def _shuffle(session: Session, n: int) -> Callable[[], Any]:
    column = session.input(0, np.arange(n) if session.party == 0 else None)
    return lambda: fn.shuffle(column)


def _numpy_binary(op: Callable[[Any, Any], Any], fixed: bool = True) -> Callable[[int], Callable]:
    def build(n: int) -> Callable[[], Any]:
        if fixed:
            x, y = _uniform(n), _uniform(n)
        else:
            x, y = (Prg.from_urandom().integers(n).view(np.int64) for _ in range(2))
        return lambda: op(x, y)
    return build


def _numpy_unary(op: Callable[[Any], Any], low: float, high: float) -> Callable[[int], Callable]:
    def build(n: int) -> Callable[[], Any]:
        x = _uniform(n, low, high)
        return lambda: op(x)
    return build


def _numpy_sort(n: int) -> Callable[[], Any]:
    key, payload = _uniform(n, -1000, 1000), np.arange(n)

    def run() -> Any:
        order = np.argsort(key, kind="stable")
        return key[order], payload[order]
    return run


def _numpy_shuffle(n: int) -> Callable[[], Any]:
    column = np.arange(n)
    return lambda: column[np.argsort(Prg.from_urandom().integers(n))]


def _numpy_a2b(n: int) -> Callable[[], Any]:
    x = Prg.from_urandom().integers(n)
    return lambda: np.unpackbits(x.view(np.uint8))


OPS: dict[str, OpSpec] = {
    spec.name: spec
    for spec in [
        OpSpec("lt", (10**4, 10**6), _binary(lambda x, y: x < y, True),
               _numpy_binary(np.less), extra=COMPARISON),
        OpSpec("lt_int", (10**6,), _binary(lambda x, y: x < y, False),
               _numpy_binary(np.less, fixed=False), extra={"range": "full 64-bit"}),
        OpSpec("eq", (10**6,), _binary(lambda x, y: x == y, False),
               _numpy_binary(np.equal, fixed=False),
               extra={"theory_bytes_per_element": _adder_bytes(10.0)}),
        OpSpec("a2b", (10**6,), _a2b, _numpy_a2b,
               extra={"theory_bytes_per_element": lambda n: round(
                   96 + (8 / 3 if n >= BALANCED else 8), 3)}),
        OpSpec("div_fxp", (10**5,), _divide, _numpy_binary(np.divide)),
        OpSpec("sigmoid", (10**5,), _unary(fn.sigmoid, -8, 8),
               _numpy_unary(lambda x: 1 / (1 + np.exp(-x)), -8, 8)),
        OpSpec("exp", (10**5,), _unary(fn.exp, -8, 8), _numpy_unary(np.exp, -8, 8)),
        OpSpec("sqrt", (10**5,), _unary(fn.sqrt, 0, 1000), _numpy_unary(np.sqrt, 0, 1000)),
        OpSpec("sort", (10**5,), _sort, _numpy_sort, extra={"payload_columns": 1}),
        OpSpec("shuffle", (10**6,), _shuffle, _numpy_shuffle),
    ]
}


def tls_party(session: Session, op: str, n: int, repeats: int, warmup: int) -> list[Any]:
    """Entry point of a party process for ``--transport tls`` (ops:tls_party)."""
    return _party_program(OPS[op], n, repeats, warmup)(session)


if __name__ == "__main__":
    raise SystemExit(main(registry=OPS, tls_entry="ops:tls_party",
                          description=__doc__.split("\n\n")[0]))
