"""Measure the fixed-point functions' errors and print the table of docs/ops-library.md.

    python docs/error_table.py [--points N] [--check]

Runs the three parties in memory on N points per function spread over the
stated domain (log-spaced where the domain spans magnitudes), compares with
numpy in float64 on the same rounded inputs, and prints a markdown table with
the stated bound and the measured maximum errors. With ``--check`` it exits
with status 1 if any measured error exceeds its bound.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from concilium.data import Session
from concilium.data import functions as fn
from concilium.ops.accuracy import ACCURACY, Accuracy
from concilium.testing import run_parties

ULP = 2.0**-16
REFERENCE: dict[str, Callable[..., np.ndarray]] = {
    "divide": np.divide,
    "reciprocal": lambda x: 1.0 / x,
    "sqrt": np.sqrt,
    "inverse_sqrt": lambda x: 1.0 / np.sqrt(x),
    "exp": lambda x: np.where(x < -10.39, 0.0, np.exp(x)),
    "log": np.log,
    "sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)),
}


def _rounded(values: np.ndarray) -> np.ndarray:
    return np.round(values * 2**16) / 2**16


def sample(spec: Accuracy, points: int, seed: int = 0) -> tuple[np.ndarray, ...]:
    """Inputs covering the domain, fixed-point rounded, from a seeded generator
    (test data only; shares are never drawn from numpy)."""
    rng = np.random.default_rng(seed)
    if spec.function == "divide":
        magnitude_b = 2.0 ** rng.uniform(-16, 30.99, points)
        b = _rounded(magnitude_b * rng.choice([-1.0, 1.0], points))
        b[b == 0] = 1.0
        limit = np.minimum(2.0**30.99, np.abs(b) * 2.0**30.99)
        a = _rounded(rng.uniform(-1, 1, points) * limit * rng.uniform(0, 1, points) ** 8)
        return a, b
    if spec.low > 0 or spec.function == "sqrt":
        low = max(spec.low, 2.0**-16)
        x = 2.0 ** rng.uniform(np.log2(low), np.log2(spec.high) - 1e-9, points)
        if spec.function == "reciprocal":
            x *= rng.choice([-1.0, 1.0], points)
        x[:3] = [low, 1.0, spec.high - 1.0]
    else:
        x = rng.uniform(spec.low, spec.high, points)
        x[:3] = [spec.low, 0.0, spec.high]
    return (_rounded(x),)


def measure(spec: Accuracy, points: int, seed: int = 0,
            protocol: str = "rep3", parties: int = 3) -> dict[str, float]:
    """Run the function securely and return its worst errors against the bound."""
    inputs = sample(spec, points, seed)
    secure = getattr(fn, spec.function)

    def program(session: Session) -> np.ndarray:
        secrets = [session.input(k, values if session.party == k else None, fixed=True)
                   for k, values in enumerate(inputs)]
        return np.asarray(secure(*secrets).reveal())

    computed = run_parties(parties, program, protocol=protocol)[0]
    exact = REFERENCE[spec.function](*inputs)
    error = np.abs(computed - exact)
    large = np.abs(exact) >= 256.0  # where one unit is below 2^-24 relative
    return {
        "max_error_units": float(np.max(error / ULP)) if error.size else 0.0,
        "max_relative_above_256": float(np.max(error[large] / np.abs(exact[large])))
        if large.any() else 0.0,
        "worst_ratio_to_bound": float(np.max(error / np.vectorize(spec.bound)(exact))),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--points", type=int, default=20000)
    parser.add_argument("--check", action="store_true")
    options = parser.parse_args()
    print("| function | domain | stated bound | max error (units of 2^-16) "
          "| max relative error (exact value 256 or more) | worst error / bound |")
    print("|---|---|---|---|---|---|")
    failed = False
    for spec in ACCURACY:
        result = measure(spec, options.points)
        failed |= result["worst_ratio_to_bound"] > 1.0
        relative = f" + 2^{np.log2(spec.relative):.0f} rel" if spec.relative else ""
        print(f"| {spec.function} | {spec.domain} | {spec.units:g} units{relative} "
              f"| {result['max_error_units']:.3g} | {result['max_relative_above_256']:.2e} "
              f"| {result['worst_ratio_to_bound']:.2f} |")
    return 1 if failed and options.check else 0


if __name__ == "__main__":
    sys.exit(main())
