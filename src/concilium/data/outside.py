"""``OutsideParty``: a data owner or result recipient that is not a compute party.

In the outsourced model, any number of organizations secret-share their data
into a fixed committee of compute parties and may receive results, without
running the protocol themselves. The compute parties' program calls
``session.input(owner, None, ...)`` for each contribution and
``value.reveal(to=[recipient])`` for each delivery, in the same order as the
outside party's :meth:`contribute` and :meth:`receive` calls.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from concilium.data.session import encode_values
from concilium.mpc.protocols import ThreatModel
from concilium.mpc.protocols import protocol as registry
from concilium.net.channel import Channel, TrafficSnapshot
from concilium.ring.arithmetic import to_signed
from concilium.ring.fixed import FixedPointCodec

__all__ = ["OutsideParty"]


class OutsideParty:
    """An outside party's handle: contribute inputs, receive outputs."""

    def __init__(self, channel: Channel, compute_parties: Sequence[int] = (0, 1, 2), *,
                 protocol: str = "rep3", codec: FixedPointCodec | None = None) -> None:
        self._spec = registry(protocol)
        self._client = self._spec.create_outside(channel, compute_parties)
        self._channel = channel
        self._compute = tuple(int(p) for p in compute_parties)
        self.codec = codec if codec is not None else FixedPointCodec()

    @property
    def party(self) -> int:
        return self._client.party

    @property
    def channel(self) -> Channel:
        return self._channel

    @property
    def compute_parties(self) -> tuple[int, ...]:
        return self._compute

    @property
    def protocol(self) -> str:
        return self._spec.name

    @property
    def threat_model(self) -> ThreatModel:
        """What results received here rest on (see :attr:`Session.threat_model`)."""
        return self._spec.threat_model(len(self._compute))


    def stats(self) -> TrafficSnapshot:
        return self._channel.stats()

    def contribute(self, values: Any, *, fixed: bool = False) -> None:
        """Secret-share values into the compute parties (checked and encoded first)."""
        self._client.send_input(encode_values(self.codec, values, fixed))

    def receive_public(self) -> bytes:
        """Public bytes the compute parties send alike (they abort if they differ)."""
        return self._client.receive_public()

    def receive(self, *, fixed: bool = False) -> np.ndarray:
        """Receive a value the compute parties revealed to this party.

        Reveals: that value to this party only.
        """
        ring = self._client.receive_output()
        if fixed:
            return self.codec.decode(ring)
        return to_signed(ring).copy()
