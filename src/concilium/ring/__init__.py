"""Layer 1: the ring Z_2^64, fixed-point codec, bit packing and the AES-CTR PRG.

Imports no other Concilium layer.
"""

from concilium.ring.arithmetic import (
    RING_BITS,
    RING_DTYPE,
    RingArray,
    as_ring,
    from_signed,
    to_signed,
)
from concilium.ring.bits import bit_of, pack_bits, packed_words, unpack_bits
from concilium.ring.blocks import BLOCK_ELEMENTS, blocks
from concilium.ring.fixed import DEFAULT_FRACTIONAL_BITS, FixedPointCodec
from concilium.ring.memory import tune_allocator
from concilium.ring.prg import KEY_BYTES, Prg, new_key

__all__ = [
    "BLOCK_ELEMENTS",
    "DEFAULT_FRACTIONAL_BITS",
    "KEY_BYTES",
    "RING_BITS",
    "RING_DTYPE",
    "FixedPointCodec",
    "Prg",
    "RingArray",
    "as_ring",
    "bit_of",
    "blocks",
    "from_signed",
    "new_key",
    "pack_bits",
    "packed_words",
    "to_signed",
    "tune_allocator",
    "unpack_bits",
]
