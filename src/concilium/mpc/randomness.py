"""Correlated randomness for replicated sharing: PRG keys per set of parties.

At session start the ``n`` compute parties agree on AES keys so that later
they can draw identical pseudorandom streams without talking. For a
replicated access structure that tolerates ``t`` corruptions there is one key
per set of ``n - t`` parties (each party holds the keys of the sets it belongs
to, so any ``t`` parties together miss at least one key), plus one key common
to all, plus each party's private key from ``os.urandom``
(:class:`ReplicatedKeys`, as MPyC's threshold setter builds them; the same
sets index the shares of replicated secret sharing).

For ``rep3`` (``n = 3, t = 1``) the sets are the pairs: ``K_i`` is shared by
parties ``i-1`` and ``i`` (indices mod 3), so party ``i`` holds ``K_i`` (its
*previous* key) and ``K_(i+1)`` (its *next* key), the same index pattern as its
replicated shares ``(x_i, x_(i+1))`` (:class:`ReplicatedRandomness`).

Protocols draw from *named streams*: ``previous(tag, purpose)`` is the AES-CTR
stream of ``K_i`` at nonce (tag, purpose), so both holders of a key get the
same values for the same name, in any order and in any chunking. Every
(key, tag, purpose) must name one value only.

Agreement (one round, semi-honest): for each set, its first member (in
protocol order) samples the key with ``os.urandom`` and sends it to the other
members, all of a party's keys for one peer in one message. The channel is
authenticated and encrypted in deployment (mutual TLS), in-process in
simulation. A malicious backend must instead derive each key from
contributions of its holders.
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from concilium.errors import ProtocolAbort
from concilium.net.channel import Channel
from concilium.ring.prg import KEY_BYTES, Prg, new_key, stream_nonce

__all__ = ["Purpose", "ReplicatedKeys", "ReplicatedRandomness", "agree_keys",
           "agree_replicated_keys", "key_sets"]


class Purpose(enum.IntEnum):
    """What a named stream is used for within one operation (one value each)."""

    ZERO_SHARE = 1
    MASK = 2
    DEALER_HIGH = 3
    DEALER_SIGN = 4
    RESHARE_FIRST = 5
    RESHARE_SECOND = 6
    INPUT = 7
    RANDOM = 8
    COMMON = 9
    PERMUTATION = 10
    SHUFFLE_MASK = 11
    JOINT_MASK = 12
    JOINT_MAC = 13


@dataclass(frozen=True)
class ReplicatedRandomness:
    """One party's keys for 3-party replicated sharing, and its private PRG."""

    previous_key: bytes
    next_key: bytes
    common_key: bytes
    private: Prg

    def previous(self, tag: int, purpose: Purpose) -> Prg:
        """Stream (tag, purpose) of ``K_i``, shared with the previous party."""
        return Prg(self.previous_key, stream_nonce(tag, purpose))

    def next(self, tag: int, purpose: Purpose) -> Prg:
        """Stream (tag, purpose) of ``K_(i+1)``, shared with the next party."""
        return Prg(self.next_key, stream_nonce(tag, purpose))

    def common(self, tag: int, purpose: Purpose = Purpose.COMMON) -> Prg:
        """Stream (tag, purpose) of the key common to the three compute parties."""
        return Prg(self.common_key, stream_nonce(tag, purpose))


def key_sets(parties: int, threshold: int) -> list[frozenset[int]]:
    """The sets of party positions that share a key: every set of ``parties -
    threshold`` positions, then the set of all (the common key)."""
    if not 0 < threshold < parties:
        raise ValueError(f"a replicated structure of {parties} parties tolerates 1 to "
                         f"{parties - 1} corruptions, not {threshold}")
    sets = [frozenset(c) for c in itertools.combinations(range(parties), parties - threshold)]
    return [*sets, frozenset(range(parties))] if parties - threshold < parties else sets


@dataclass(frozen=True)
class ReplicatedKeys:
    """One party's keys of a replicated access structure: for each set of positions
    it belongs to (:func:`key_sets`), that set's AES key; and its private PRG."""

    parties: int
    threshold: int
    index: int
    keys: dict[frozenset[int], bytes]
    private: Prg

    def key(self, members: Sequence[int]) -> bytes:
        """The key shared by exactly the positions ``members`` (this party among them)."""
        found = self.keys.get(frozenset(members))
        if found is None:
            raise ValueError(f"party {self.index} holds no key for {sorted(members)}")
        return found

    def stream(self, members: Sequence[int], tag: int, purpose: Purpose) -> Prg:
        """Stream (tag, purpose) of the key of ``members``: the same at each of them."""
        return Prg(self.key(members), stream_nonce(tag, purpose))


def _as_key(array: np.ndarray, expected: int) -> bytes:
    if array.dtype != np.uint8 or array.shape != (expected,):
        raise ProtocolAbort("key agreement received a malformed key message")
    return array.tobytes()


def agree_keys(channel: Channel, parties: Sequence[int], index: int, tag: int,
               threshold: int) -> ReplicatedKeys:
    """Agree on the keys of every set of ``len(parties) - threshold`` compute parties
    (and the common key), in one round; this party is ``parties[index]``."""
    count = len(parties)
    mine = [members for members in key_sets(count, threshold) if index in members]
    keys: dict[frozenset[int], bytes] = {}
    outgoing: dict[int, list[bytes]] = {}
    for members in mine:
        if min(members) == index:
            key = new_key()
            keys[members] = key
            for other in sorted(members - {index}):
                outgoing.setdefault(other, []).append(key)
    for other, parts in sorted(outgoing.items()):
        channel.send(parties[other], tag, np.frombuffer(b"".join(parts), dtype=np.uint8))
    for other in range(count):
        theirs = [m for m in mine if min(m) == other and other != index]
        if theirs:
            received = _as_key(channel.receive(parties[other], tag), KEY_BYTES * len(theirs))
            for k, members in enumerate(theirs):
                keys[members] = received[k * KEY_BYTES:(k + 1) * KEY_BYTES]
    return ReplicatedKeys(count, threshold, index, keys, Prg.from_urandom())


def agree_replicated_keys(
    channel: Channel, parties: tuple[int, int, int], index: int, tag: int
) -> ReplicatedRandomness:
    """The three-party keys of ``rep3`` among ``parties``; this party is
    ``parties[index]``."""
    keys = agree_keys(channel, parties, index, tag, threshold=1)
    return ReplicatedRandomness(
        previous_key=keys.key([(index - 1) % 3, index]),
        next_key=keys.key([index, (index + 1) % 3]),
        common_key=keys.key([0, 1, 2]),
        private=keys.private,
    )
