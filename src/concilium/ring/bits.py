"""Bit packing for boolean sharing.

Boolean shares are XOR shares of 64-bit words. Two layouts are used:

* *word layout*: bit ``i`` of word ``j`` is bit ``i`` of ring element ``j``
  (a bit decomposition without moving anything);
* *packed layout*: 64 independent one-bit values per word, bit ``i`` of word
  ``j`` is value ``64 * j + i`` (so 10^6 comparison bits travel as 125 kB).

All functions are vectorized; none loops over elements in Python.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from concilium.ring.arithmetic import RING_DTYPE, RingArray

__all__ = ["bit_of", "pack_bits", "packed_words", "unpack_bits"]


def packed_words(count: int) -> int:
    """Number of 64-bit words that hold ``count`` packed bits."""
    return (count + 63) // 64


def pack_bits(bits: npt.ArrayLike) -> RingArray:
    """Pack a flat array of 0/1 values into 64-bit words (packed layout).

    The last word is zero-padded. ``unpack_bits(pack_bits(b), len(b))`` is ``b``.
    """
    flat = np.asarray(bits).astype(bool, copy=False).ravel()
    words = packed_words(flat.size)
    padded = np.zeros(words * 64, dtype=bool)
    padded[: flat.size] = flat
    packed = np.packbits(padded, bitorder="little")
    return packed.view(RING_DTYPE).copy()


def unpack_bits(words: npt.NDArray[np.uint64], count: int) -> npt.NDArray[np.bool_]:
    """Inverse of :func:`pack_bits`: the first ``count`` bits as booleans."""
    raw = np.require(words, dtype=RING_DTYPE, requirements="C").view(np.uint8)
    return np.unpackbits(raw, bitorder="little", count=count).astype(bool)


def bit_of(words: npt.NDArray[np.uint64], index: int) -> RingArray:
    """Bit ``index`` (0 = least significant) of each word, as 0/1 ring elements."""
    if not 0 <= index < 64:
        raise ValueError(f"bit index must be in 0..63, got {index}")
    return (np.asarray(words, dtype=RING_DTYPE) >> np.uint64(index)) & np.uint64(1)
