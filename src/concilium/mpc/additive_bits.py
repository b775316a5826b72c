"""Random shared bits (daBits) for the ``additive`` backend, and what it builds
on them: bit injection (B2A of one bit) and exact truncation, for any number
of parties.

* **daBits** (Rotaru and Wood, "MArBled Circuits: Mixing Arithmetic and Boolean
  Circuits with Active Security", INDOCRYPT 2019): a random bit ``r = r_0 ^
  ... ^ r_(n-1)``, party ``i`` holding its own bit ``r_i`` (its boolean share)
  and an arithmetic share of ``r``. :func:`xor_of_private_bits` folds the
  parties' bits in one at a time: ``t <- t + r_j - 2 t r_j``, where ``t r_j =
  sum over k < j of t_k r_j`` takes one correlated OT between ``k`` and ``j`` per
  bit (Gilboa's product of a bit and a ring element, 24 bytes): ``n (n - 1) /
  2`` OTs per daBit, ``n - 1`` steps of two flights. They are made in batches
  (:data:`DABIT_BATCH` at least) and each is used once.
* :func:`inject`: arithmetic 0/1 shares of a boolean-shared bit ``x``: open ``c
  = x ^ r`` (one flight; bits packed, 1/8 byte per element to each peer), then
  ``x = c + (1 - 2c) r``.
* :func:`double_cross_product`: for two parties, shares of ``2 m_0 m_1`` for
  private bits ``m_0`` (party 0) and ``m_1`` (party 1), the wrap term of the
  known-MSB truncation: open ``d = m_0 ^ r_0`` and ``e = m_1 ^ r_1`` (one
  flight), then ``2 m_0 m_1 = 2de + 2d(1 - 2e) r_1 + 2e(1 - 2d) r_0 + (1 - 2d)(1
  - 2e) [2 r_0 r_1]``, with ``[2 r_0 r_1] = r_i - [r]_i`` from the daBit.
* :func:`truncate_with_random_bits`: signed division by ``2^d`` for ``n > 2``
  parties (local shifts fail with more than two summands), for ``|x| < 2^62 -
  2^d``, exact up to unbiased rounding (no catastrophic error). With 64 daBits
  ``r_k``, ``r = sum 2^k r_k`` is uniform and unknown:

  1. ``x' = x + 2^62 + 2^d`` lies in ``[0, 2^63)``; open ``c = x' + r``;
  2. the sum wrapped exactly when ``r``'s top bit is set and ``c``'s is not
     (``x' < 2^63``): ``w = r_63 (1 - c_63)``, linear in the shared ``r_63``
     (the known-MSB wrap of Cheetah, Huang, Lu, Hong and Ding, USENIX Security
     2022, Section 5, with the random-bit masks of Escudero, Ghosh, Keller,
     Rachuri and Scholl, "Improved Primitives for MPC over Mixed
     Arithmetic-Binary Circuits", CRYPTO 2020);
  3. ``(c >> d) - (r >> d) + w 2^(64-d) - 2^(62-d) - 1`` is ``floor(x / 2^d)``
     plus the borrow of the low ``d`` bits, which is 1 with probability
     ``(x mod 2^d) / 2^d``: unbiased rounding.

Reveals: bits masked by a daBit (uniform), and ``x' + r`` for a uniform ``r``;
nothing else.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from concilium.errors import ProtocolAbort
from concilium.mpc.additive_party import AdditiveParty
from concilium.ring.arithmetic import RING_DTYPE, RingArray
from concilium.ring.prg import Prg

__all__ = ["DABIT_BATCH", "double_cross_product", "inject", "make_dabits",
           "truncate_with_random_bits", "xor_of_private_bits"]

_ONE = np.uint64(1)
_BIT_POSITIONS = np.arange(64, dtype=np.uint64)
_CHUNK = 1 << 20  # daBits per round of OTs (about 16 MB of messages)
#: daBits are made at least this many at a time
DABIT_BATCH = 1 << 14


def xor_of_private_bits(party: AdditiveParty, bits: RingArray) -> RingArray:
    """This party's arithmetic share of the XOR, over the compute parties, of each
    party's own 0/1 array ``bits`` (one shape on every party).

    Reveals: nothing (each product is one correlated OT).
    """
    flat = np.require(bits, dtype=RING_DTYPE, requirements="C").reshape(-1) & _ONE
    parties = party.compute_parties
    me = party.index
    total = flat.copy() if me == 0 else np.zeros_like(flat)
    for step in range(1, len(parties)):
        base = party.next_tag(2 * step)  # one tag pair per party already folded in
        if me == step:  # this party's own share of t is still zero
            product = np.zeros_like(flat)
            for earlier in range(step):
                party.ot.tag = base + 2 * earlier
                product += party.ot.bit_products(parties[earlier], flat, None)
            total = total + flat - (product << _ONE)
        elif me < step:
            party.ot.tag = base + 2 * me
            product = party.ot.bit_products(parties[step], None, total)
            total = total - (product << _ONE)
    return total.reshape(np.shape(bits))


def make_dabits(party: AdditiveParty, count: int) -> tuple[RingArray, RingArray]:
    """``count`` new daBits: this party's own bits and its arithmetic shares."""
    own = np.empty(count, dtype=RING_DTYPE)
    shares = np.empty(count, dtype=RING_DTYPE)
    prg = Prg.from_urandom()
    for start in range(0, count, _CHUNK):
        part = slice(start, min(count, start + _CHUNK))
        bits = prg.integers((part.stop - part.start,)) & _ONE
        own[part] = bits
        shares[part] = xor_of_private_bits(party, bits)
    return own, shares


def _packed_from(party: AdditiveParty, peer: int, tag: int,
                 shape: tuple[int, ...]) -> npt.NDArray[np.uint8]:
    """Packed bits from ``peer``; anything else aborts the run."""
    theirs = party.channel.receive(peer, tag)
    if theirs.dtype != np.uint8 or theirs.shape != shape:
        raise ProtocolAbort(f"party {peer} sent a malformed bit opening")
    return np.asarray(theirs, dtype=np.uint8)


def _open_bits(party: AdditiveParty, bits: RingArray) -> RingArray:
    """The XOR over the parties of each party's 0/1 array ``bits``, sent packed.

    Reveals: the XOR to every compute party (callers mask it with a daBit)."""
    flat = np.require(bits, dtype=RING_DTYPE, requirements="C").reshape(-1) & _ONE
    packed = np.packbits(flat.astype(np.uint8), bitorder="little")
    tag = party.next_tag()
    for peer in party.peers:
        party.channel.send(peer, tag, packed)
    total = packed.copy()
    for peer in party.peers:
        total ^= _packed_from(party, peer, tag, packed.shape)
    return np.unpackbits(total, count=flat.size, bitorder="little").astype(RING_DTYPE)


def inject(party: AdditiveParty, bits: RingArray) -> RingArray:
    """This party's arithmetic share of the XOR of every party's bit ``bits`` (bit 0
    of its component of a boolean sharing).

    Reveals: ``x ^ r`` for a fresh daBit ``r``: a uniform bit.
    """
    flat = np.require(bits, dtype=RING_DTYPE, requirements="C").reshape(-1) & _ONE
    own, shares = party.dabits(flat.size)
    opened = _open_bits(party, flat ^ own)
    result = (_ONE - (opened << _ONE)) * shares
    if party.index == 0:
        result = result + opened
    return result.reshape(np.shape(bits))


def double_cross_product(party: AdditiveParty, bits: RingArray) -> RingArray:
    """Two parties: this party's share of ``2 m_0 m_1``, ``m_i`` the private 0/1 array
    ``bits`` of party ``i``.

    Reveals: ``m_i ^ r_i`` for fresh daBit bits ``r_i``: uniform bits.
    """
    flat = np.require(bits, dtype=RING_DTYPE, requirements="C").reshape(-1) & _ONE
    own, shares = party.dabits(flat.size)
    tag = party.next_tag()
    packed = np.packbits((flat ^ own).astype(np.uint8), bitorder="little")
    party.channel.send(party.peer, tag, packed)
    theirs = _packed_from(party, party.peer, tag, packed.shape)
    other = np.unpackbits(theirs, count=flat.size, bitorder="little").astype(RING_DTYPE)
    mine = flat ^ own
    d, e = (mine, other) if party.index == 0 else (other, mine)
    sign_d, sign_e = _ONE - (d << _ONE), _ONE - (e << _ONE)
    doubled_product = own - shares  # [2 r_0 r_1]
    result = sign_d * sign_e * doubled_product
    if party.index == 0:
        result = result + ((d * e) << _ONE) + ((e * sign_d * own) << _ONE)
    else:
        result = result + ((d * sign_e * own) << _ONE)
    return result.reshape(np.shape(bits))


def truncate_with_random_bits(party: AdditiveParty, share: RingArray, bits: int) -> RingArray:
    """This party's share of ``x / 2^bits`` rounded as the module docstring states,
    for the arithmetic sharing whose share here is ``share``.

    Reveals: ``x + 2^62 + 2^bits + r`` for a uniform ``r`` nobody knows.
    """
    flat = np.require(share, dtype=RING_DTYPE, requirements="C").reshape(-1)
    count = flat.size
    random_bits = party.dabits(64 * count)[1].reshape(count, 64)
    weights = _ONE << _BIT_POSITIONS
    r = (random_bits * weights).sum(axis=1, dtype=RING_DTYPE)
    high = (random_bits[:, bits:] * (weights[:64 - bits])).sum(axis=1, dtype=RING_DTYPE)
    top = random_bits[:, 63]
    shifted = flat + np.uint64((1 << 62) + (1 << bits)) if party.index == 0 else flat
    opened = party.reveal((shifted + r)[None])
    assert opened is not None
    not_wrapped_top = (opened >> np.uint64(63)) == 0
    wraps = np.where(not_wrapped_top, top, np.uint64(0))
    result = wraps * np.uint64(1 << (64 - bits)) - high
    if party.index == 0:
        result = result + (opened >> np.uint64(bits)) - np.uint64((1 << (62 - bits)) + 1)
    return result.reshape(np.shape(share))
