"""Replicated PRG keys that no single party chooses, confirmed before use.

For a malicious-secure backend the one-round agreement of
:func:`concilium.mpc.randomness.agree_keys` (the first member picks each key)
is not enough: a cheating member could send different keys to the others of
a set, leaving honest parties with streams that disagree. As MP-SPDZ seeds
its ``Rep4`` PRGs since commit 85307a1 (every holder contributes), the keys
here are agreed in two rounds:

1. Every member of each set sends its other members a fresh 16-byte
   contribution (``os.urandom``); all of a party's contributions for one peer
   travel in one message.
2. The set's key is ``SHA-256("concilium/keys/v1" || set || contributions in
   member order)`` cut to 16 bytes; every member sends the others
   ``SHA-256("concilium/keys/confirm/v1" || set || key)``, and a member whose
   confirmations differ from its own raises
   :class:`~concilium.errors.CheatingDetected`: before any stream is drawn.

The key of a set is uniform as long as one of its members is honest, and
unknown to every party outside it (contributions travel on the authenticated,
encrypted channel).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from concilium.errors import BadFrame, CheatingDetected
from concilium.mpc.randomness import ReplicatedKeys, key_sets
from concilium.net.channel import Channel
from concilium.ring.prg import KEY_BYTES, Prg, new_key

__all__ = ["agree_keys_confirmed"]


def _key(members: frozenset[int], contributions: dict[int, bytes]) -> bytes:
    h = hashlib.sha256(b"concilium/keys/v1")
    h.update(bytes(sorted(members)))
    for member in sorted(members):
        h.update(contributions[member])
    return h.digest()[:KEY_BYTES]


def _confirmation(members: frozenset[int], key: bytes) -> bytes:
    return hashlib.sha256(b"concilium/keys/confirm/v1" + bytes(sorted(members)) + key).digest()


def _receive(channel: Channel, peer: int, tag: int, size: int, what: str) -> bytes:
    try:
        array = channel.receive(peer, tag)
    except BadFrame as error:
        raise CheatingDetected(f"party {peer} deviated from the key agreement: {error}",
                               parties=(peer,), step=f"key agreement ({what})") from None
    if array.dtype != np.uint8 or array.shape != (size,):
        raise CheatingDetected(f"party {peer} sent a malformed key {what} message",
                               parties=(peer,), step=f"key agreement ({what})")
    return array.tobytes()


def agree_keys_confirmed(channel: Channel, parties: Sequence[int], index: int, tag: int,
                         threshold: int) -> ReplicatedKeys:
    """The keys of every set of ``len(parties) - threshold`` compute parties (and the
    common key), from every member's contribution, confirmed (two rounds, tags ``tag``
    and ``tag + 1``); this party is ``parties[index]``."""
    count = len(parties)
    mine = [members for members in key_sets(count, threshold) if index in members]
    shared = {peer: [m for m in mine if peer in m] for peer in range(count) if peer != index}
    own = {members: new_key() for members in mine}
    for peer, sets in shared.items():
        channel.send(parties[peer], tag,
                     np.frombuffer(b"".join(own[m] for m in sets), dtype=np.uint8))
    contributions: dict[frozenset[int], dict[int, bytes]] = {m: {index: own[m]} for m in mine}
    for peer, sets in shared.items():
        data = _receive(channel, parties[peer], tag, KEY_BYTES * len(sets), "contribution")
        for k, members in enumerate(sets):
            contributions[members][peer] = data[k * KEY_BYTES:(k + 1) * KEY_BYTES]
    keys = {members: _key(members, contributions[members]) for members in mine}
    expected = {peer: b"".join(_confirmation(m, keys[m]) for m in sets)
                for peer, sets in shared.items()}
    for peer, message in expected.items():
        channel.send(parties[peer], tag + 1, np.frombuffer(message, dtype=np.uint8))
    for peer, message in expected.items():
        if _receive(channel, parties[peer], tag + 1, len(message), "confirmation") != message:
            raise CheatingDetected(
                f"parties {index} and {peer} derived different keys: a member sent its "
                "contributions inconsistently", parties=(index, peer),
                step="key agreement (confirmation)")
    return ReplicatedKeys(count, threshold, index, keys, Prg.from_urandom())
