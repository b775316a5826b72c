"""An outside party of a ``rep3`` computation: a data owner or a result recipient
that is not one of the three compute parties (the outsourced model).

To contribute, it splits its values ``v`` as ``x_0 = PRG(s_0)``,
``x_1 = PRG(s_1)``, ``x_2 = v - x_0 - x_1`` with fresh ``os.urandom`` seeds and
sends party 0 both seeds (and the shape), party 1 ``s_1`` and ``x_2``, party 2
``s_0`` and ``x_2``: 16 bytes per element plus 64 bytes of seeds. Each
compute party then holds its replicated pair and no single one learns
anything about ``v``.

To receive, it collects ``x_i`` from each compute party ``i`` and adds them.
Operations must happen in the same order on both sides (each side keeps a
per-outside-party counter of message tags).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from concilium.errors import ConfigurationError, ProtocolAbort
from concilium.mpc.outside import OutsideClient
from concilium.net.channel import Channel
from concilium.ring.arithmetic import RING_DTYPE, RingArray
from concilium.ring.prg import Prg, new_key

__all__ = ["Rep3OutsideParty"]


class Rep3OutsideParty(OutsideClient):
    """The outside party's side of input sharing and output delivery."""

    def __init__(self, channel: Channel, compute_parties: Sequence[int] = (0, 1, 2)) -> None:
        if len(compute_parties) != 3:
            raise ConfigurationError("rep3 needs exactly 3 distinct compute parties")
        super().__init__(channel, compute_parties)

    def send_input(self, values: RingArray, *, boolean: bool = False) -> None:
        """Secret-share ring values (or 64-bit words with ``boolean``) to the compute parties."""
        value = np.require(values, dtype=RING_DTYPE, requirements="C")
        seed_tag, data_tag = self.next_tag(), self.next_tag()
        first_seed, second_seed = new_key(), new_key()
        first = Prg(first_seed).integers(value.shape)
        second = Prg(second_seed).integers(value.shape)
        flat = [value.reshape(-1), first.reshape(-1), second.reshape(-1)]
        last = (flat[0] ^ flat[1] ^ flat[2]) if boolean else (flat[0] - flat[1] - flat[2])
        last = last.reshape(value.shape)
        shape = np.asarray(value.shape, dtype=np.int64).view(np.uint8)
        party0, party1, party2 = self._parties
        both_seeds = np.frombuffer(first_seed + second_seed, dtype=np.uint8)
        self._channel.send(party0, seed_tag, np.concatenate([both_seeds, shape]))
        self._channel.send(party1, seed_tag, np.frombuffer(second_seed, dtype=np.uint8))
        self._channel.send(party2, seed_tag, np.frombuffer(first_seed, dtype=np.uint8))
        self._channel.send(party1, data_tag, last)
        self._channel.send(party2, data_tag, last)

    def receive_public(self) -> bytes:
        """Public bytes that every compute party sends alike (a result's layout, say);
        compute parties that disagree abort the run.

        Reveals: nothing the compute parties do not all know.
        """
        tag = self.next_tag()
        messages = [self._channel.receive(party, tag) for party in self._parties]
        if any(m.dtype != np.uint8 for m in messages) or any(
                not np.array_equal(m, messages[0]) for m in messages[1:]):
            raise ProtocolAbort("the compute parties sent different public messages; "
                                "they disagree on the plan")
        return messages[0].tobytes()

    def receive_output(self, *, boolean: bool = False) -> RingArray:
        """Collect one share from each compute party and reconstruct the value.

        Reveals: the value to this party (the compute parties chose to open it here).
        """
        tag = self.next_tag()
        shares = [self._channel.receive(party, tag) for party in self._parties]
        shape = shares[0].shape
        if any(share.dtype != RING_DTYPE or share.shape != shape for share in shares):
            raise ProtocolAbort("compute parties sent inconsistent output shares")
        flat = [np.asarray(share, dtype=RING_DTYPE).reshape(-1) for share in shares]
        value = (flat[0] ^ flat[1] ^ flat[2]) if boolean else (flat[0] + flat[1] + flat[2])
        return value.reshape(shape)
