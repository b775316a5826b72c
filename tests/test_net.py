"""net/: frame codec, mailbox rules, in-memory transport and traffic counters."""

from __future__ import annotations

import contextlib
import struct
import threading
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from concilium.errors import BadFrame, ConfigurationError, PeerUnavailable, ProtocolAbort
from concilium.net import (
    FRAME_PREFIX_BYTES,
    FrameKind,
    FrameLimits,
    Mailbox,
    MemoryNetwork,
    Message,
    decode_frame,
    encode_frame,
)

SESSION = bytes(range(32))


def _frame(array: np.ndarray, tag: int = 5) -> bytes:
    header, payload = encode_frame(FrameKind.DATA, SESSION, 2, tag, 9, array)
    return header + bytes(payload)


@given(hnp.arrays(st.sampled_from([np.uint64, np.int64, np.uint8]),
                  hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5)),
       st.integers(0, 2**64 - 1))
def test_frames_round_trip(array: np.ndarray, tag: int) -> None:
    frame = decode_frame(_frame(array, tag))
    assert (frame.kind, frame.sender, frame.tag, frame.stamp, frame.session) == (
        FrameKind.DATA, 2, tag, 9, SESSION)
    assert frame.array.dtype == array.dtype
    assert frame.array.shape == array.shape
    assert np.array_equal(frame.array, array)


def test_header_layout_is_fixed_and_little_endian() -> None:
    data = _frame(np.array([[1, 2, 3]], dtype=np.uint64))
    assert data[:4] == b"CNCL"
    assert len(data) == FRAME_PREFIX_BYTES + 2 * 8 + 3 * 8
    assert struct.unpack_from("<QQ", data, FRAME_PREFIX_BYTES) == (1, 3)
    assert struct.unpack_from("<Q", data, FRAME_PREFIX_BYTES + 16)[0] == 1


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d[:30], "truncated frame header"),
        (lambda d: b"XXXX" + d[4:], "bad magic"),
        (lambda d: d[:4] + b"\x09" + d[5:], "unsupported frame version 9"),
        (lambda d: d[:5] + b"\x77" + d[6:], "unknown frame kind"),
        (lambda d: d[:6] + b"\x63" + d[7:], "unknown dtype code"),
        (lambda d: d[:7] + b"\x20" + d[8:], "32 dimensions"),
        (lambda d: d[:56] + struct.pack("<Q", 2**40) + d[64:], "announces"),
        (lambda d: d[:56] + struct.pack("<Q", 16) + d[64:], "needs 24 bytes"),
        (lambda d: d[:-1], "header describes"),
        (lambda d: d + b"\x00", "header describes"),
    ],
)
def test_malformed_frames_are_refused_with_a_reason(mutate, message: str) -> None:
    data = _frame(np.array([1, 2, 3], dtype=np.uint64))
    with pytest.raises(BadFrame, match=message):
        decode_frame(mutate(data), FrameLimits(max_payload_bytes=1 << 20))


@settings(max_examples=2000)
@given(st.binary(max_size=200))
def test_garbage_never_raises_anything_but_bad_frame(data: bytes) -> None:
    with contextlib.suppress(BadFrame):
        decode_frame(data)


@settings(max_examples=1000)
@given(st.integers(0, 70), st.binary(min_size=1, max_size=8))
def test_corrupted_valid_frames_decode_or_are_refused(position: int, noise: bytes) -> None:
    data = bytearray(_frame(np.arange(3, dtype=np.uint64)))
    data[position:position + len(noise)] = noise
    try:
        frame = decode_frame(bytes(data))
    except BadFrame:
        return
    assert frame.array.nbytes + FRAME_PREFIX_BYTES + 8 * frame.array.ndim == len(data)


def _message(sender: int, tag: int, size: int = 1) -> Message:
    return Message(sender, tag, 0, np.zeros(size, dtype=np.uint64))


def test_mailbox_demultiplexes_by_sender_and_tag() -> None:
    box = Mailbox()
    box.deliver(_message(1, 10))
    box.deliver(_message(2, 10))
    box.deliver(_message(1, 11))
    assert box.take(1, 11, timeout=1).tag == 11
    assert box.take(2, 10, timeout=1).sender == 2
    assert box.take(1, 10, timeout=1).tag == 10


def test_mailbox_refuses_replays_and_stale_tags() -> None:
    box = Mailbox()
    box.deliver(_message(1, 10))
    with pytest.raises(BadFrame, match="again or out of order"):
        box.deliver(_message(1, 10))
    box.take(1, 10, timeout=1)
    with pytest.raises(BadFrame, match="replayed"):
        box.deliver(_message(1, 10))
    with pytest.raises(BadFrame, match="out of order"):
        box.deliver(_message(1, 3))


def test_mailbox_detects_parties_on_different_plans() -> None:
    box = Mailbox()
    box.deliver(_message(1, 12))
    with pytest.raises(BadFrame, match="not running the same plan"):
        box.take(1, 11, timeout=1)


def test_mailbox_bounds_pending_bytes() -> None:
    box = Mailbox(max_pending_bytes=100)
    box.deliver(_message(1, 1, size=10))
    with pytest.raises(BadFrame, match="more than 100 bytes"):
        box.deliver(_message(1, 2, size=10))


def test_silent_peer_raises_peer_unavailable_within_the_timeout() -> None:
    box = Mailbox()
    start = time.monotonic()
    with pytest.raises(PeerUnavailable, match=r"party 2 sent nothing for tag 4 within 0\.2 s"):
        box.take(2, 4, timeout=0.2)
    assert time.monotonic() - start < 2


def test_abort_wakes_a_waiting_receiver() -> None:
    box = Mailbox()
    errors: list[BaseException] = []

    def wait() -> None:
        try:
            box.take(1, 1, timeout=30)
        except BaseException as error:
            errors.append(error)

    thread = threading.Thread(target=wait)
    thread.start()
    time.sleep(0.05)
    box.abort("party 1 failed")
    thread.join(timeout=5)
    assert not thread.is_alive()
    assert isinstance(errors[0], ProtocolAbort)
    assert "party 1 failed" in str(errors[0])


def test_memory_channels_count_bytes_and_rounds() -> None:
    net = MemoryNetwork(3)
    a, b, c = net.channels
    a.send(1, 1, np.zeros(10, dtype=np.uint64))
    b.receive(0, 1)                       # b: depth 1
    b.send(2, 2, np.zeros(3, dtype=np.uint8))
    c.receive(1, 2)                       # c: depth 2 (a chain of two rounds)
    assert a.stats().bytes_sent == 80 and a.stats().bytes_sent_to == {1: 80}
    assert b.stats().bytes_received == 80 and b.stats().rounds == 1
    assert c.stats().rounds == 2 and c.stats().messages_received == 1
    assert b.stats().since(a.stats()).bytes_sent == -77


def test_sent_arrays_are_frozen_for_the_sender() -> None:
    net = MemoryNetwork(2)
    data = np.arange(4, dtype=np.uint64)
    net.channel(0).send(1, 1, data)
    with pytest.raises(ValueError, match="read-only"):
        data += 1
    received = net.channel(1).receive(0, 1)
    with pytest.raises(ValueError, match="read-only"):
        received[0] = 7


def test_memory_network_can_use_the_real_frame_codec() -> None:
    net = MemoryNetwork(2, encode_frames=True)
    net.channel(0).send(1, 3, np.arange(6, dtype=np.uint64).reshape(2, 3))
    assert net.channel(1).receive(0, 3).tolist() == [[0, 1, 2], [3, 4, 5]]


def test_channels_refuse_unknown_peers_and_dtypes() -> None:
    net = MemoryNetwork(2)
    with pytest.raises(ConfigurationError, match="cannot talk to party 5"):
        net.channel(0).send(5, 1, np.zeros(1, dtype=np.uint64))
    with pytest.raises(BadFrame, match="float64"):
        net.channel(0).send(1, 1, np.zeros(1))
