"""The decoders that read a peer's bytes, fuzzed: at least 10^5 malformed frames per
run through the TLS readers' ``read_frame`` (and the same bytes through
``decode_frame``), and malformed HELLO frames through ``read_hello``/``check_hello``.

The inputs are mutations of valid frames of every kind, dtype and up to four
dimensions, drawn from a seeded numpy generator (a fresh seed each run, printed on
failure; ``CONCILIUM_FRAME_SEED`` replays one, ``CONCILIUM_FRAMES`` sets the count):
truncations, byte flips, inserted and removed bytes, garbage (with and without a
valid magic and version), header fields set to out-of-range and boundary values,
huge lengths and shapes, and a valid frame with trailing bytes. A decoder may only
raise ``BadFrame`` (or ``EOFError`` when the stream ends mid-frame; HELLO checks
also ``ConfigurationError``); what it accepts respects the limits and encodes back
to exactly the bytes it read.
"""

from __future__ import annotations

import collections
import io
import os
import struct
import time
from collections.abc import Callable

import numpy as np
import pytest

from concilium.errors import BadFrame, ConfigurationError
from concilium.net.frame import (
    FRAME_PREFIX_BYTES,
    Frame,
    FrameKind,
    FrameLimits,
    decode_frame,
    encode_frame,
)
from concilium.net.stream import read_frame
from concilium.net.tls import check_hello, read_hello

FRAMES = int(os.environ.get("CONCILIUM_FRAMES", "120000"))
LIMITS = FrameLimits(max_payload_bytes=1 << 16, max_dimensions=4)
SESSION = bytes(range(32))
#: (offset, struct format) of each header field after the magic
FIELDS = ((4, "<B"), (5, "<B"), (6, "<B"), (7, "<B"), (8, "<H"), (10, "<H"), (12, "<I"),
          (16, "<Q"), (56, "<Q"))
BOUNDARY = (0, 1, 2, 3, 4, 5, 7, 8, 9, 255, 256, 0xFFFF, 1 << 16, (1 << 16) + 1, 1 << 31,
            (1 << 32) - 1, 1 << 40, (1 << 40) + 1, 1 << 62, 1 << 63, (1 << 64) - 1)


class _Stream:
    """``read_exact`` over bytes, as the TLS connection offers it."""

    def __init__(self, data: bytes) -> None:
        self.buffer = io.BytesIO(data)
        self.used = 0

    def read_exact(self, target: memoryview) -> None:
        chunk = self.buffer.read(len(target))
        if len(chunk) < len(target):
            raise EOFError("the stream ended mid-frame")
        target[:] = chunk
        self.used += len(chunk)


def _frame(kind: FrameKind, array: np.ndarray, sender: int = 1, tag: int = 9,
           stamp: int = 4) -> bytes:
    header, payload = encode_frame(kind, SESSION, sender, tag, stamp, array)
    return header + bytes(payload)


def _valid_frames() -> list[bytes]:
    arrays = [np.arange(6, dtype=np.uint64), np.arange(-3, 3, dtype=np.int64).reshape(2, 3),
              np.frombuffer(b"party 2: aborted", dtype=np.uint8), np.zeros(0, np.uint64),
              np.array(7, dtype=np.uint64), np.arange(24, dtype=np.uint8).reshape(2, 3, 4),
              np.ones((1, 2, 1, 3), dtype=np.int64), np.zeros((3, 0), dtype=np.uint64)]
    return [_frame(kind, array) for kind in FrameKind for array in arrays]


def _set(frame: bytes, offset: int, layout: str, value: int) -> bytes:
    size = struct.calcsize(layout)
    value &= (1 << (8 * size)) - 1
    return frame[:offset] + struct.pack(layout, value) + frame[offset + size:]


def _mutations(rng: np.random.Generator, count: int, valid: list[bytes] | None = None
               ) -> list[bytes]:
    """``count`` mutations of ``valid`` frames (by default one of each kind, dtype and
    several shapes); most are malformed, some still valid (a flipped payload byte)."""
    valid = valid or _valid_frames()
    pool = rng.integers(0, 256, size=count * 24, dtype=np.uint8).tobytes()
    kinds = rng.integers(0, 9, size=count)
    picks = rng.integers(0, len(valid), size=count)
    numbers = rng.integers(0, 1 << 62, size=(count, 4), dtype=np.int64)
    out = []
    for k in range(count):
        frame = valid[picks[k]]
        a, b, c, d = (int(x) for x in numbers[k])
        noise = pool[24 * k: 24 * k + 1 + a % 23]
        kind = kinds[k]
        if kind == 0:  # truncated anywhere
            frame = frame[:a % len(frame)]
        elif kind == 1:  # one to four bytes flipped
            data = bytearray(frame)
            for j in range(1 + b % 4):
                data[(a >> (8 * j)) % len(data)] ^= 1 + (c >> (8 * j)) % 255
            frame = bytes(data)
        elif kind == 2:  # bytes inserted
            at = a % (len(frame) + 1)
            frame = frame[:at] + noise + frame[at:]
        elif kind == 3:  # bytes removed
            at = a % len(frame)
            frame = frame[:at] + frame[at + 1 + b % 16:]
        elif kind == 4:  # garbage, sometimes behind a valid magic and version
            frame = (b"CNCL\x01" if b % 2 else b"") + pool[24 * k: 24 * k + 24] * (1 + c % 8)
        elif kind in (5, 6):  # a header field out of range or at a boundary
            offset, layout = FIELDS[b % len(FIELDS)]
            value = BOUNDARY[c % len(BOUNDARY)] if kind == 5 else d
            frame = _set(frame, offset, layout, value)
        elif kind == 7:  # a shape entry (or the length with it) huge or off by a little
            ndim = frame[7]
            if ndim:
                offset = FRAME_PREFIX_BYTES + 8 * (b % ndim)
                frame = _set(frame, offset, "<Q", BOUNDARY[c % len(BOUNDARY)] + (d % 3) - 1)
            if a % 2:
                frame = _set(frame, 56, "<Q", BOUNDARY[d % len(BOUNDARY)])
        else:  # a valid frame with more behind it (one frame is read, the rest is not)
            frame = frame + noise
        out.append(frame)
    return out


def _check_accepted(frame: Frame, data: bytes, used: int) -> None:
    assert frame.array.nbytes <= LIMITS.max_payload_bytes
    assert frame.array.ndim <= LIMITS.max_dimensions
    assert frame.array.dtype in (np.dtype("<u8"), np.dtype("<i8"), np.dtype("u1"))
    header, payload = encode_frame(frame.kind, frame.session, frame.sender, frame.tag,
                                   frame.stamp, frame.array)
    assert header + bytes(payload) == data[:used]


def _decode_all(inputs: list[bytes], decode: Callable[[bytes], None]) -> tuple[int, int]:
    """Run ``decode`` on every input; (accepted, refused) counts. Any exception but
    BadFrame/EOFError fails with the input (hex) that caused it."""
    accepted = refused = 0
    for data in inputs:
        try:
            decode(data)
            accepted += 1
        except (BadFrame, EOFError):
            refused += 1
        except Exception as error:
            raise AssertionError(f"{type(error).__name__}: {error} on {data.hex()}") from None
    return accepted, refused


@pytest.fixture
def rng(request: pytest.FixtureRequest) -> np.random.Generator:
    seed = int(os.environ.get("CONCILIUM_FRAME_SEED", time.time_ns() % (1 << 32)))
    request.node.user_properties.append(("seed", seed))
    print(f"CONCILIUM_FRAME_SEED={seed}")  # shown with a failure
    return np.random.default_rng(seed)


def test_a_hundred_thousand_malformed_frames_are_refused_cleanly(
        rng: np.random.Generator) -> None:
    inputs = _mutations(rng, FRAMES)
    assert len(inputs) >= 100_000 or "CONCILIUM_FRAMES" in os.environ

    def streamed(data: bytes) -> None:
        stream = _Stream(data)
        frame = read_frame(stream.read_exact, LIMITS)
        _check_accepted(frame, data, stream.used)
        assert frame.header == data[:len(frame.header)]

    def whole(data: bytes) -> None:
        frame = decode_frame(data, LIMITS)
        _check_accepted(frame, data, len(data))

    accepted, refused = _decode_all(inputs, streamed)
    assert refused > len(inputs) // 2 and accepted > 0  # mostly broken, not all
    _decode_all(inputs, whole)


def test_malformed_hellos_are_refused_cleanly(rng: np.random.Generator) -> None:
    """What a peer sends first on an MPC connection, read by the standing listener
    and by the dialing side."""
    manifest, computation = bytes(range(32)), bytes(range(32, 64))
    hello = _frame(FrameKind.HELLO, np.frombuffer(manifest + computation + bytes(32),
                                                  np.uint8), sender=2, tag=0, stamp=0)
    inputs = [hello, *_mutations(rng, 20_000, [hello]), *_mutations(rng, 5_000),
              *(_set(hello, 8, "<H", sender) for sender in range(5))]

    def handshake(data: bytes) -> None:
        received = read_hello(_Stream(data), LIMITS)  # type: ignore[arg-type]
        assert (len(received.manifest_hash), len(received.computation_id),
                len(received.nonce)) == (32, 32, 32)
        try:
            check_hello(received, 2, manifest, computation)
        except ConfigurationError:
            return
        assert (received.index, received.manifest_hash, received.computation_id) == (
            2, manifest, computation)

    accepted, _ = _decode_all(inputs, handshake)
    assert accepted >= 1  # the valid HELLO


def test_the_mutations_cover_every_check() -> None:
    """The generated inputs reach every refusal of the decoder, not just the first."""
    reasons = collections.Counter()
    for data in _mutations(np.random.default_rng(7), 20_000):
        try:
            read_frame(_Stream(data).read_exact, LIMITS)
            reasons["accepted"] += 1
        except BadFrame as error:
            reasons[" ".join(w for w in str(error).split() if not w[0].isdigit())] += 1
        except EOFError:
            reasons["ended"] += 1
    for check in ("accepted", "ended", "bad magic", "unsupported frame version",
                  "unknown frame kind", "unknown dtype code", "reserved header field",
                  "dimensions; the limit", "payload bytes; the limit", "exceeds",
                  "needs bytes but"):
        assert any(check in reason for reason in reasons), (check, reasons)


def test_a_zero_dimension_beside_huge_ones_is_refused() -> None:
    """Found by this fuzzing: such a shape passed the checks (0 elements, 0 bytes) and
    numpy then raised ValueError allocating it."""
    header, _ = encode_frame(FrameKind.DATA, SESSION, 1, 9, 0, np.zeros((0, 1, 1), np.uint64))
    data = _set(_set(header, FRAME_PREFIX_BYTES + 8, "<Q", 1 << 40),
                FRAME_PREFIX_BYTES + 16, "<Q", 1 << 40)
    with pytest.raises(BadFrame):
        read_frame(_Stream(data).read_exact, LIMITS)
    with pytest.raises(BadFrame):
        decode_frame(data, LIMITS)
