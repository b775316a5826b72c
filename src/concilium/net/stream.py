"""Frames over a byte stream: read one frame at a time, validating before allocating.

The TLS transport decrypts into whatever buffer it is given; this module asks
for exactly the bytes of the next field (prefix, shape, payload) and writes
the payload straight into a fresh numpy array, so a frame is copied once.
Every malformed input raises :class:`~concilium.errors.BadFrame`; a stream
that ends mid-frame raises :class:`EOFError`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from concilium.net.frame import (
    FRAME_PREFIX_BYTES,
    Frame,
    FrameLimits,
    parse_prefix,
    parse_shape,
)

__all__ = ["ReadExact", "read_frame"]

#: ``read_exact(buffer)`` fills the whole writable buffer or raises EOFError.
ReadExact = Callable[[memoryview], None]


def read_frame(read_exact: ReadExact, limits: FrameLimits) -> Frame:
    """Read, check and return the next frame (with its header bytes, for digests)."""
    prefix_bytes = bytearray(FRAME_PREFIX_BYTES)
    read_exact(memoryview(prefix_bytes))
    prefix = parse_prefix(prefix_bytes, limits)
    shape_bytes = bytearray(prefix.shape_bytes)
    if shape_bytes:
        read_exact(memoryview(shape_bytes))
    shape = parse_shape(prefix, shape_bytes)
    array = np.empty(shape, dtype=prefix.dtype)
    payload = array.reshape(-1).view(np.uint8).data
    if prefix.payload_bytes:
        read_exact(payload)
    return Frame(kind=prefix.kind, sender=prefix.sender, stamp=prefix.stamp, tag=prefix.tag,
                 session=prefix.session, array=array, header=bytes(prefix_bytes + shape_bytes))
