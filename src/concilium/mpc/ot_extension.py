"""OT extension: many random OTs from 128 base OTs, by Ishai, Kilian, Nissim and
Petrank, "Extending Oblivious Transfers Efficiently" (CRYPTO 2003), in the
random-OT form of Asharov, Lindell, Schneider and Zohner (CCS 2013), with the
fixed-key AES hash of Guo, Katz, Wang and Yu, "Efficient and Secure
Multiparty Computation from Fixed-Key Block Ciphers" (S&P 2020).

Per ordered pair of parties, once per session, the extension *receiver* is
the base-OT sender (keys ``k0_i, k1_i``, i < 128) and the extension *sender*
the base-OT receiver, with a secret choice string ``s`` (``Δ``): it learns
``k_(s_i)_i``. Then, for a batch of ``m`` extended OTs with choice bits ``r``:

1. the receiver expands ``t_i = G(k0_i)`` and sends ``u_i = t_i ^ G(k1_i) ^ r``
   (128 rows of ``m`` bits: 16 bytes per OT);
2. the sender computes ``q_i = G(k_(s_i)_i) ^ s_i u_i = t_i ^ s_i r``;
3. both transpose their 128 x m bit matrices (:func:`transpose_bits`): row ``j``
   gives ``q_j = t_j ^ r_j Δ``;
4. the sender's two outputs are ``x0_j = H(j, q_j)`` and ``x1_j = H(j, q_j ^ Δ)``,
   the receiver's ``H(j, t_j) = x_(r_j)_j``, where ``H(j, x) = π(π(x) ^ j) ^ π(x)``
   with ``π`` AES-128 under a fixed public key (a tweakable correlation-robust
   hash; the tweak ``j`` is unique in the session). Outputs are 64-bit words.

``G`` is AES-128 in counter mode keyed by each base key, one counter range per
batch (:class:`_Streams`). The transpose is the compiled kernel of
:mod:`concilium.mpc.bit_kernels`.

Reveals: nothing beyond the OT functionality.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from concilium.errors import ProtocolAbort
from concilium.mpc.bit_kernels import transpose_bits
from concilium.mpc.ot_base import receive_base_ots, send_base_ots
from concilium.net.channel import Channel
from concilium.ring.prg import Prg

__all__ = ["KAPPA", "OtReceiver", "OtSender", "hash_rows", "setup_pair"]

KAPPA = 128
_FIXED_KEY = bytes(range(16))  # public: the hash's permutation, not a secret
def _permutation() -> Cipher[modes.ECB]:
    return Cipher(algorithms.AES(_FIXED_KEY), modes.ECB())


def _encrypt(encryptor: object, blocks: npt.NDArray[np.generic], count: int
             ) -> npt.NDArray[np.uint64]:
    """``π`` on ``count`` 16-byte blocks, written straight into a new array."""
    out = np.empty(count * 16 + 16, dtype=np.uint8)  # update_into wants a block spare
    source = np.ascontiguousarray(blocks).reshape(-1).view(np.uint8)
    encryptor.update_into(source.data, out.data)  # type: ignore[attr-defined]
    return out[:count * 16].view(np.uint64).reshape(count, 2)


def hash_rows(rows: npt.NDArray[np.uint8], first: int, words: int = 1
              ) -> npt.NDArray[np.uint64]:
    """``H(j, x_j)`` for 16-byte rows ``x_j``, tweaks ``j = first, first + 1, ...``:
    the low 64 bits of ``π(π(x) ^ j) ^ π(x)``. With ``words > 1``, ``words`` outputs
    per row, ``(count, words)``: output ``t`` takes the tweak ``(j, t)`` (``t`` in the
    upper half of the block), so every output has its own tweak."""
    count = rows.shape[0]
    encryptor = _permutation().encryptor()
    once = _encrypt(encryptor, rows, count)
    out = np.empty((count, words), dtype=np.uint64)
    for word in range(words):
        tweaked = once.copy()
        tweaked[:, 0] ^= np.arange(first, first + count, dtype=np.uint64)
        tweaked[:, 1] ^= np.uint64(word)
        out[:, word] = _encrypt(encryptor, tweaked, count)[:, 0] ^ once[:, 0]
    return out[:, 0] if words == 1 else out


class _Streams:
    """``G(k_i)`` for each of the 128 keys: AES-128 in counter mode under ``k_i``,
    counter blocks ``(j, batch)`` (block ``j`` of stream ``batch``). One ECB
    encryptor per key is kept for the session, so a batch costs 128 calls into
    ``cryptography`` and no key schedules."""

    def __init__(self, keys: npt.NDArray[np.uint8]) -> None:
        self.encryptors = [Cipher(algorithms.AES(keys[i].tobytes()), modes.ECB()).encryptor()
                           for i in range(keys.shape[0])]

    def expand(self, batch: int, size: int) -> npt.NDArray[np.uint8]:
        blocks = -(-size // 16)
        counters = np.empty((blocks, 2), dtype=np.uint64)
        counters[:, 0] = np.arange(blocks, dtype=np.uint64)
        counters[:, 1] = batch
        source = counters.view(np.uint8).reshape(-1)
        out = np.empty((len(self.encryptors), blocks * 16 + 16), dtype=np.uint8)
        for i, encryptor in enumerate(self.encryptors):
            encryptor.update_into(source.data, out[i].data)
        return out[:, :size]


@dataclass
class OtReceiver:
    """The extension receiver's state for one peer: both base keys of each base OT."""

    k0: npt.NDArray[np.uint8]
    k1: npt.NDArray[np.uint8]
    batches: int = 0
    used: int = 0  # OT indices handed out (the hash's tweaks)
    streams: tuple[_Streams, _Streams] = field(init=False)

    def __post_init__(self) -> None:
        self.streams = (_Streams(self.k0), _Streams(self.k1))

    def extend(self, choices: npt.NDArray[np.uint8], words: int = 1
               ) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint64], int]:
        """For ``m`` choice bits (a multiple of 8): the message ``u`` to send, the
        outputs ``x_(r_j)`` (``words`` 64-bit words each), and the first tweak (the
        sender uses the same)."""
        m = choices.shape[0]
        size = m // 8
        batch, self.batches = self.batches, self.batches + 1
        t = self.streams[0].expand(batch, size)
        u = self.streams[1].expand(batch, size)
        u ^= t
        u ^= np.packbits(choices.astype(np.uint8), bitorder="little")[None, :]
        first, self.used = self.used, self.used + m
        return u, hash_rows(transpose_bits(t), first, words), first


@dataclass
class OtSender:
    """The extension sender's state for one peer: its choice string ``Δ`` (as bits and
    as 16 bytes) and the base keys it chose."""

    delta_bits: npt.NDArray[np.uint8]
    keys: npt.NDArray[np.uint8]
    batches: int = 0
    used: int = 0
    delta: npt.NDArray[np.uint8] = field(init=False)
    streams: _Streams = field(init=False)

    def __post_init__(self) -> None:
        self.delta = np.packbits(self.delta_bits, bitorder="little")
        self.streams = _Streams(self.keys)

    def extend(self, u: npt.NDArray[np.uint8], m: int, words: int = 1
               ) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.uint64]]:
        """The two outputs ``(x0, x1)`` of ``m`` OTs (``words`` words each), from the
        receiver's ``u``."""
        size = m // 8
        if u.dtype != np.uint8 or u.shape != (KAPPA, size):
            raise ProtocolAbort(f"an OT extension message of shape {u.shape} where "
                                f"({KAPPA}, {size}) was expected")
        batch, self.batches = self.batches, self.batches + 1
        q = self.streams.expand(batch, size)
        q ^= u * self.delta_bits[:, None]  # rows i with s_i = 1 take u_i
        rows = transpose_bits(q)
        first, self.used = self.used, self.used + m
        return (hash_rows(rows, first, words),
                hash_rows(rows ^ self.delta[None, :], first, words))


def setup_pair(channel: Channel, me: int, peer: int, tag: int) -> tuple[OtSender, OtReceiver]:
    """The base OTs between this party and ``peer``, both directions (four messages,
    two flights, tags ``tag`` to ``tag + 3``): this party's sender state (it sends
    extended OTs to ``peer``) and receiver state (it receives from ``peer``)."""
    delta_bits = np.unpackbits(np.frombuffer(Prg.from_urandom().random_bytes(16),
                                             dtype=np.uint8), bitorder="little")
    # the lower index sends its base OTs first in each direction
    low = me < peer
    first, second = (tag, tag + 2) if low else (tag + 2, tag)
    if low:
        k0, k1 = send_base_ots(channel, peer, first, KAPPA)  # peer's extension receiver
        chosen = receive_base_ots(channel, peer, second, delta_bits)
    else:
        chosen = receive_base_ots(channel, peer, second, delta_bits)
        k0, k1 = send_base_ots(channel, peer, first, KAPPA)
    return OtSender(delta_bits, chosen), OtReceiver(k0, k1)
