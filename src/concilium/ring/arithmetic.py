"""The ring Z_2^64 on numpy ``uint64`` arrays.

Wraparound of ``uint64`` arithmetic *is* reduction modulo 2^64, so sums,
differences and products of ring arrays are plain numpy operations. Signed
integers use two's complement: a value ``v`` with ``-2^63 <= v < 2^63`` is the
ring element ``v mod 2^64``, and :func:`to_signed` reads it back.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from concilium.errors import InputError, RingRangeError

__all__ = [
    "RING_BITS",
    "RING_DTYPE",
    "RingArray",
    "as_ring",
    "from_signed",
    "to_signed",
]

RING_BITS = 64
RING_DTYPE = np.dtype("<u8")

RingArray = npt.NDArray[np.uint64]

_INT64_MIN = -(2**63)
_UINT64_MAX = 2**64 - 1


def from_signed(values: Any) -> RingArray:
    """Encode integers as ring elements (two's complement for negatives).

    Accepts Python ints, sequences of them, and numpy integer or boolean
    arrays. Refuses floats (use :class:`~concilium.ring.fixed.FixedPointCodec`)
    and integers outside ``[-2^63, 2^64)`` with :class:`RingRangeError`.
    """
    array = np.asarray(values)
    kind = array.dtype.kind
    if kind in "fO" and not isinstance(values, np.ndarray | np.generic):
        # a Python sequence: numpy turns ints beyond int64 into floats or objects
        elements = np.asarray(values, dtype=object)
        if all(isinstance(item, int | np.integer) for item in elements.ravel()):
            return _from_python_ints(elements)
    if kind == "b":
        return array.astype(RING_DTYPE)
    if kind == "u":
        return array.astype(RING_DTYPE)
    if kind == "i":
        return array.astype(np.int64, copy=False).view(RING_DTYPE).copy()
    if kind == "f" or kind == "c":
        raise InputError(
            "floating-point values were given where integers are expected; "
            "encode them as fixed point (fixed=True) or round them first"
        )
    if kind == "O":
        return _from_python_ints(array)
    raise InputError(f"cannot encode values of dtype {array.dtype} as ring integers")


def _from_python_ints(array: npt.NDArray[Any]) -> RingArray:
    flat = array.ravel()
    out = np.empty(flat.shape, dtype=RING_DTYPE)
    for index, item in enumerate(flat):
        if isinstance(item, bool | np.bool_):
            item = int(item)
        if not isinstance(item, int | np.integer):
            raise InputError(
                f"value at flat index {index} is a {type(item).__name__}, not an integer"
            )
        number = int(item)
        if number < _INT64_MIN or number > _UINT64_MAX:
            raise RingRangeError(
                f"integer at flat index {index} does not fit the 64-bit ring "
                f"(allowed: -2^63 .. 2^64-1); scale it down or split it"
            )
        out[index] = number % 2**64
    return out.reshape(array.shape)


def as_ring(values: Any) -> RingArray:
    """Return ``values`` as a C-contiguous ``uint64`` array (no copy if already one)."""
    array = np.asarray(values)
    if array.dtype != RING_DTYPE:
        return from_signed(array)
    return np.require(array, requirements="C")


def to_signed(ring: npt.NDArray[np.uint64]) -> npt.NDArray[np.int64]:
    """Read ring elements as signed two's-complement integers (a view, no copy)."""
    return np.asarray(ring, dtype=RING_DTYPE).view(np.int64)
