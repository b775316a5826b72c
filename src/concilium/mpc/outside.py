"""Outside parties: data owners and result recipients that are not compute parties.

In the outsourced model any number of organizations secret-share their data
into the compute parties and receive results, without running the protocol.
Each backend provides the outside party's side as an :class:`OutsideClient`;
the compute parties' side is :meth:`Backend.input` (an owner that is not a
compute party), :meth:`Backend.reveal` (``to`` naming it) and
:meth:`Backend.send_public`. Messages with an outside party use their own tag
counter per outside party, starting at :data:`OUTSIDE_TAG_BASE`, so they
never collide with the compute parties' plan tags; both sides must therefore
make their calls in the same order.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

from concilium.errors import ConfigurationError
from concilium.net.channel import Channel
from concilium.ring.arithmetic import RingArray

__all__ = ["OUTSIDE_TAG_BASE", "OutsideClient"]

#: Tags of messages exchanged with outside parties start here.
OUTSIDE_TAG_BASE = 1 << 62


class OutsideClient(ABC):
    """An outside party's side of sharing inputs and receiving outputs."""

    def __init__(self, channel: Channel, compute_parties: Sequence[int]) -> None:
        parties = tuple(int(p) for p in compute_parties)
        if not parties or len(set(parties)) != len(parties):
            raise ConfigurationError(f"the compute parties must be distinct, got "
                                     f"{list(parties)}")
        if channel.party in parties:
            raise ConfigurationError(f"party {channel.party} is a compute party; outside "
                                     "parties are the others")
        self._channel = channel
        self._parties = parties
        self._count = 0

    @property
    def channel(self) -> Channel:
        """The channel to the compute parties (handed in, never created here)."""
        return self._channel

    @property
    def party(self) -> int:
        """This party's network index."""
        return self._channel.party

    @property
    def compute_parties(self) -> tuple[int, ...]:
        """Network indices of the compute parties, in protocol order."""
        return self._parties

    def next_tag(self) -> int:
        """The tag of this party's next message with the compute parties."""
        tag = OUTSIDE_TAG_BASE + self._count
        self._count += 1
        return tag

    @abstractmethod
    def send_input(self, values: RingArray, *, boolean: bool = False) -> None:
        """Secret-share ring values (64-bit words with ``boolean``) to the compute
        parties; each gets only its shares."""

    @abstractmethod
    def receive_output(self, *, boolean: bool = False) -> RingArray:
        """Collect the shares the compute parties opened to this party and
        reconstruct the value.

        Reveals: the value to this party (the compute parties chose to open it here).
        """

    @abstractmethod
    def receive_public(self) -> bytes:
        """Public bytes every compute party sends alike; parties that disagree abort
        the run."""
