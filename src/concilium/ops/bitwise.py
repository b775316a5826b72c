"""Local bit manipulation of 64-bit words, valid on boolean shares.

Every function here is a bit permutation or another XOR-linear map, so
applying it to each share component of a boolean sharing gives a sharing of
the map applied to the secret word. Nothing here communicates.
"""

from __future__ import annotations

import numpy as np

from concilium.ring.arithmetic import RING_DTYPE, RingArray

__all__ = [
    "ONES",
    "carry_order",
    "compress_even",
    "delta_swap",
    "index_reverse",
    "parity",
    "reverse_words",
    "rotate_left",
]

ONES = np.uint64(0xFFFFFFFFFFFFFFFF)
_BYTE_REVERSED = np.array([int(f"{b:08b}"[::-1], 2) for b in range(256)], dtype=np.uint8)
# (mask, shift) pairs of the three delta swaps that reverse a bit position's
# six index bits: swap index bits (0, 5), (1, 4), (2, 3).
_INDEX_SWAPS = (
    (np.uint64(0x00000000AAAAAAAA), np.uint64(31)),
    (np.uint64(0x0000CCCC0000CCCC), np.uint64(14)),
    (np.uint64(0x00F000F000F000F0), np.uint64(4)),
)
# (mask, shift) steps of the bit "unshuffle": bit 2i moves to bit i.
_COMPRESS = (
    (np.uint64(0x3333333333333333), np.uint64(1)),
    (np.uint64(0x0F0F0F0F0F0F0F0F), np.uint64(2)),
    (np.uint64(0x00FF00FF00FF00FF), np.uint64(4)),
    (np.uint64(0x0000FFFF0000FFFF), np.uint64(8)),
    (np.uint64(0x00000000FFFFFFFF), np.uint64(16)),
)
_EVEN = np.uint64(0x5555555555555555)


def delta_swap(words: RingArray, mask: np.uint64, shift: np.uint64) -> RingArray:
    """Swap the bits selected by ``mask`` with the bits ``shift`` places above them."""
    t = ((words >> shift) ^ words) & mask
    return words ^ t ^ (t << shift)


def index_reverse(words: RingArray) -> RingArray:
    """Move bit ``p`` to bit ``reverse6(p)`` (its 6-bit index read backwards)."""
    out = words
    for mask, shift in _INDEX_SWAPS:
        out = delta_swap(out, mask, shift)
    return out


def rotate_left(words: RingArray, count: int) -> RingArray:
    shift = np.uint64(count % 64)
    if not shift:
        return words.copy()
    return (words << shift) ^ (words >> np.uint64(64 - int(shift)))


def carry_order(words: RingArray) -> RingArray:
    """The bit order of :func:`concilium.ops.conversion.msb`'s carry tree: rotate left by
    one (bit 63 to position 0) and index-reverse, so that every level of the tree
    combines the upper half of each lane with its lower half."""
    return index_reverse(rotate_left(words, 1))


def reverse_words(words: RingArray) -> RingArray:
    """Move bit ``p`` to bit ``63 - p``."""
    array = np.require(words, dtype=RING_DTYPE, requirements="C")
    flipped = _BYTE_REVERSED[array.view(np.uint8)].view(RING_DTYPE)
    return flipped.byteswap()


def compress_even(words: RingArray) -> RingArray:
    """Move bit ``2i`` to bit ``i`` (odd bits are dropped)."""
    out = words & _EVEN
    for mask, shift in _COMPRESS:
        out = (out ^ (out >> shift)) & mask
    return out


def parity(words: RingArray) -> RingArray:
    """The XOR of all 64 bits of each word, in bit 0 (other bits zero)."""
    out = words.copy()
    for shift in (32, 16, 8, 4, 2, 1):
        out ^= out >> np.uint64(shift)
    return out & np.uint64(1)
