"""Correlated randomness for replicated sharing: pairwise and common PRG keys.

At session start the three compute parties agree on AES keys so that later
they can draw identical pseudorandom streams without talking:

* ``K_i``, shared by parties ``i-1`` and ``i`` (indices mod 3). Party ``i``
  holds ``K_i`` (its *previous* key) and ``K_(i+1)`` (its *next* key), the
  same index pattern as its replicated shares ``(x_i, x_(i+1))``;
* one key common to all three;
* each party's private key, from ``os.urandom``.

Agreement (one round, semi-honest): party ``i`` samples ``K_(i+1)`` with
``os.urandom`` and sends it to party ``i+1``; party 0 also samples the common
key and sends it to parties 1 and 2. The channel is authenticated and
encrypted in deployment (mutual TLS), in-process in simulation. A malicious
backend must instead derive each key from contributions of both holders.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from concilium.errors import ProtocolAbort
from concilium.net.channel import Channel
from concilium.ring.prg import KEY_BYTES, Prg, new_key

__all__ = ["ReplicatedRandomness", "agree_replicated_keys"]


@dataclass(frozen=True)
class ReplicatedRandomness:
    """One party's PRGs for 3-party replicated sharing."""

    previous: Prg
    next: Prg
    common: Prg
    private: Prg


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
        previous=Prg(previous_key),
        next=Prg(next_key),
        common=Prg(common_key),
        private=Prg.from_urandom(),
    )
