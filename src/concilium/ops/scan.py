"""Segmented scans beyond sums: the running minimum or maximum of rows sorted by
group, restarted at each group's first row.

Hillis and Steele's log-depth scan ("Data parallel algorithms", CACM 1986),
with a combine step that is a secure comparison and a selection: at level
``s`` row ``t`` takes the best of its window and of row ``t - s``'s window when
no group starts in between (a running product of the "continues the previous
row" flags). ``ceil(log2 n)`` levels, each one comparison and one
multiplication round on the ``n`` rows.

Reveals: nothing.
"""

from __future__ import annotations

import numpy as np

from concilium.errors import ShapeMismatch
from concilium.mpc.backend import Backend, Shares, align, value_shape
from concilium.ops.compare import less_than, logical_not

__all__ = ["segmented_extreme"]


def segmented_extreme(backend: Backend, starts: Shares, values: Shares, *, largest: bool,
                      full_range: bool = True) -> Shares:
    """Running minimum (maximum with ``largest``) of ``values`` (..., n), restarted
    wherever the 0/1 ``starts`` (n or broadcastable to the values) is 1: each group's
    last row holds its extreme.

    Reveals: nothing.
    """
    length = value_shape(values)[-1]
    if value_shape(starts)[-1] != length:
        raise ShapeMismatch("values and flags must have the same number of rows")
    linked = align(logical_not(backend, starts), len(value_shape(values)))
    linked = np.ascontiguousarray(np.broadcast_to(linked, values.shape))
    best = values
    shift = 1
    while shift < length:
        earlier, current = best[..., :-shift], best[..., shift:]
        better = (less_than(backend, current, earlier, full_range=full_range) if largest
                  else less_than(backend, earlier, current, full_range=full_range))
        both = backend.mul(np.stack([linked[..., shift:], linked[..., shift:]], axis=1),
                           np.stack([better, linked[..., :-shift]], axis=1))
        take, joined = both[:, 0], both[:, 1]
        chosen = backend.add(current, backend.mul(take, backend.sub(earlier, current)))
        best = np.concatenate([best[..., :shift], chosen], axis=-1)
        linked = np.concatenate([linked[..., :shift], joined], axis=-1)
        shift *= 2
    return best
