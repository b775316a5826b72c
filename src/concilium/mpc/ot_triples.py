"""Beaver triples without a dealer: products of secret shares by correlated OT
(Gilboa, "Two Party RSA Key Generation", CRYPTO 1999), over OT extension
(:mod:`concilium.mpc.ot_extension`), for any number of parties.

Each party ``i`` draws ``a_i, b_i`` from its own PRG; the triple is ``a = sum
a_i``, ``b = sum b_i``, ``c = a b``, so ``c_i`` must be a share of ``a_i b_i +
sum over j != i of (a_i b_j + a_j b_i)``. Each cross product ``a_i b_j`` is
shared between ``i`` and ``j`` by Gilboa's method:

1. party ``i`` (the OT receiver) uses the 64 bits of each ``a_i`` as choice bits;
   party ``j`` (the OT sender) gets two random words ``x0, x1`` per OT;
2. ``j`` sends, for bit ``k``, the correction ``d_k = x0_k + b_j - x1_k`` reduced
   to its low ``64 - k`` bits (the rest is multiplied away by ``2^k``: the
   "truncated corrections", 288 bytes per product instead of 512);
3. ``i`` takes ``y_k + a_i^(k) d_k = x0_k + a_i^(k) b_j`` and keeps ``sum 2^k (...)``,
   ``j`` keeps ``-sum 2^k x0_k``: the two add up to ``a_i b_j``.

Every pair runs its two products (one each way) together: one flight of OT
extension messages (16 bytes per OT, 64 OTs per product), one flight of
corrections. AND triples of 64-bit words are the same over GF(2): the sender's
correlation is one bit (``b_j``'s bit ``k``) and the correction is one bit.
Requests are made in chunks (:data:`CHUNK` products), so memory stays bounded
however many triples a plan asks for.

Reveals: nothing (every party's values stay its own; OT hides the choices).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from concilium.errors import ProtocolAbort
from concilium.mpc.ot_extension import OtReceiver, OtSender, setup_pair
from concilium.net.channel import Channel
from concilium.ring.prg import Prg

__all__ = ["CHUNK", "PairwiseOt", "correction_bytes", "matrix_chunk_rows"]

#: products per chunk: 2^14 products are 2^20 OTs, about 16 MB of messages
CHUNK = 1 << 14
_WORD = np.uint64
_SHIFTS = np.arange(64, dtype=np.uint64)


def correction_bytes(products: int) -> int:
    """The bytes of truncated Gilboa corrections for ``products`` products."""
    return products * sum(8 - group for group in range(8)) * 8


def matrix_chunk_rows(inner: int, columns: int) -> int:
    """Rows of a matrix triple made per chunk: at most 2^20 OTs and 2^22 pad words."""
    return max(1, min(CHUNK // max(1, inner), (1 << 22) // max(1, 64 * inner * columns)))


def _pack(corrections: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint8]:
    """``(n, 64)`` corrections, bit ``k`` reduced to ``64 - k`` bits, as bytes."""
    as_bytes = corrections.reshape(-1, 8, 8, 1).view(np.uint8).reshape(-1, 8, 8, 8)
    return np.concatenate([as_bytes[:, g, :, :8 - g].reshape(-1) for g in range(8)])


def _unpack(data: npt.NDArray[np.uint8], count: int) -> npt.NDArray[np.uint64]:
    out = np.zeros((count, 8, 8, 8), dtype=np.uint8)
    start = 0
    for g in range(8):
        size = count * 8 * (8 - g)
        out[:, g, :, :8 - g] = data[start:start + size].reshape(count, 8, 8 - g)
        start += size
    return out.reshape(count, 64 * 8).view(np.uint64).reshape(count, 64)


def _bits(words: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint8]:
    """Each word's 64 bits, least significant first: ``(n * 64,)`` 0/1."""
    return ((words[:, None] >> _SHIFTS) & _WORD(1)).astype(np.uint8).reshape(-1)


@dataclass
class PairwiseOt:
    """This party's OT extension state with every other compute party."""

    channel: Channel
    me: int
    senders: dict[int, OtSender]
    receivers: dict[int, OtReceiver]
    tag: int

    @classmethod
    def setup(cls, channel: Channel, me: int, parties: Sequence[int], tag: int) -> PairwiseOt:
        """Base OTs with every peer (four messages per pair), tags from ``tag``; the
        extension messages later use tags from ``tag + 4``, one pair per chunk."""
        senders, receivers = {}, {}
        for peer in parties:
            if peer != me:
                low, high = min(me, peer), max(me, peer)
                pair_tag = tag + 4 * (low * len(parties) + high)
                senders[peer], receivers[peer] = setup_pair(channel, me, peer, pair_tag)
        return cls(channel, me, senders, receivers, tag + 4 * len(parties) ** 2)

    def _next_tag(self) -> int:
        tag, self.tag = self.tag, self.tag + 2
        return tag

    def cross_products(self, mine_a: npt.NDArray[np.uint64], mine_b: npt.NDArray[np.uint64],
                       *, boolean: bool = False) -> npt.NDArray[np.uint64]:
        """This party's share of ``sum over peers j of (a_me b_j + a_j b_me)`` (products,
        or ANDs of words XORed, with ``boolean``), one chunk of at most
        :data:`CHUNK` values: two flights."""
        count = mine_a.shape[0]
        if count > CHUNK:
            raise ValueError("cross_products takes one chunk at a time")
        tag = self._next_tag()
        peers = sorted(self.senders)
        choices = _bits(mine_a)
        received: dict[int, npt.NDArray[np.uint64]] = {}
        for peer in peers:  # flight 1: as receiver, our extension message to each peer
            u, y, _ = self.receivers[peer].extend(choices)
            self.channel.send(peer, tag, u)
            received[peer] = y
        share = np.zeros(count, dtype=np.uint64)
        for peer in peers:  # as sender: answer each peer's message with corrections
            u = np.asarray(self.channel.receive(peer, tag))
            x0, x1 = self.senders[peer].extend(u, count * 64)
            x0, x1 = x0.reshape(count, 64), x1.reshape(count, 64)
            if boolean:
                delta = (mine_b[:, None] >> _SHIFTS) & _WORD(1)
                corrections = np.packbits(((x0 ^ x1 ^ delta) & _WORD(1)).astype(np.uint8),
                                          axis=None, bitorder="little")
                share ^= ((x0 & _WORD(1)) << _SHIFTS).sum(axis=1, dtype=np.uint64)
            else:
                corrections = _pack(x0 + mine_b[:, None] - x1)
                share -= (x0 << _SHIFTS).sum(axis=1, dtype=np.uint64)
            self.channel.send(peer, tag + 1, corrections)
        for peer in peers:  # flight 2: our peers' corrections for our choices
            data = np.asarray(self.channel.receive(peer, tag + 1))
            y = received[peer].reshape(count, 64)
            chosen = choices.reshape(count, 64).astype(np.uint64)
            if boolean:
                expected = (count * 64 + 7) // 8
                if data.dtype != np.uint8 or data.shape != (expected,):
                    raise ProtocolAbort(f"party {peer} sent malformed OT corrections")
                bits = np.unpackbits(data, bitorder="little")[:count * 64].reshape(count, 64)
                mine = (y ^ (chosen & bits.astype(np.uint64))) & _WORD(1)
                share ^= (mine << _SHIFTS).sum(axis=1, dtype=np.uint64)
            else:
                if data.dtype != np.uint8 or data.shape != (correction_bytes(count),):
                    raise ProtocolAbort(f"party {peer} sent malformed OT corrections")
                share += ((y + chosen * _unpack(data, count)) << _SHIFTS).sum(
                    axis=1, dtype=np.uint64)
        return share

    def matrix_cross_products(self, mine_a: npt.NDArray[np.uint64],
                              mine_b: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
        """This party's share of ``sum over peers j of (A_me B_j + A_j B_me)`` for its
        matrices ``A`` (m, k) and ``B`` (k, n), one chunk (at most 2^20 OTs): Gilboa
        with vector correlations. For OT ``(r, t, bit l)`` the chooser uses bit ``l``
        of ``A[r, t]`` and the sender's correlation is the row ``B[t, :]`` (``n``
        words, each correction truncated to ``64 - l`` bits): 16 bytes per OT and
        ``288 n`` bytes of corrections per element of ``A``, against ``1,312 n`` for
        one scalar triple per term. Two flights."""
        rows, inner = mine_a.shape
        columns = mine_b.shape[1]
        count = rows * inner
        if count * 64 > CHUNK * 64:
            raise ValueError("matrix_cross_products takes one chunk at a time")
        tag = self._next_tag()
        peers = sorted(self.senders)
        choices = _bits(mine_a.reshape(-1))
        received: dict[int, npt.NDArray[np.uint64]] = {}
        for peer in peers:
            u, y, _ = self.receivers[peer].extend(choices, columns)
            self.channel.send(peer, tag, u)
            received[peer] = y.reshape(rows, inner, 64, columns)
        share = np.zeros((rows, columns), dtype=np.uint64)
        shifts = _SHIFTS[None, None, :, None]
        for peer in peers:
            u = np.asarray(self.channel.receive(peer, tag))
            x0, x1 = self.senders[peer].extend(u, count * 64, columns)
            x0 = x0.reshape(rows, inner, 64, columns)
            x1 = x1.reshape(rows, inner, 64, columns)
            corrections = x0 + mine_b[None, :, None, :] - x1
            flat = np.ascontiguousarray(corrections.transpose(0, 1, 3, 2)).reshape(-1, 64)
            self.channel.send(peer, tag + 1, _pack(flat))
            share -= (x0 << shifts).sum(axis=(1, 2), dtype=np.uint64)
        chosen = choices.reshape(rows, inner, 64, 1).astype(np.uint64)
        for peer in peers:
            data = np.asarray(self.channel.receive(peer, tag + 1))
            if data.dtype != np.uint8 or data.shape != (correction_bytes(count * columns),):
                raise ProtocolAbort(f"party {peer} sent malformed OT corrections")
            unpacked = _unpack(data, count * columns).reshape(rows, inner, columns, 64)
            corrections = unpacked.transpose(0, 1, 3, 2)
            share += ((received[peer] + chosen * corrections) << shifts).sum(
                axis=(1, 2), dtype=np.uint64)
        return share

    def matrix_triple(self, rows: int, inner: int, columns: int
                      ) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.uint64],
                                 npt.NDArray[np.uint64]]:
        """This party's shares ``(A, B, C)`` of a matrix triple ``C = A B``, ``A`` (rows,
        inner) and ``B`` (inner, columns), made in chunks of rows."""
        prg = Prg.from_urandom()
        a, b = prg.integers((rows, inner)), prg.integers((inner, columns))
        c = a @ b
        step = matrix_chunk_rows(inner, columns)
        for start in range(0, rows, step):
            part = slice(start, min(rows, start + step))
            c[part] += self.matrix_cross_products(a[part], b)
        return a, b, c

    def bit_products(self, peer: int, bits: npt.NDArray[np.uint64] | None,
                     values: npt.NDArray[np.uint64] | None) -> npt.NDArray[np.uint64]:
        """Additive shares of ``b v`` where this party holds the bits ``b`` (0/1) and
        ``peer`` the ring values ``v`` (one of the two is None): one correlated OT per
        element, 16 bytes from the chooser and 8 back, two flights."""
        tag = self._next_tag()
        if bits is not None:
            choices = (bits & _WORD(1)).astype(np.uint8)
            chosen = np.concatenate([choices, np.zeros(-choices.size % 8, dtype=np.uint8)])
            u, y, _ = self.receivers[peer].extend(chosen)
            self.channel.send(peer, tag, u)
            corrections = np.asarray(self.channel.receive(peer, tag + 1))
            if corrections.dtype != np.uint64 or corrections.shape != y.shape:
                raise ProtocolAbort(f"party {peer} sent malformed OT corrections")
            return (y + chosen.astype(np.uint64) * corrections)[:choices.size]
        assert values is not None
        padded = np.concatenate([values, np.zeros(-values.size % 8, dtype=np.uint64)])
        x0, x1 = self.senders[peer].extend(np.asarray(self.channel.receive(peer, tag)),
                                           padded.size)
        self.channel.send(peer, tag + 1, x0 + padded - x1)
        return (-x0)[:values.size]

    def triples(self, count: int, *, boolean: bool = False
                ) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.uint64],
                           npt.NDArray[np.uint64]]:
        """This party's shares ``(a, b, c)`` of ``count`` multiplication triples (AND
        triples of 64-bit words with ``boolean``), chunk by chunk."""
        prg = Prg.from_urandom()
        a, b = prg.integers(count), prg.integers(count)
        c = np.empty(count, dtype=np.uint64)
        for start in range(0, count, CHUNK):
            part = slice(start, min(count, start + CHUNK))
            cross = self.cross_products(a[part], b[part], boolean=boolean)
            c[part] = (a[part] & b[part]) ^ cross if boolean else a[part] * b[part] + cross
        return a, b, c
