"""Layer 2: channels between parties, the in-memory transport and the frame codec.

Imports only :mod:`concilium.ring` (and :mod:`concilium.errors`).
"""

from concilium.net.channel import Channel, TrafficCounter, TrafficSnapshot
from concilium.net.frame import (
    FRAME_PREFIX_BYTES,
    Frame,
    FrameKind,
    FrameLimits,
    decode_frame,
    encode_frame,
    parse_prefix,
)
from concilium.net.mailbox import Mailbox, Message
from concilium.net.memory import MemoryChannel, MemoryNetwork

__all__ = [
    "FRAME_PREFIX_BYTES",
    "Channel",
    "Frame",
    "FrameKind",
    "FrameLimits",
    "Mailbox",
    "MemoryChannel",
    "MemoryNetwork",
    "Message",
    "TrafficCounter",
    "TrafficSnapshot",
    "decode_frame",
    "encode_frame",
    "parse_prefix",
]
