"""Distributed Skellam noise: each compute party draws its own share of the noise,
and the parties obtain a sharing of the sum without anyone learning another's.

The Skellam distribution ``Sk(mu)`` is the difference of two independent
Poisson(mu) variables (variance ``2 mu``); sums of independent Skellam
variables are Skellam (``Sk(a) + Sk(b) = Sk(a + b)``), so when every party
adds ``Sk(mu / h)`` and at least ``h`` of them are honest, the honest
parties' noise alone is ``Sk(mu)`` or more, whatever the others add. The
mechanism and its privacy bound follow Agarwal, Kairouz & Liu, "The Skellam
Mechanism for Differentially Private Federated Learning" (NeurIPS 2021),
Theorem 3.5 (see :func:`skellam_rho`).

Sampling is exact integer arithmetic, never floating point (Mironov, "On
Significance of the Least Significant Bits for Differential Privacy", CCS
2012, attacks floating-point Laplace noise): the distribution's probabilities
are computed once per ``mu`` in 50-digit decimal arithmetic (Miller's
backward recurrence for the modified Bessel functions ``I_k(2 mu)``,
normalized by their sum), cut at ``K`` standard deviations and quantized to
a table of 64-bit cumulative thresholds; a draw is one 64-bit word from the
AES-CTR PRG (:mod:`concilium.ring.prg`) looked up in the table. The table's
distribution is known exactly: its total-variation distance from ``Sk(mu)``
is at most :attr:`SkellamTable.distance` (the cut tails plus one 2^-64 per
entry, about 10^-14), which the accounting adds to delta.
"""

from __future__ import annotations

import decimal
import functools
import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from concilium.errors import ConfigurationError
from concilium.ring.prg import Prg

__all__ = ["MAX_DEVIATION", "SkellamTable", "skellam_mu", "skellam_rho", "skellam_table"]

#: The largest standard deviation (in grid units) a table is built for: coarser
#: noise is drawn on a coarser grid (see :mod:`concilium.query.privacy`).
MAX_DEVIATION = 4096.0
_CUT = 14  # standard deviations kept in the table (the tails beyond are < 10^-40)
_DIGITS = 50


def skellam_rho(mu: float, sensitivity: float) -> float:
    """The zCDP loss of adding ``Sk(mu)`` to an integer query of L1 and L2
    sensitivity ``sensitivity`` (a scalar, or disjoint cells of a histogram).

    Agarwal et al. (2021), Theorem 3.5: ``Sk(mu)`` is (alpha, eps(alpha))-RDP with
    ``eps(alpha) <= alpha D^2 / (4 mu) + min(((2 alpha - 1) D^2 + 6 D) / (16 mu^2),
    3 D / (4 mu))``. For alpha >= 1 the first branch is at most ``alpha ((2 D^2 + 6 D)
    / (16 mu^2))``, so eps(alpha) <= alpha rho with ``rho = D^2 / (4 mu) + (D^2 + 3 D)
    / (8 mu^2)``: rho-zCDP (Bun & Steinke 2016, Definition 1.1)."""
    return sensitivity**2 / (4 * mu) + (sensitivity**2 + 3 * sensitivity) / (8 * mu**2)


def skellam_mu(rho: float, sensitivity: float) -> float:
    """The smallest ``mu`` whose :func:`skellam_rho` is at most ``rho`` (the positive
    root of ``(D^2 + 3 D)/8 t^2 + D^2/4 t - rho = 0`` in ``t = 1/mu``), rounded up."""
    if not (rho > 0 and sensitivity > 0):
        raise ConfigurationError("the Skellam mechanism needs rho > 0 and a sensitivity > 0")
    a = (sensitivity**2 + 3 * sensitivity) / 8
    b = sensitivity**2 / 4
    t = (-b + math.sqrt(b * b + 4 * a * rho)) / (2 * a)
    mu = 1.0 / t
    while skellam_rho(mu, sensitivity) > rho:  # float rounding: never below the bound
        mu = math.nextafter(mu, math.inf) * (1 + 1e-12)
    return mu


def _bessel_ratios(mu: decimal.Decimal, count: int) -> list[decimal.Decimal]:
    """``I_k(2 mu)`` for k = 0..count, up to one common factor (Miller's backward
    recurrence ``I_(k-1) = I_(k+1) + (k / mu) I_k``, started far enough above)."""
    start = count + 30 + int(4 * math.sqrt(float(mu)))
    values = [decimal.Decimal(0)] * (start + 2)
    values[start] = decimal.Decimal(1)  # the exponent range (10^6) absorbs the growth
    for k in range(start, 0, -1):
        values[k - 1] = values[k + 1] + (k / mu) * values[k]
    return [*values[:count + 1], sum(values[count + 1:], decimal.Decimal(0))]


@dataclass(frozen=True)
class SkellamTable:
    """A quantized Skellam(mu) distribution on ``[-cut, cut]``."""

    mu: float
    cut: int
    thresholds: npt.NDArray[np.uint64]  # 2 cut entries: draw = searchsorted - cut
    distance: float  # total variation from the exact Sk(mu)
    quantile95: int  # the smallest q with P(|Z| <= q) >= 0.95

    def sample(self, prg: Prg, shape: tuple[int, ...]) -> npt.NDArray[np.int64]:
        """Draws from this table: one PRG word each, looked up exactly."""
        words = prg.integers(shape)
        index = np.searchsorted(self.thresholds, words.reshape(-1), side="right")
        return (index.astype(np.int64) - self.cut).reshape(shape)

    def probabilities(self) -> npt.NDArray[np.float64]:
        """The table's probabilities of -cut..cut (for tests and intervals)."""
        edges = np.concatenate([[0.0], self.thresholds.astype(np.float64), [2.0**64]])
        return np.diff(edges) / 2.0**64


@functools.lru_cache(maxsize=64)
def skellam_table(mu: float) -> SkellamTable:
    """The table of ``Sk(mu)``, built once per ``mu`` (well under a second for the
    largest, ``sqrt(2 mu)`` = :data:`MAX_DEVIATION` x 1.5)."""
    if not (mu > 0 and math.isfinite(mu)) or math.sqrt(2 * mu) > 1.5 * MAX_DEVIATION:
        raise ConfigurationError(f"a Skellam table needs 0 < mu and a deviation of at most "
                                 f"{1.5 * MAX_DEVIATION:g}; got mu={mu:g}")
    context = decimal.Context(prec=_DIGITS, Emin=-10**6, Emax=10**6)
    with decimal.localcontext(context):
        exact_mu = decimal.Decimal(repr(mu))
        cut = math.ceil(_CUT * math.sqrt(2 * mu)) + 40
        values = _bessel_ratios(exact_mu, cut)
        tail = values[-1]
        body = values[:-1]
        total = body[0] + 2 * (sum(body[1:], decimal.Decimal(0)) + tail)
        probabilities = [v / total for v in body]  # P(Z = k) = P(Z = -k), k = 0..cut
        scale = decimal.Decimal(2) ** 64
        thresholds = []
        cumulative = decimal.Decimal(0)
        for k in range(-cut, cut):  # the threshold after value k
            cumulative += probabilities[abs(k)]
            thresholds.append(min(int(cumulative * scale), (1 << 64) - 1))
        tail_mass = float(2 * tail / total)
        inside = probabilities[0]
        quantile = 0
        while inside < decimal.Decimal("0.95"):
            quantile += 1
            inside += 2 * probabilities[quantile]
    return SkellamTable(mu, cut, np.array(thresholds, dtype=np.uint64),
                        tail_mass + (2 * cut + 1) * 2.0**-64, quantile)
