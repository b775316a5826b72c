"""Conversions between arithmetic and boolean sharing.

Written once over the backend primitives: an arithmetic sharing as two
boolean-shared summands (:func:`concilium.ops.summands.boolean_pair`, from
the backend's two summands or its ``n`` summands by carry-save adders),
``and_``, ``bit_inject``,
``random`` and ``reveal``.

* :func:`msb` (most significant bit) finishes A2B with a *carry tree* that only
  computes the carry into bit 63: a Sklansky/Brent-Kung reduction of (generate,
  propagate) pairs in 6 levels (ABY3, Mohassel and Rindal CCS 2018, Section 5.3,
  restricted to the top carry). Each level halves the lane width and the
  lanes are repacked, so the words sent shrink with the level: 1 + 1 + 1/2 +
  1/4 + 1/4 + 1/8 + 1/8 words (25 bytes) per element after the 8-byte input,
  against 12 words (96 bytes) for a full Kogge-Stone adder. 8 rounds.
* :func:`bit_decompose` is the full A2B: a Kogge-Stone parallel-prefix adder
  on the two summands, ``log2 64 = 6`` levels. 8 rounds, 12 words (96 bytes)
  plus the input.
* :func:`is_zero` tests ``u == v`` for the two summands of ``x`` (``u - v = x``)
  with a halving AND tree over the 64 bits of ``~(u ^ v)``: 7 rounds, 10
  bytes per element plus the input.
* :func:`to_arithmetic` (B2A of whole words) masks with a random arithmetic
  ``r``: computes ``c = b - r`` with a carry-save layer and one adder, opens
  ``c`` and returns ``r + c``. 10 rounds, about 120 bytes per element.
* Bits become arithmetic 0/1 values with the backend's ``bit_inject``.

Reveals: only :func:`to_arithmetic` opens anything, ``b - r`` for a uniformly
random ``r`` known to nobody, which is uniformly random.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from concilium.mpc.backend import Backend, Shares, value_shape
from concilium.ops import summands
from concilium.ops.bitwise import ONES, carry_order
from concilium.ring.arithmetic import RING_DTYPE

__all__ = ["and_bits", "bit_decompose", "is_zero", "msb", "to_arithmetic"]

_ONE = np.uint64(1)
Lanes = npt.NDArray[Any]  # unsigned lanes of any width
_NOT_ONE = np.uint64(0xFFFFFFFFFFFFFFFE)
_PAD = 8  # lanes are repacked down to bytes: element counts are padded to 8


def _flat_padded(x: Shares) -> tuple[Shares, int]:
    """``x`` as (components, m) with m a multiple of 8 (zero padding), and the size."""
    size = int(np.prod(value_shape(x), dtype=np.int64))
    flat = np.require(x, dtype=RING_DTYPE, requirements="C").reshape(x.shape[0], size)
    padded = -(-size // _PAD) * _PAD
    if padded != size:
        flat = np.concatenate(
            [flat, np.zeros((x.shape[0], padded - size), dtype=RING_DTYPE)], axis=1)
    return flat, size


def _and_lanes(backend: Backend, left: Lanes,
               right: Lanes) -> Lanes:
    """AND of two boolean sharings stored in narrow unsigned lanes (C, k), sent as
    64-bit words: k * itemsize must be a multiple of 8."""
    dtype = left.dtype
    words = backend.and_(np.ascontiguousarray(left).view(RING_DTYPE),
                         np.ascontiguousarray(right).view(RING_DTYPE))
    return np.ascontiguousarray(words).view(dtype)


_HALF = {np.dtype(np.uint64): np.uint32, np.dtype(np.uint32): np.uint16,
         np.dtype(np.uint16): np.uint8}


def _split(lanes: Lanes) -> tuple[Lanes,
                                                    Lanes]:
    """(upper, lower) halves of each lane, as arrays of the half-width dtype."""
    pairs = lanes.view(_HALF[lanes.dtype]).reshape(*lanes.shape, 2)
    return pairs[..., 1], pairs[..., 0]  # little-endian: index 1 is the upper half


def _carry_tree(backend: Backend, g: Shares, p: Shares) -> Shares:
    """Group generate of all 64 positions (in carry order), as bit 0 of each word."""
    count = g.shape[1]
    big_g: Lanes = g
    big_p: Lanes = p
    while big_g.dtype != np.uint8:  # 64 -> 32 -> 16 -> 8 bit lanes
        g_hi, g_lo = _split(big_g)
        p_hi, p_lo = _split(big_p)
        both = _and_lanes(backend, np.concatenate([p_hi, p_hi], axis=1),
                          np.concatenate([g_lo, p_lo], axis=1))
        big_g, big_p = g_hi ^ both[:, :count], both[:, count:]
    for width in (4, 2):  # 8 -> 4 -> 2 bit lanes, both halves in one byte
        shift, low = np.uint8(width), np.uint8((1 << width) - 1)
        g_hi, g_lo = big_g >> shift, big_g & low
        p_hi, p_lo = big_p >> shift, big_p & low
        both = _and_lanes(backend, p_hi ^ (p_hi << shift), g_lo ^ (p_lo << shift))
        big_g, big_p = g_hi ^ (both & low), both >> shift
    last = _and_lanes(backend, big_p >> np.uint8(1), big_g & np.uint8(1))
    top = (big_g >> np.uint8(1)) ^ last
    return top.astype(RING_DTYPE)


def msb(backend: Backend, x: Shares) -> Shares:
    """Boolean sharing of the sign bit (bit 63) of the arithmetic sharing ``x``, in
    bit 0 of each word.

    Reveals: nothing.
    """
    shape = value_shape(x)
    flat, size = _flat_padded(x)
    u, v = summands.boolean_pair(backend, flat, carry_order)
    p = u ^ v
    top = p & _ONE  # position 0 in carry order holds bit 63: u_63 ^ v_63
    g = backend.and_(u, v) & _NOT_ONE
    carry = _carry_tree(backend, g, p & _NOT_ONE)
    return (carry ^ top)[:, :size].reshape((x.shape[0], *shape))


def add_words(backend: Backend, a: Shares, b: Shares) -> Shares:
    """``a + b`` mod 2^64 on boolean-shared words: Kogge-Stone, 7 rounds, 12 words."""
    g = backend.and_(a, b)
    p = a ^ b
    big_g, big_p = g, p
    for level in range(6):
        shift = np.uint64(1 << level)
        if level < 5:
            both = backend.and_(np.stack([big_p, big_p], axis=1),
                                np.stack([big_g << shift, big_p << shift], axis=1))
            big_g, big_p = big_g ^ both[:, 0], both[:, 1]
        else:
            big_g = big_g ^ backend.and_(big_p, big_g << shift)
    return p ^ (big_g << _ONE)


def bit_decompose(backend: Backend, x: Shares) -> Shares:
    """Boolean sharing of the 64-bit two's-complement words of ``x`` (full A2B).

    Reveals: nothing.
    """
    u, v = summands.boolean_pair(backend, x)
    return add_words(backend, u, v)


def is_zero(backend: Backend, x: Shares) -> Shares:
    """Boolean sharing of ``[x == 0]`` in bit 0 of each word.

    Reveals: nothing.
    """
    shape = value_shape(x)
    flat, size = _flat_padded(x)
    u, v = summands.boolean_pair(backend, flat, difference=True)
    same = backend.xor_public(u ^ v, np.asarray(ONES))  # all ones iff u == v
    lanes: Lanes = same
    while lanes.dtype != np.uint8:
        upper, lower = _split(lanes)
        lanes = _and_lanes(backend, np.ascontiguousarray(upper), np.ascontiguousarray(lower))
    for width in (4, 2, 1):
        shift, low = np.uint8(width), np.uint8((1 << width) - 1)
        lanes = _and_lanes(backend, lanes >> shift, lanes & low)
    return lanes.astype(RING_DTYPE)[:, :size].reshape((x.shape[0], *shape))


def to_arithmetic(backend: Backend, words: Shares) -> Shares:
    """Arithmetic sharing of the boolean-shared 64-bit words ``words`` (B2A).

    Reveals: ``words - r`` mod 2^64 for a fresh uniformly random ``r`` known to
    nobody: a uniformly random value, independent of ``words``.
    """
    shape = value_shape(words)
    r = backend.random(shape)
    u, v = summands.boolean_pair(backend, backend.neg(r))  # u + v = -r
    # carry-save layer: words + u + v = s + 2 * carry
    s = words ^ u ^ v
    carry = backend.and_(words ^ u, words ^ v) ^ words
    masked = add_words(backend, s, carry << _ONE)
    opened = backend.reveal(masked, boolean=True)
    assert opened is not None
    return backend.add_public(r, opened)


def and_bits(backend: Backend, a: Shares, b: Shares) -> Shares:
    """AND of boolean sharings holding one bit each (bit 0 of each word), packed 64
    bits per word for the exchange: 1/8 byte per bit. Reveals: nothing."""
    shape = value_shape(a)
    size = int(np.prod(shape, dtype=np.int64))
    components = a.shape[0]

    def pack(bits: Shares) -> Shares:
        flat = np.require(bits, requirements="C").reshape(components, size) & _ONE
        padded = np.zeros((components, -(-size // 64) * 64), dtype=np.uint8)
        padded[:, :size] = flat
        return np.packbits(padded, axis=1, bitorder="little").view(RING_DTYPE)

    product = backend.and_(pack(a), pack(b))
    raw = np.ascontiguousarray(product).view(np.uint8)
    bits = np.unpackbits(raw, axis=1, count=size, bitorder="little")
    return bits.astype(RING_DTYPE).reshape((components, *shape))
