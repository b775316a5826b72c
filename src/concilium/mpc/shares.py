"""Backend-neutral helpers for share arrays (leading axis: the components a party
holds): validating shapes that peers announce, and broadcasting operands."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from concilium.errors import ProtocolAbort
from concilium.mpc.backend import Shares, align, broadcast_shape, value_shape
from concilium.ring.arithmetic import RING_DTYPE, RingArray

__all__ = ["MAX_DIMENSIONS", "MAX_ELEMENTS", "check_shape_message", "flat_operands",
           "fold_public"]

MAX_DIMENSIONS = 8
MAX_ELEMENTS = 1 << 34


def check_shape_message(array: npt.NDArray[np.generic]) -> tuple[int, ...]:
    """Validate a shape announced by a peer (int64 vector of non-negative dims)."""
    if array.dtype != np.int64 or array.ndim != 1 or array.size > MAX_DIMENSIONS:
        raise ProtocolAbort("a peer announced a malformed shape")
    shape = tuple(int(dim) for dim in array)
    if any(dim < 0 for dim in shape) or int(np.prod(shape, dtype=object)) > MAX_ELEMENTS:
        raise ProtocolAbort(f"a peer announced an unacceptable shape {shape}")
    return shape


def flat_operands(x: Shares, y: Shares) -> tuple[RingArray, RingArray, tuple[int, ...]]:
    """Both operands broadcast to their common value shape, as C-contiguous
    (components, n) arrays (a 0-d value counts as one element), and that shape."""
    shape = broadcast_shape(value_shape(x), value_shape(y))
    work = shape or (1,)
    components = x.shape[0]

    def flat(shares: Shares) -> RingArray:
        full = np.broadcast_to(align(shares, len(work)), (components, *work))
        return np.require(full, requirements="C").reshape(components, -1)

    return flat(x), flat(y), shape


def fold_public(x: Shares, constant: RingArray, combine: Callable[..., npt.NDArray[np.uint64]],
                component: int | None) -> Shares:
    """``x`` broadcast with a public ``constant``, the constant combined (``np.add`` or
    ``np.bitwise_xor``) into this party's ``component`` (None: it holds none of the
    share that carries public values)."""
    constant = np.asarray(constant, dtype=RING_DTYPE)
    shape = broadcast_shape(value_shape(x), constant.shape)
    out = np.array(np.broadcast_to(align(x, len(shape)), (x.shape[0], *shape)))
    if component is not None:
        target = out[component, ...]
        combine(target, constant, out=target)
    return out
