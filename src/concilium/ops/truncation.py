"""Exact fixed-point truncation: ``floor(x / 2^d)``, deterministic.

The backend's reliable truncation returns ``floor(x / 2^d)`` or that plus one
(unbiased stochastic rounding). The exact one corrects it with one
comparison: with ``t`` the reliable result, the remainder ``r = x - t 2^d``
lies in ``[-2^d, 2^d)`` and is negative exactly when ``t`` is one too large,
so ``floor(x / 2^d) = t - [r < 0]``. This is the "exact truncation at about
the cost of one comparison" of DESIGN.md section 2: 16 + 49 bytes and 12
rounds per element on ``rep3`` (plus a multiplication's 8 bytes when
truncating a product), for every ``|x| < 2^62``.

Use it for values that are released (a released average must not depend on
a coin flip) and where a downstream comparison needs the exact floor.

Reveals: nothing.
"""

from __future__ import annotations

import numpy as np

from concilium.mpc.backend import Backend, Shares
from concilium.ops.compare import less_than_zero
from concilium.ring.arithmetic import RING_DTYPE

__all__ = ["exact_truncate"]


def exact_truncate(backend: Backend, x: Shares, bits: int) -> Shares:
    """``floor(x / 2^bits)`` (signed), exactly, for ``|x| < 2^62``. Reveals: nothing."""
    t = backend.trunc(x, bits, "reliable")
    remainder = backend.sub(x, backend.mul_public(t, np.asarray(1 << bits, dtype=RING_DTYPE)))
    return backend.sub(t, less_than_zero(backend, remainder))
