"""Correlated randomness for replicated sharing: pairwise and common PRG keys.

At session start the three compute parties agree on AES keys so that later
they can draw identical pseudorandom streams without talking:

* ``K_i``, shared by parties ``i-1`` and ``i`` (indices mod 3). Party ``i``
  holds ``K_i`` (its *previous* key) and ``K_(i+1)`` (its *next* key), the
  same index pattern as its replicated shares ``(x_i, x_(i+1))``;
* one key common to all three;
* each party's private key, from ``os.urandom``.

Protocols draw from *named streams*: ``previous(tag, purpose)`` is the AES-CTR
stream of ``K_i`` at nonce (tag, purpose), so both holders of a key get the
same values for the same name, in any order and in any chunking. Every
(key, tag, purpose) must name one value only.

Agreement (one round, semi-honest): party ``i`` samples ``K_(i+1)`` with
``os.urandom`` and sends it to party ``i+1``; party 0 also samples the common
key and sends it to parties 1 and 2. The channel is authenticated and
encrypted in deployment (mutual TLS), in-process in simulation. A malicious
backend must instead derive each key from contributions of both holders.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np

from concilium.errors import ProtocolAbort
from concilium.net.channel import Channel
from concilium.ring.prg import KEY_BYTES, Prg, new_key, stream_nonce

__all__ = ["Purpose", "ReplicatedRandomness", "agree_replicated_keys"]


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


def _as_key(array: np.ndarray, expected: int) -> bytes:
    if array.dtype != np.uint8 or array.shape != (expected,):
        raise ProtocolAbort("key agreement received a malformed key message")
    return array.tobytes()


def agree_replicated_keys(
    channel: Channel, parties: tuple[int, int, int], index: int, tag: int
) -> ReplicatedRandomness:
    """Run the one-round key agreement among ``parties``; this party is ``parties[index]``."""
    next_party = parties[(index + 1) % 3]
    previous_party = parties[(index - 1) % 3]
    next_key = new_key()
    if index == 0:
        common_key = new_key()
        channel.send(next_party, tag, np.frombuffer(next_key + common_key, dtype=np.uint8))
        channel.send(previous_party, tag, np.frombuffer(common_key, dtype=np.uint8))
        previous_key = _as_key(channel.receive(previous_party, tag), KEY_BYTES)
    else:
        channel.send(next_party, tag, np.frombuffer(next_key, dtype=np.uint8))
        if index == 1:
            received = _as_key(channel.receive(previous_party, tag), 2 * KEY_BYTES)
            previous_key, common_key = received[:KEY_BYTES], received[KEY_BYTES:]
        else:
            previous_key = _as_key(channel.receive(previous_party, tag), KEY_BYTES)
            common_key = _as_key(channel.receive(next_party, tag), KEY_BYTES)
    return ReplicatedRandomness(
        previous_key=previous_key,
        next_key=next_key,
        common_key=common_key,
        private=Prg.from_urandom(),
    )
