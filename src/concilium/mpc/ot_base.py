"""Base oblivious transfer: Chou and Orlandi, "The Simplest Protocol for Oblivious
Transfer" (LATINCRYPT 2015), over the Ed25519 group of libsodium (PyNaCl).

A batch of ``count`` random OTs between a *sender* and a *receiver* with
choice bits ``c``: the sender ends with two keys ``(k0_i, k1_i)`` per OT, the
receiver with ``k_(c_i)_i``, and neither learns anything else (semi-honest).

1. The sender draws ``a`` and sends ``A = aG`` (and keeps ``T = aA``).
2. The receiver draws ``b_i`` and sends ``B_i = b_i G + c_i A``; its key is
   ``k_i = H(i, A, B_i, b_i A)``. Both candidates ``b_i G`` and ``b_i G + A`` are
   computed for every ``i`` and one is selected, so the work does not depend
   on the choice bits.
3. The sender checks every ``B_i`` (a canonical point of the prime-order
   subgroup) and sets ``k0_i = H(i, A, B_i, a B_i)`` and ``k1_i = H(i, A, B_i,
   a B_i - T)``.

``H`` is SHA-256 truncated to 128 bits over the OT's index, both messages and
the shared point: hashing the index and the transcript in is the fix the
protocol's later analyses require (Hauck and Loss 2017; Genc, Iovino and
Rial 2018 on the original's erratum). The group operations are libsodium's
(``crypto_scalarmult_ed25519_noclamp``, ``crypto_core_ed25519_add``), never
our own.

Reveals: nothing beyond the OT functionality (each party's own outputs).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from nacl import bindings as sodium

from concilium.errors import ProtocolAbort
from concilium.net.channel import Channel

__all__ = ["KEY_BYTES", "receive_base_ots", "send_base_ots"]

KEY_BYTES = 16
_POINT = 32


def _scalar() -> bytes:
    """A uniform scalar mod the group order (a 64-byte draw reduced)."""
    return sodium.crypto_core_ed25519_scalar_reduce(os.urandom(64))


def _key(index: int, first: bytes, second: bytes, shared: bytes) -> bytes:
    digest = hashlib.sha256(b"concilium base OT" + index.to_bytes(8, "little") + first
                            + second + shared)
    return digest.digest()[:KEY_BYTES]


def _point(data: bytes, who: int) -> bytes:
    if not sodium.crypto_core_ed25519_is_valid_point(data):
        raise ProtocolAbort(f"party {who} sent a base-OT message that is not a valid group "
                            "element; aborting")
    return data


def send_base_ots(channel: Channel, peer: int, tag: int, count: int
                  ) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]]:
    """The sender's side: ``(k0, k1)``, each ``(count, 16)`` bytes. Two messages."""
    a = _scalar()
    big_a = sodium.crypto_scalarmult_ed25519_base_noclamp(a)
    t = sodium.crypto_scalarmult_ed25519_noclamp(a, big_a)
    channel.send(peer, tag, np.frombuffer(big_a, dtype=np.uint8))
    received = np.asarray(channel.receive(peer, tag + 1))
    if received.dtype != np.uint8 or received.shape != (count * _POINT,):
        raise ProtocolAbort(f"party {peer} sent {received.shape} bytes of base-OT messages "
                            f"where {count * _POINT} were expected")
    data = received.tobytes()
    k0 = np.empty((count, KEY_BYTES), dtype=np.uint8)
    k1 = np.empty((count, KEY_BYTES), dtype=np.uint8)
    for i in range(count):
        big_b = _point(data[i * _POINT:(i + 1) * _POINT], peer)
        shared = sodium.crypto_scalarmult_ed25519_noclamp(a, big_b)
        other = sodium.crypto_core_ed25519_sub(shared, t)
        k0[i] = np.frombuffer(_key(i, big_a, big_b, shared), dtype=np.uint8)
        k1[i] = np.frombuffer(_key(i, big_a, big_b, other), dtype=np.uint8)
    return k0, k1


def receive_base_ots(channel: Channel, peer: int, tag: int,
                     choices: Sequence[int] | npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """The receiver's side: ``k_(c_i)``, ``(count, 16)`` bytes."""
    big_a = _point(np.asarray(channel.receive(peer, tag)).tobytes(), peer)
    messages, keys = [], np.empty((len(choices), KEY_BYTES), dtype=np.uint8)
    for i, choice in enumerate(choices):
        b = _scalar()
        plain = sodium.crypto_scalarmult_ed25519_base_noclamp(b)
        shifted = sodium.crypto_core_ed25519_add(plain, big_a)
        big_b = (plain, shifted)[int(choice) & 1]
        shared = sodium.crypto_scalarmult_ed25519_noclamp(b, big_a)
        messages.append(big_b)
        keys[i] = np.frombuffer(_key(i, big_a, big_b, shared), dtype=np.uint8)
    channel.send(peer, tag + 1, np.frombuffer(b"".join(messages), dtype=np.uint8))
    return keys
