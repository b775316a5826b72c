"""AES-128-CTR pseudorandom generator (``cryptography``), filling numpy buffers.

Every random ring element in Concilium, share or key, comes from here or from
``os.urandom``/``secrets``: a :class:`Prg` is keyed either with
``os.urandom(16)`` (private randomness) or with a key agreed between parties
(correlated randomness, so that two parties draw the *same* stream without
talking). The keystream is AES-128 in counter mode. One key can carry many
independent streams: :func:`stream_nonce` places a (tag, purpose) pair in the
top 96 bits of the initial counter block, leaving a 32-bit block counter
(64 GiB per stream), so two parties that name the same (tag, purpose) draw the
same values regardless of what else they drew, and distinct names never
overlap.

Speed: the keystream is written straight into the caller's preallocated
buffer (``update_into``), about 7-10 GB/s on this machine's AES-NI; letting
``cryptography`` allocate output is about 5x slower.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from concilium.errors import ConfigurationError
from concilium.ring.arithmetic import RING_DTYPE, RingArray

__all__ = ["KEY_BYTES", "Prg", "new_key", "stream_nonce"]

KEY_BYTES = 16
_ZERO_IV = bytes(16)
# AES-CTR encrypts zeros to produce the keystream; one immutable block of zeros
# serves every stream (allocating zeros per call would touch fresh memory).
_ZEROS = memoryview(bytes(1 << 20))


def stream_nonce(tag: int, purpose: int) -> int:
    """The initial counter block of stream (tag, purpose): ``tag || purpose || 0^32``."""
    if not 0 <= tag < 1 << 64 or not 0 <= purpose < 1 << 32:
        raise ConfigurationError("stream tag must fit 64 bits and purpose 32 bits")
    return (tag << 64) | (purpose << 32)


def new_key() -> bytes:
    """A fresh 128-bit key from the operating system's CSPRNG."""
    return os.urandom(KEY_BYTES)


class Prg:
    """A deterministic stream of pseudorandom bytes under one AES key.

    Two ``Prg`` objects with the same key produce the same stream, provided
    they are asked for the same amounts in the same order.
    """

    __slots__ = ("_encryptor",)

    def __init__(self, key: bytes, nonce: int = 0) -> None:
        if not isinstance(key, bytes | bytearray) or len(key) != KEY_BYTES:
            raise ConfigurationError(f"a PRG key must be {KEY_BYTES} bytes")
        counter = nonce.to_bytes(16, "big") if nonce else _ZERO_IV
        self._encryptor = Cipher(algorithms.AES(bytes(key)), modes.CTR(counter)).encryptor()

    @classmethod
    def from_urandom(cls) -> Prg:
        """A PRG under a fresh key from ``os.urandom`` (private randomness)."""
        return cls(new_key())

    def fill(self, out: npt.NDArray[np.generic]) -> None:
        """Overwrite a C-contiguous, writable array with keystream bytes, in place."""
        if not out.flags.c_contiguous or not out.flags.writeable:
            raise ValueError("Prg.fill needs a C-contiguous, writable array")
        size = out.nbytes
        target = out.reshape(-1).view(np.uint8).data
        step = len(_ZEROS)
        for start in range(0, size, step):
            end = min(size, start + step)
            self._encryptor.update_into(_ZEROS[: end - start], target[start:end])

    def integers(self, shape: int | Sequence[int]) -> RingArray:
        """A new array of uniformly random ring elements."""
        out = np.empty(shape, dtype=RING_DTYPE)
        self.fill(out)
        return out

    def random_bytes(self, count: int) -> bytes:
        """``count`` keystream bytes."""
        out = np.empty(count, dtype=np.uint8)
        self.fill(out)
        return out.tobytes()

    def uniform(self, shape: int | Sequence[int]) -> npt.NDArray[np.float64]:
        """Uniform floats in [0, 1) with 53 random bits each."""
        return (self.integers(shape) >> np.uint64(11)).astype(np.float64) * 2.0**-53
