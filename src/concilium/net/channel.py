"""The ``Channel`` interface: how protocol code talks to its peers.

Protocol code never creates a transport; it is handed a ``Channel`` (SPU's
design): an in-memory one from the simulator and tests, a TLS one from the
node service. A channel sends and receives numpy arrays to and from a peer
(a network party index) under a *tag*, and counts what it does.

Tags come from the backend's per-session operation counter, so parties that
disagree on the plan fail loudly instead of mixing messages: on each link,
tags must arrive in increasing order and each tag at most once.

Rounds are counted as communication *depth* (a Lamport clock): each message
carries its sender's depth, and receiving it raises the receiver's depth to
at least one more. The depth reached is the number of sequential message
rounds on the critical path, which is what latency multiplies.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

__all__ = ["Channel", "TrafficCounter", "TrafficSnapshot"]

SUPPORTED_DTYPES = (np.dtype("<u8"), np.dtype("<i8"), np.dtype("u1"))


@dataclass(frozen=True)
class TrafficSnapshot:
    """What one party's channel has done so far (payload bytes, not headers)."""

    bytes_sent: int
    bytes_received: int
    messages_sent: int
    messages_received: int
    rounds: int
    bytes_sent_to: dict[int, int] = field(default_factory=dict)

    def since(self, earlier: TrafficSnapshot) -> TrafficSnapshot:
        """The traffic between ``earlier`` and this snapshot."""
        peers = set(self.bytes_sent_to) | set(earlier.bytes_sent_to)
        return TrafficSnapshot(
            bytes_sent=self.bytes_sent - earlier.bytes_sent,
            bytes_received=self.bytes_received - earlier.bytes_received,
            messages_sent=self.messages_sent - earlier.messages_sent,
            messages_received=self.messages_received - earlier.messages_received,
            rounds=self.rounds - earlier.rounds,
            bytes_sent_to={
                peer: self.bytes_sent_to.get(peer, 0) - earlier.bytes_sent_to.get(peer, 0)
                for peer in sorted(peers)
            },
        )


class TrafficCounter:
    """Mutable counters behind :meth:`Channel.stats`; one per channel, one thread."""

    __slots__ = (
        "bytes_received",
        "bytes_sent",
        "bytes_sent_to",
        "depth",
        "messages_received",
        "messages_sent",
    )

    def __init__(self) -> None:
        self.bytes_sent = 0
        self.bytes_received = 0
        self.messages_sent = 0
        self.messages_received = 0
        self.depth = 0
        self.bytes_sent_to: dict[int, int] = {}

    def on_send(self, peer: int, nbytes: int) -> int:
        """Count a sent message; returns the depth stamp it carries."""
        self.bytes_sent += nbytes
        self.messages_sent += 1
        self.bytes_sent_to[peer] = self.bytes_sent_to.get(peer, 0) + nbytes
        return self.depth

    def on_receive(self, nbytes: int, stamp: int) -> None:
        self.bytes_received += nbytes
        self.messages_received += 1
        if stamp + 1 > self.depth:
            self.depth = stamp + 1

    def snapshot(self) -> TrafficSnapshot:
        return TrafficSnapshot(
            bytes_sent=self.bytes_sent,
            bytes_received=self.bytes_received,
            messages_sent=self.messages_sent,
            messages_received=self.messages_received,
            rounds=self.depth,
            bytes_sent_to=dict(self.bytes_sent_to),
        )


class Channel(ABC):
    """One party's endpoint of a network of ``parties`` parties (indices 0..n-1)."""

    @property
    @abstractmethod
    def party(self) -> int:
        """This party's network index."""

    @property
    @abstractmethod
    def parties(self) -> int:
        """Number of parties on the network (compute parties and outside parties)."""

    @abstractmethod
    def send(self, peer: int, tag: int, array: npt.NDArray[np.generic]) -> None:
        """Send an array (``uint64``, ``int64`` or ``uint8``) to ``peer`` under ``tag``.

        The caller must not modify ``array`` afterwards: the in-memory
        transport hands it to the receiver by reference.
        """

    @abstractmethod
    def receive(self, peer: int, tag: int) -> npt.NDArray[np.generic]:
        """Block until ``peer``'s message with ``tag`` arrives and return it (read-only).

        Raises :class:`~concilium.errors.PeerUnavailable` after the timeout,
        :class:`~concilium.errors.ProtocolAbort` if the run was aborted, and
        :class:`~concilium.errors.BadFrame` if the peer sent a different tag.
        """

    @abstractmethod
    def stats(self) -> TrafficSnapshot:
        """Counters so far: payload bytes and messages each way, and rounds (depth)."""

    @abstractmethod
    def abort(self, reason: str) -> None:
        """Stop the run on every party: pending and future receives raise ProtocolAbort."""
