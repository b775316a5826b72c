"""The frame codec: a fixed header and a raw little-endian payload. No pickle.

Layout (all integers little-endian):

| offset | size | field |
|---|---|---|
| 0 | 4 | magic ``b"CNCL"`` |
| 4 | 1 | version (1) |
| 5 | 1 | kind (:class:`FrameKind`) |
| 6 | 1 | dtype code (1 = uint64, 2 = int64, 3 = uint8) |
| 7 | 1 | number of dimensions (at most ``max_dimensions``) |
| 8 | 2 | sender's party index |
| 10 | 2 | reserved, must be 0 |
| 12 | 4 | sender's round stamp (communication depth) |
| 16 | 8 | tag |
| 24 | 32 | session id |
| 56 | 8 | payload length in bytes |
| 64 | 8 x ndim | shape |
| ... | length | payload |

Decoding validates every field before allocating anything and raises
:class:`~concilium.errors.BadFrame` with the reason; it never raises anything
else, whatever the bytes.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from concilium.errors import BadFrame

__all__ = [
    "FRAME_PREFIX_BYTES",
    "Frame",
    "FrameKind",
    "FrameLimits",
    "FramePrefix",
    "decode_frame",
    "encode_frame",
    "parse_prefix",
    "parse_shape",
]

MAGIC = b"CNCL"
VERSION = 1
_PREFIX = struct.Struct("<4sBBBBHHIQ32sQ")
FRAME_PREFIX_BYTES = _PREFIX.size  # 64

_MAX_DIMENSION = 1 << 40
_DTYPE_CODES: dict[int, np.dtype[Any]] = {
    1: np.dtype("<u8"), 2: np.dtype("<i8"), 3: np.dtype("u1")}
_CODE_OF_DTYPE = {dtype: code for code, dtype in _DTYPE_CODES.items()}


class FrameKind(enum.IntEnum):
    """What a frame carries."""

    DATA = 0
    ABORT = 1
    HELLO = 2
    DIGEST = 3
    READY = 4


@dataclass(frozen=True)
class FrameLimits:
    """Bounds enforced while decoding, before any allocation."""

    max_payload_bytes: int = 1 << 31
    max_dimensions: int = 8


@dataclass(frozen=True)
class FramePrefix:
    """The fixed-size part of a header, validated."""

    kind: FrameKind
    dtype: np.dtype[np.generic]
    ndim: int
    sender: int
    stamp: int
    tag: int
    session: bytes
    payload_bytes: int

    @property
    def shape_bytes(self) -> int:
        return 8 * self.ndim


@dataclass(frozen=True)
class Frame:
    """A decoded frame."""

    kind: FrameKind
    sender: int
    stamp: int
    tag: int
    session: bytes
    array: npt.NDArray[np.generic]
    header: bytes = b""


def encode_frame(
    kind: FrameKind,
    session: bytes,
    sender: int,
    tag: int,
    stamp: int,
    array: npt.NDArray[np.generic],
) -> tuple[bytes, memoryview]:
    """Header bytes and a zero-copy view of the payload, ready to write."""
    dtype = np.dtype(array.dtype).newbyteorder("<")
    code = _CODE_OF_DTYPE.get(dtype)
    if code is None:
        raise BadFrame(f"cannot frame arrays of dtype {array.dtype}")
    if len(session) != 32:
        raise BadFrame("a session id is 32 bytes")
    payload = np.require(array, dtype=dtype, requirements="C")
    prefix = _PREFIX.pack(
        MAGIC, VERSION, int(kind), code, payload.ndim, sender, 0, stamp & 0xFFFFFFFF, tag,
        session,
        payload.nbytes,
    )
    shape = struct.pack(f"<{payload.ndim}Q", *payload.shape)
    return prefix + shape, payload.reshape(-1).view(np.uint8).data


def parse_prefix(data: bytes | bytearray | memoryview, limits: FrameLimits = FrameLimits()) -> (
    FramePrefix
):
    """Validate the first :data:`FRAME_PREFIX_BYTES` bytes of a frame."""
    if len(data) < FRAME_PREFIX_BYTES:
        raise BadFrame(f"truncated frame header: {len(data)} of {FRAME_PREFIX_BYTES} bytes")
    (magic, version, kind, code, ndim, sender, reserved, stamp, tag, session, length) = (
        _PREFIX.unpack_from(data, 0)
    )
    if magic != MAGIC:
        raise BadFrame("not a Concilium frame (bad magic bytes)")
    if version != VERSION:
        raise BadFrame(f"unsupported frame version {version} (this node speaks {VERSION})")
    if kind not in FrameKind._value2member_map_:
        raise BadFrame(f"unknown frame kind {kind}")
    if code not in _DTYPE_CODES:
        raise BadFrame(f"unknown dtype code {code}")
    if reserved != 0:
        raise BadFrame("reserved header field is not zero")
    if ndim > limits.max_dimensions:
        raise BadFrame(f"frame has {ndim} dimensions; the limit is {limits.max_dimensions}")
    if length > limits.max_payload_bytes:
        raise BadFrame(
            f"frame announces {length} payload bytes; the limit is {limits.max_payload_bytes}"
        )
    return FramePrefix(
        kind=FrameKind(kind), dtype=_DTYPE_CODES[code], ndim=ndim, sender=sender,
        stamp=stamp, tag=tag, session=bytes(session), payload_bytes=length,
    )


def parse_shape(prefix: FramePrefix, data: bytes | bytearray | memoryview) -> tuple[int, ...]:
    """Read and check the shape that follows the prefix."""
    if len(data) < prefix.shape_bytes:
        raise BadFrame("truncated frame shape")
    shape = struct.unpack_from(f"<{prefix.ndim}Q", data, 0)
    elements = extent = 1
    for dim in shape:
        if dim > _MAX_DIMENSION:
            raise BadFrame(f"frame dimension {dim} exceeds {_MAX_DIMENSION}")
        elements *= dim
        extent *= max(dim, 1)
    if extent >= 1 << 62:  # numpy refuses such a shape even when a dimension is zero
        raise BadFrame(f"frame shape {shape} exceeds what an array can have")
    if elements * prefix.dtype.itemsize != prefix.payload_bytes:
        raise BadFrame(
            f"frame shape {shape} of {prefix.dtype} needs "
            f"{elements * prefix.dtype.itemsize} bytes but the header says "
            f"{prefix.payload_bytes}"
        )
    return tuple(int(dim) for dim in shape)


def decode_frame(data: bytes | bytearray | memoryview, limits: FrameLimits = FrameLimits()) -> (
    Frame
):
    """Decode one complete frame held in ``data`` (exactly one frame, nothing more)."""
    view = memoryview(data)
    prefix = parse_prefix(view, limits)
    shape = parse_shape(prefix, view[FRAME_PREFIX_BYTES:])
    start = FRAME_PREFIX_BYTES + prefix.shape_bytes
    end = start + prefix.payload_bytes
    if len(view) != end:
        raise BadFrame(f"frame is {len(view)} bytes but its header describes {end}")
    array = np.frombuffer(view[start:end], dtype=prefix.dtype).reshape(shape)
    return Frame(
        kind=prefix.kind, sender=prefix.sender, stamp=prefix.stamp, tag=prefix.tag,
        session=prefix.session, array=array,
    )
