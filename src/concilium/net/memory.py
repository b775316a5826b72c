"""In-memory transport: every party is a thread of one process.

Used by the simulator and the tests. Arrays are handed over by reference
(read-only on the receiving side), so the transport adds almost nothing to
the cost of the protocol itself; set ``encode_frames=True`` to push every
message through the real frame codec instead, as the TLS transport does.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from concilium.errors import BadFrame, ConfigurationError
from concilium.net.channel import SUPPORTED_DTYPES, Channel, TrafficCounter, TrafficSnapshot
from concilium.net.frame import FrameKind, decode_frame, encode_frame
from concilium.net.mailbox import Mailbox, Message

__all__ = ["MemoryChannel", "MemoryNetwork"]


class MemoryNetwork:
    """A set of ``parties`` connected in-memory channels.

    ``timeout``: seconds a receive waits before raising PeerUnavailable.
    ``record``: keep every received array (for tests of what a party sees).
    """

    def __init__(
        self,
        parties: int,
        *,
        timeout: float = 60.0,
        record: bool = False,
        encode_frames: bool = False,
        session: bytes = bytes(32),
    ) -> None:
        if parties < 1:
            raise ConfigurationError("a network needs at least one party")
        self.parties = parties
        self.timeout = timeout
        self.record = record
        self.encode_frames = encode_frames
        self.session = session
        self.mailboxes = [Mailbox() for _ in range(parties)]
        self._channels = [MemoryChannel(self, index) for index in range(parties)]

    def channel(self, party: int) -> MemoryChannel:
        """The endpoint of party ``party``."""
        return self._channels[party]

    @property
    def channels(self) -> Sequence[MemoryChannel]:
        return tuple(self._channels)

    def abort(self, reason: str) -> None:
        """Abort the run on every party."""
        for mailbox in self.mailboxes:
            mailbox.abort(reason)


class MemoryChannel(Channel):
    """One party's endpoint on a :class:`MemoryNetwork`."""

    def __init__(self, network: MemoryNetwork, party: int) -> None:
        self._network = network
        self._party = party
        self._counter = TrafficCounter()
        self.received_log: list[Message] = []

    @property
    def party(self) -> int:
        return self._party

    @property
    def parties(self) -> int:
        return self._network.parties

    def send(self, peer: int, tag: int, array: npt.NDArray[np.generic]) -> None:
        self._check_peer(peer)
        if array.dtype not in SUPPORTED_DTYPES:
            raise BadFrame(f"cannot send arrays of dtype {array.dtype}")
        array = np.require(array, requirements="C")
        stamp = self._counter.on_send(peer, array.nbytes)
        if self._network.encode_frames:
            header, payload = encode_frame(
                FrameKind.DATA, self._network.session, self._party, tag, stamp, array
            )
            frame = decode_frame(header + bytes(payload))
            array = frame.array
        else:
            # Handed over by reference: freeze the sender's object so that a later
            # in-place write to it (a protocol bug) fails loudly instead of
            # silently changing what the receiver reads.
            array.flags.writeable = False
            array = array.view()
        self._network.mailboxes[peer].deliver(Message(self._party, tag, stamp, array))

    def receive(self, peer: int, tag: int) -> npt.NDArray[np.generic]:
        self._check_peer(peer)
        message = self._network.mailboxes[self._party].take(peer, tag, self._network.timeout)
        self._counter.on_receive(message.array.nbytes, message.stamp)
        if self._network.record:
            self.received_log.append(message)
        return message.array

    def stats(self) -> TrafficSnapshot:
        return self._counter.snapshot()

    def abort(self, reason: str) -> None:
        self._network.abort(f"party {self._party} aborted the run: {reason}")

    def _check_peer(self, peer: int) -> None:
        if not 0 <= peer < self._network.parties or peer == self._party:
            raise ConfigurationError(
                f"party {self._party} cannot talk to party {peer} on a "
                f"{self._network.parties}-party network"
            )
