"""Same-run comparison with a peer: SPU's ABY3 simulator next to Concilium's rep3.

Both run three parties as threads of one process. Each measures the whole
``input x (party 0), input y (party 1), op, reveal`` job for ``x * y`` in fixed
point, ``x < y`` and ``x / y``, median of 5 after a warm-up. SPU pins its own
numpy and jax, so run this from a separate virtual environment:

    python3 -m venv /tmp/spuenv
    /tmp/spuenv/bin/pip install spu==0.9.5 cryptography
    /tmp/spuenv/bin/pip install --no-deps -e .
    /tmp/spuenv/bin/python bench/peer_spu.py
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import spu  # type: ignore[import-not-found]
import spu.utils.simulation as spsim  # type: ignore[import-not-found]

try:  # the three-party comparisons run Concilium beside SPU; --cheetah runs SPU alone
    from concilium.data import Session
    from concilium.ring import Prg
    from concilium.testing import run_parties
except ImportError:  # a Python with SPU but without Concilium's dependencies
    pass


def _median(job: Callable[[], Any], repeats: int = 5) -> float:
    job()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        job()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _compare(n: int) -> dict[str, Any]:
    x = (Prg.from_urandom().uniform(n) - 0.5) * 16
    y = (Prg.from_urandom().uniform(n) - 0.5) * 16
    config = spu.RuntimeConfig(protocol=spu.ProtocolKind.ABY3, field=spu.FieldType.FM64,
                               fxp_fraction_bits=18)
    spu_multiply = spsim.sim_jax(spsim.Simulator(3, config), lambda a, b: a * b)

    def concilium(mode: str) -> Callable[[], Any]:
        def program(session: Session) -> Any:
            a = session.input(0, x if session.party == 0 else None, fixed=True)
            b = session.input(1, y if session.party == 1 else None, fixed=True)
            return a.multiply(b, truncation=mode).reveal()
        return lambda: run_parties(3, program)

    spu_seconds = _median(lambda: spu_multiply(x, y))
    fast, reliable = _median(concilium("fast")), _median(concilium("reliable"))
    return {"op": "input_mul_fxp_reveal", "n": n, "spu_aby3_seconds": spu_seconds,
            "concilium_fast_seconds": fast, "concilium_reliable_seconds": reliable,
            "spu_over_concilium_fast": spu_seconds / fast,
            "spu_over_concilium_reliable": spu_seconds / reliable}


def _compare_op(op: str, n: int) -> dict[str, Any]:
    """``x < y`` or ``x / y`` (fixed point) in both systems; Concilium uses its
    default (reliable) truncation inside the division."""
    x = (Prg.from_urandom().uniform(n) - 0.5) * 2000
    y = Prg.from_urandom().uniform(n) * 1000 + 0.5
    config = spu.RuntimeConfig(protocol=spu.ProtocolKind.ABY3, field=spu.FieldType.FM64,
                               fxp_fraction_bits=18)
    function = (lambda a, b: a < b) if op == "lt" else (lambda a, b: a / b)
    spu_job = spsim.sim_jax(spsim.Simulator(3, config), function)

    def program(session: Session) -> Any:
        a = session.input(0, x if session.party == 0 else None, fixed=True)
        b = session.input(1, y if session.party == 1 else None, fixed=True)
        return ((a < b) if op == "lt" else (a / b)).reveal()

    spu_seconds = _median(lambda: spu_job(x, y))
    ours = _median(lambda: run_parties(3, program))
    spu_result = np.asarray(spu_job(x, y), dtype=np.float64)
    our_result = np.asarray(run_parties(3, program)[0], dtype=np.float64)
    exact = ((x < y) if op == "lt" else x / y).astype(np.float64)
    return {"op": f"input_{op}_reveal", "n": n, "spu_aby3_seconds": spu_seconds,
            "concilium_seconds": ours, "spu_over_concilium": spu_seconds / ours,
            "spu_max_error": float(abs(spu_result - exact).max()),
            "concilium_max_error": float(abs(our_result - exact).max())}


def cheetah(n: int, compare: int) -> dict[str, Any]:
    """SPU's two-party CHEETAH (no dealer): ``x * y`` in fixed point on ``n`` pairs
    and ``x < y`` on ``compare`` pairs, each whole job including its setup, median
    of 3 (``bench/ot.py --peer`` calls this)."""
    data = np.random.default_rng(1)  # test data, not secrets
    x, y = (data.uniform(size=n) - 0.5) * 16, (data.uniform(size=n) - 0.5) * 16
    u, v = (data.uniform(size=compare) - 0.5) * 2000, (data.uniform(size=compare) - 0.5) * 2000
    config = spu.RuntimeConfig(protocol=spu.ProtocolKind.CHEETAH, field=spu.FieldType.FM64,
                               fxp_fraction_bits=16)
    multiply = spsim.sim_jax(spsim.Simulator(2, config), lambda a, b: a * b)
    less = spsim.sim_jax(spsim.Simulator(2, config), lambda a, b: a < b)
    error = float(np.abs(np.asarray(multiply(x, y), dtype=np.float64) - x * y).max())
    wrong = int(np.sum(np.asarray(less(u, v)) != (u < v)))
    return {"op": "cheetah", "n": n, "compare_n": compare,
            "spu_cheetah_multiply_seconds": _median(lambda: multiply(x, y), repeats=3),
            "spu_cheetah_less_seconds": _median(lambda: less(u, v), repeats=3),
            "spu_max_error": error, "spu_wrong_comparisons": wrong}


def main() -> None:
    import sys

    if len(sys.argv) == 4 and sys.argv[1] == "--cheetah":
        print(json.dumps(cheetah(int(sys.argv[2]), int(sys.argv[3]))))
        return
    records = [_compare(n) for n in (10**5, 10**6)]
    records += [_compare_op("lt", n) for n in (10**4, 10**6)]
    records.append(_compare_op("div", 10**5))
    print(json.dumps(records, indent=1))


if __name__ == "__main__":
    main()
