"""An outside party of a ``rep4`` computation: a data owner or a result recipient
that is not one of the four compute parties.

To contribute, it splits ``v`` as ``x_j = PRG(s_j)`` for ``j = 0, 1, 2`` (fresh
``os.urandom`` seeds) and ``x_3 = v - x_0 - x_1 - x_2``, and sends compute party 3 the
three seeds and the shape, and parties 0, 1 and 2 the seeds of the two shares
among ``x_0, x_1, x_2`` they hold, and ``x_3``: 24 bytes per element plus seeds. The
compute parties then compare, pair by pair, a hash of the shares they both
hold (:meth:`concilium.mpc.rep4.Rep4.input`), so an owner that sends
inconsistent shares is caught before its input is used.

To receive, it collects all three components of every compute party: three
copies of each share ``x_j`` (one from each party but ``j``). It reconstructs only
if the three copies of every share agree, which is every subset of parties
that could reconstruct giving the same value; otherwise it raises
:class:`~concilium.errors.CheatingDetected` naming the parties whose copies
differ.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from concilium.errors import CheatingDetected, ConfigurationError
from concilium.mpc.outside import OutsideClient
from concilium.mpc.rep4_exchange import PARTIES, others, slot
from concilium.net.channel import Channel
from concilium.ring.arithmetic import RING_DTYPE, RingArray
from concilium.ring.prg import Prg, new_key

__all__ = ["Rep4OutsideParty"]


class Rep4OutsideParty(OutsideClient):
    """The outside party's side of input sharing and output delivery under ``rep4``."""

    def __init__(self, channel: Channel, compute_parties: Sequence[int] = (0, 1, 2, 3)) -> None:
        if len(compute_parties) != PARTIES:
            raise ConfigurationError("rep4 needs exactly 4 distinct compute parties")
        super().__init__(channel, compute_parties)

    def send_input(self, values: RingArray, *, boolean: bool = False) -> None:
        """Secret-share ring values (64-bit words with ``boolean``) to the compute parties."""
        value = np.require(values, dtype=RING_DTYPE, requirements="C")
        seed_tag, data_tag = self.next_tag(), self.next_tag()
        seeds = [new_key() for _ in range(3)]
        last = value.reshape(-1).copy()
        for seed in seeds:
            drawn = Prg(seed).integers(value.size)
            last = (last ^ drawn) if boolean else (last - drawn)
        shape = np.asarray(value.shape, dtype=np.int64).view(np.uint8)
        for position, party in enumerate(self._parties):
            held = [seeds[j] for j in range(3) if j != position]
            message = np.frombuffer(b"".join(held), dtype=np.uint8)
            if position == 3:
                message = np.concatenate([message, shape])
            self._channel.send(party, seed_tag, message)
        for party in self._parties[:3]:
            self._channel.send(party, data_tag, last.reshape(value.shape))

    def receive_public(self) -> bytes:
        """Public bytes that every compute party sends alike; parties that disagree
        abort the run.

        Reveals: nothing the compute parties do not all know.
        """
        tag = self.next_tag()
        messages = [self._channel.receive(party, tag) for party in self._parties]
        if any(m.dtype != np.uint8 for m in messages) or any(
                not np.array_equal(m, messages[0]) for m in messages[1:]):
            differ = [p for p, m in enumerate(messages)
                      if m.dtype != np.uint8 or not np.array_equal(m, messages[0])]
            raise CheatingDetected("the compute parties sent different public messages",
                                   parties=(0, *differ), step="public message")
        return messages[0].tobytes()

    def receive_output(self, *, boolean: bool = False) -> RingArray:
        """Collect every compute party's three components; reconstruct only if the
        three copies of each share agree.

        Reveals: the value to this party (the compute parties chose to open it here).
        """
        tag = self.next_tag()
        arrays = [self._channel.receive(party, tag) for party in self._parties]
        shape = arrays[0].shape
        for position, array in enumerate(arrays):
            if array.dtype != RING_DTYPE or array.shape != shape or not shape or (
                    shape[0] != 3):
                raise CheatingDetected(f"compute party {position} sent output shares of "
                                       f"dtype {array.dtype} and shape {array.shape}",
                                       parties=(position,), step="output delivery")
        total = np.zeros(shape[1:], dtype=RING_DTYPE)
        for share in range(PARTIES):
            holders = others(share)
            copies = [arrays[p][slot(p, share), ...] for p in holders]
            for holder, copy in zip(holders[1:], copies[1:], strict=True):
                if not np.array_equal(copy, copies[0]):
                    raise CheatingDetected(
                        f"compute parties {holders[0]} and {holder} sent different copies "
                        f"of share {share} of an output", parties=(holders[0], holder),
                        step="output delivery")
            (np.bitwise_xor if boolean else np.add)(total, copies[0], out=total)
        return total
