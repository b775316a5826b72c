"""The ``additive`` backend: ``n >= 2`` parties, additive shares over Z_2^64 and XOR
shares of 64-bit words, no dealer and no third party (semi-honest; any ``n - 1``
of the ``n`` may collude).

A value ``x`` is ``x_0 + ... + x_(n-1)`` (XOR for words), party ``i`` holding
``x_i`` (one component). Correlations come from oblivious transfer between
every pair of parties (:mod:`concilium.mpc.ot_triples`: base OTs at
construction, then triples and daBits in batches, made when a pool runs short
or ahead of time with :meth:`Additive.prepare`; each is handed out once,
:mod:`concilium.mpc.correlation_pool`).

* **Input**: the owner draws a uniform mask for every other party from its own
  PRG, sends it (that party's share) and keeps ``v`` minus the masks. An outside
  owner does the same for all ``n`` parties.
* **Products** (Beaver 1991): with a triple ``(a, b, c)``, every party
  broadcasts its shares of ``d = x - a`` and ``e = y - b`` (one round, 16 bytes
  per element to each peer) and sets ``z = c + d b + e a`` (+ ``d e`` at party
  0). ANDs are the same over GF(2); matrix products use one triple per scalar
  product term.
* **Truncation**, two parties. ``fast``: each party shifts its own share
  (SecureML, Mohassel and Zhang, S&P 2017: party 1 shifts ``-x_1`` and
  negates), no message; off by ``2^(64-d)`` with probability ``|x| / 2^64``.
  ``reliable``: truncation with a known most significant bit (Cheetah, Huang,
  Lu, Hong and Ding, USENIX Security 2022, Section 5): after adding ``2^62 + 2^d
  - 1`` the value is positive below ``2^63``, so the shares wrap exactly when
  either share's top bit is set, ``w = m_0 + m_1 - m_0 m_1``, with ``2 m_0 m_1``
  from one daBit and one flight of packed bits
  (:func:`~concilium.mpc.additive_bits.double_cross_product`); the result is
  ``floor(x / 2^d)`` plus 1 with probability exactly ``(x mod 2^d) / 2^d``, for
  every ``|x| < 2^62 - 2^d``: no catastrophic error.
* **Truncation**, more parties: local shifts fail with ``n > 2`` summands, so
  both modes open ``x + r`` for a random ``r`` made of 64 daBits and correct the
  wrap from the known top bit
  (:func:`~concilium.mpc.additive_bits.truncate_with_random_bits`): exact up to
  unbiased rounding.
* **Conversions**: two parties' arithmetic sharing is already two summands, each
  held by one party (``boolean_pair`` is local); with more, each party's share
  is one summand (``boolean_summands``) and :mod:`concilium.ops.summands`
  reduces them to two with carry-save adders. ``bit_inject`` uses one daBit per
  bit and one flight of packed bits.
* **Secret shuffle**: a composition of one permutation per party, each applied
  by oblivious switching networks (:mod:`concilium.mpc.oblivious_switching`).

Reveals: only what ``reveal`` opens; ``d`` and ``e`` are masked by uniform
triple shares, the bits opened by daBits, ``x + r`` by a uniform ``r``, and
the OT phase reveals nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import ClassVar, cast

import numpy as np

from concilium.errors import ConfigurationError, ProtocolAbort
from concilium.mpc import oblivious_switching as switching
from concilium.mpc.additive_bits import (
    DABIT_BATCH,
    double_cross_product,
    inject,
    make_dabits,
    truncate_with_random_bits,
)
from concilium.mpc.backend import (
    ChannelBackend,
    OutsideClient,
    Shares,
    Truncation,
    align,
    broadcast_shape,
    check_truncation,
    matmul_shape,
    value_shape,
)
from concilium.mpc.correlation_pool import Pool
from concilium.mpc.oblivious_switching import AdditivePermutation
from concilium.mpc.ot_triples import CHUNK, PairwiseOt, matrix_chunk_rows
from concilium.net.channel import Channel
from concilium.ring.arithmetic import RING_DTYPE, RingArray
from concilium.ring.prg import Prg

__all__ = ["Additive", "AdditiveOutsideParty"]

_SETUP_TAG = 1 << 20  # the first plan tag (the base OTs take the first few)
#: triples are made at least this many at a time: a batch's fixed cost (two flights,
#: the 128 base-key streams, the transposes) is then paid once for many small products
MINIMUM_BATCH = 1024


class Additive(ChannelBackend):
    """One party of the ``additive`` protocol."""

    protocol: ClassVar[str] = "additive"
    security: ClassVar[str] = "semi-honest, dishonest majority (any n - 1 of n may collude)"
    components: ClassVar[int] = 1
    capabilities: ClassVar[frozenset[str]] = frozenset(
        {"boolean", "shuffle", "truncation:fast", "truncation:reliable", "outside_parties"})

    def __init__(self, channel: Channel, compute_parties: Sequence[int] = (0, 1)) -> None:
        super().__init__(channel, compute_parties, first_tag=_SETUP_TAG)
        if len(self.compute_parties) < 2:
            raise ConfigurationError("the additive backend needs at least two compute "
                                     f"parties, not {len(self.compute_parties)}")
        self.index = self.compute_parties.index(channel.party)
        self.peers = tuple(p for p in self.compute_parties if p != channel.party)
        parties = len(self.compute_parties)
        self._ot = PairwiseOt.setup(channel, channel.party, self.compute_parties,
                                    self.next_tag(4 * parties * parties))
        self._pools = {False: Pool(3), True: Pool(3)}
        self._dabits = Pool(2)
        self.triples_made = {False: 0, True: 0}
        self.dabits_made = 0

    @property
    def ot(self) -> PairwiseOt:
        """This party's OT extension state with every other compute party."""
        return self._ot

    @property
    def two_party(self) -> bool:
        return len(self.compute_parties) == 2

    @property
    def peer(self) -> int:
        """The other party of a two-party run."""
        if not self.two_party:
            raise ConfigurationError("a run of more than two parties has several peers")
        return self.peers[0]

    # -- correlations -----------------------------------------------------------------
    def prepare(self, count: int, *, boolean: bool = False) -> None:
        """Make ``count`` triples now (the offline phase), for later products."""
        self._pools[boolean].add(self._make(count, boolean))

    def prepare_dabits(self, count: int) -> None:
        """Make ``count`` daBits now (the offline phase), for later bit injections and
        truncations (64 per element with more than two parties)."""
        self._dabits.add(make_dabits(self, count))
        self.dabits_made += count

    def _make(self, count: int, boolean: bool) -> tuple[RingArray, RingArray, RingArray]:
        """New triples; their messages take plan tags, so they interleave with the
        plan's in order."""
        self._ot.tag = self.next_tag(2 * max(1, -(-count // CHUNK)))
        self.triples_made[boolean] += count
        return self._ot.triples(count, boolean=boolean)

    def _triple(self, count: int, boolean: bool) -> tuple[RingArray, RingArray, RingArray]:
        pool = self._pools[boolean]
        missing = count - pool.size()
        if missing > 0:  # not prepared: made now, at least a batch (all parties alike)
            pool.add(self._make(max(missing, MINIMUM_BATCH), boolean))
        taken = pool.take(count)
        assert taken is not None
        return cast(tuple[RingArray, RingArray, RingArray], taken)

    def dabits(self, count: int) -> tuple[RingArray, RingArray]:
        """``count`` daBits, each handed out once (made now if the pool is short: at
        least :data:`~concilium.mpc.additive_bits.DABIT_BATCH`)."""
        missing = count - self._dabits.size()
        if missing > 0:
            made = max(missing, DABIT_BATCH)
            self._dabits.add(make_dabits(self, made))
            self.dabits_made += made
        taken = self._dabits.take(count)
        assert taken is not None
        own, shares = taken
        return own, shares

    # -- sharing and opening --------------------------------------------------------
    def input(self, owner: int, values: RingArray | None, *, boolean: bool = False) -> Shares:
        tag = self.next_tag()
        if owner not in self._parties:
            return self.outside_share(owner)
        if owner != self.party:
            return self.ring_from(owner, tag)[None].copy()
        if values is None:
            raise ConfigurationError("the owner of an input must pass its values")
        value = np.require(values, dtype=RING_DTYPE, requirements="C")
        prg = Prg.from_urandom()
        mine = value.copy()
        for peer in self.peers:  # each peer's share is a fresh uniform mask
            mask = prg.integers(value.shape)
            self._channel.send(peer, tag, mask)
            mine = (mine ^ mask) if boolean else (mine - mask)
        return mine[None]

    def reveal(self, x: Shares, to: Sequence[int] | None = None, *,
               boolean: bool = False) -> RingArray | None:
        """Reveals: the value to the parties in ``to`` (default: both compute parties)."""
        tag = self.next_tag()
        targets = self._parties if to is None else tuple(dict.fromkeys(int(t) for t in to))
        share = np.require(x[0], dtype=RING_DTYPE, requirements="C")
        for target in targets:
            if not 0 <= target < self._channel.parties:
                raise ConfigurationError(f"cannot reveal to party {target}: no such party")
            if target in self.peers:
                self._channel.send(target, tag, share)
            elif target not in self._parties:
                self._channel.send(target, self.outside_tag(target), share)
        if self.party not in targets:
            return None
        total = share.copy()
        for peer in self.peers:
            other = self.ring_from(peer, tag, share.shape)
            total = (total ^ other) if boolean else (total + other)
        return total

    def share_public(self, values: RingArray, *, boolean: bool = False) -> Shares:
        value = np.asarray(values, dtype=RING_DTYPE)
        return (value if self.index == 0 else np.zeros_like(value))[None].copy()


    def add_public(self, x: Shares, constant: RingArray) -> Shares:
        constant = np.asarray(constant, dtype=RING_DTYPE)
        aligned = align(x, constant.ndim)
        return aligned + constant if self.index == 0 else aligned + np.zeros_like(constant)

    def xor_public(self, x: Shares, constant: RingArray) -> Shares:
        constant = np.asarray(constant, dtype=RING_DTYPE)
        aligned = align(x, constant.ndim)
        return aligned ^ constant if self.index == 0 else aligned ^ np.zeros_like(constant)

    def random(self, shape: tuple[int, ...], *, boolean: bool = False) -> Shares:
        """Each party's share is its own uniform draw: the sum is uniform, unknown."""
        self.next_tag()
        return Prg.from_urandom().integers(shape)[None]

    # -- products ---------------------------------------------------------------------
    def _beaver(self, x: Shares, y: Shares, boolean: bool) -> Shares:
        shape = broadcast_shape(value_shape(x), value_shape(y))
        ndim = len(shape)
        left = np.broadcast_to(align(x, ndim)[0], shape).reshape(-1)
        right = np.broadcast_to(align(y, ndim)[0], shape).reshape(-1)
        a, b, c = self._triple(left.size, boolean)
        tag = self.next_tag()
        mine = np.stack([left ^ a, right ^ b]) if boolean else np.stack([left - a, right - b])
        for peer in self.peers:
            self._channel.send(peer, tag, mine)
        opened = mine.copy()
        for peer in self.peers:
            theirs = self.ring_from(peer, tag, mine.shape)
            opened = (opened ^ theirs) if boolean else (opened + theirs)
        d, e = opened[0], opened[1]
        if boolean:
            z = c ^ (d & b) ^ (e & a) ^ ((d & e) if self.index == 0 else 0)
        else:
            z = c + d * b + e * a + ((d * e) if self.index == 0 else 0)
        return np.asarray(z, dtype=RING_DTYPE).reshape((1, *shape))

    def mul(self, x: Shares, y: Shares) -> Shares:
        return self._beaver(x, y, boolean=False)

    def and_(self, x: Shares, y: Shares) -> Shares:
        return self._beaver(x, y, boolean=True)

    def matmul(self, x: Shares, y: Shares) -> Shares:
        """Matrices and vectors: Beaver with a matrix triple ``C = A B`` (the parties
        open ``D = X - A`` and ``E = Y - B``, one round, and set ``Z = C + D B + A E``,
        plus ``D E`` at party 0), whose cross products are Gilboa's with vector
        correlations (:meth:`PairwiseOt.matrix_cross_products`). Batched operands: one
        triple per term ``x[i, k] y[k, j]``, summed locally."""
        xs, ys = value_shape(x), value_shape(y)
        shape = matmul_shape(xs, ys)
        left = x[0] if len(xs) > 1 else x[0][None, :]
        right = y[0] if len(ys) > 1 else y[0][:, None]
        if left.ndim == 2 and right.ndim == 2:
            return self._matrix_beaver(left, right).reshape((1, *shape))
        terms = self._beaver(left[..., :, :, None][None], right[..., None, :, :][None],
                             boolean=False)[0]
        total = terms.sum(axis=-2, dtype=RING_DTYPE)
        return total.reshape((1, *shape))

    def _matrix_beaver(self, left: RingArray, right: RingArray) -> RingArray:
        rows, inner = left.shape
        columns = right.shape[1]
        step = matrix_chunk_rows(inner, columns)
        self._ot.tag = self.next_tag(2 * max(1, -(-rows // step)))
        a, b, c = self._ot.matrix_triple(rows, inner, columns)
        tag = self.next_tag()
        mine = np.concatenate([(left - a).reshape(-1), (right - b).reshape(-1)])
        for peer in self.peers:
            self._channel.send(peer, tag, mine)
        opened = mine.copy()
        for peer in self.peers:
            opened += self.ring_from(peer, tag, mine.shape)
        d = opened[:left.size].reshape(rows, inner)
        e = opened[left.size:].reshape(inner, columns)
        z = c + d @ b + a @ e
        return z + d @ e if self.index == 0 else z

    # -- fixed point ------------------------------------------------------------------
    def trunc(self, x: Shares, bits: int, mode: Truncation = "reliable") -> Shares:
        check_truncation(bits, mode)
        shape = value_shape(x)
        share = np.require(x[0], dtype=RING_DTYPE, requirements="C").reshape(-1)
        if not self.two_party:  # local shifts fail with n > 2 summands: random bits
            return truncate_with_random_bits(self, share, bits).reshape((1, *shape))
        if mode == "fast":
            self.next_tag()
            if self.index == 0:
                local = (share.view(np.int64) >> bits).view(RING_DTYPE)
            else:
                local = (-((-share).view(np.int64) >> bits)).view(RING_DTYPE)
            return local.reshape((1, *shape))
        offset = np.uint64((1 << 62) + (1 << bits) - 1)  # the -1: exactly unbiased
        shifted = share + offset if self.index == 0 else share.copy()
        top = shifted >> np.uint64(63)  # this party's share's most significant bit
        doubled = double_cross_product(self, top)  # 2 m_0 m_1
        # wraps = m_0 + m_1 - m_0 m_1, times 2^(64 - d)
        result = ((shifted >> np.uint64(bits)) - top * np.uint64(1 << (64 - bits))
                  + doubled * np.uint64(1 << (63 - bits)))
        if self.index == 0:
            result = result - np.uint64(1 << (62 - bits))
        return result.reshape((1, *shape))



    # -- conversions ------------------------------------------------------------------
    def boolean_pair(self, x: Shares, transform: Callable[[RingArray], RingArray] | None = None,
                     *, difference: bool = False) -> tuple[Shares, Shares]:
        """``u = x_0`` (held by party 0) and ``v = x_1`` (``-x_1`` with
        ``difference``, held by party 1), each as a boolean sharing whose other
        share is zero: local, no message."""
        if not self.two_party:
            raise ConfigurationError(
                f"{len(self._parties)} additive parties hold {len(self._parties)} summands, "
                "not two: use boolean_summands (ops.summands reduces them)")
        shape = value_shape(x)
        flat = np.require(x[0], dtype=RING_DTYPE, requirements="C").reshape(-1)
        if self.index == 1 and difference:
            flat = -flat
        words = flat if transform is None else transform(flat)
        mine = np.asarray(words, dtype=RING_DTYPE).reshape((1, *shape))
        zero = np.zeros_like(mine)
        return (mine, zero) if self.index == 0 else (zero, mine)

    def boolean_summands(self, x: Shares) -> list[Shares] | None:
        """With more than two parties: party ``i``'s share ``x_i`` as a boolean sharing
        held by party ``i`` alone (the others' component is zero), one per party; their
        sum is ``x``. Two parties: None (:meth:`boolean_pair` is local)."""
        if self.two_party:
            return None
        share = np.require(x, dtype=RING_DTYPE, requirements="C")
        zero = np.zeros_like(share)
        return [share.copy() if i == self.index else zero for i in range(len(self._parties))]

    def bit_inject(self, bits: Shares) -> Shares:
        """Arithmetic 0/1 shares of bit 0 of each word, with one daBit each: one flight
        of packed bits (:func:`~concilium.mpc.additive_bits.inject`)."""
        return inject(self, bits[0])[None]

    def new_permutation(self, length: int) -> AdditivePermutation:
        """This party's component of a fresh secret permutation (no message)."""
        self.next_tag()
        return switching.new_permutation(self, length)

    def permute(self, permutation: AdditivePermutation, x: Shares, *, inverse: bool = False,
                boolean: bool = False) -> Shares:
        """See :mod:`concilium.mpc.oblivious_switching`: one oblivious switching per
        component and other party, two flights each."""
        return switching.apply_permutation(self, permutation, x, inverse=inverse,
                                           boolean=boolean)




class AdditiveOutsideParty(OutsideClient):
    """An outside owner or recipient of the ``additive`` protocol."""

    def send_input(self, values: RingArray, *, boolean: bool = False) -> None:
        value = np.require(values, dtype=RING_DTYPE, requirements="C")
        tag = self.next_tag()
        prg = Prg.from_urandom()
        rest = value.copy()
        for party in self._parties[1:]:  # uniform masks; the first party gets the rest
            mask = prg.integers(value.shape)
            self._channel.send(party, tag, mask)
            rest = (rest ^ mask) if boolean else (rest - mask)
        self._channel.send(self._parties[0], tag, rest)

    def receive_output(self, *, boolean: bool = False) -> RingArray:
        """Reveals: the value to this party (the compute parties chose to open it here)."""
        tag = self.next_tag()
        shares = [self._channel.receive(party, tag) for party in self._parties]
        if any(s.dtype != RING_DTYPE or s.shape != shares[0].shape for s in shares):
            raise ProtocolAbort("compute parties sent inconsistent output shares")
        total = np.asarray(shares[0], dtype=RING_DTYPE).copy()
        for share in shares[1:]:
            other = np.asarray(share, dtype=RING_DTYPE)
            total = (total ^ other) if boolean else (total + other)
        return total

    def receive_public(self) -> bytes:
        tag = self.next_tag()
        messages = [self._channel.receive(party, tag) for party in self._parties]
        if any(m.dtype != np.uint8 or not np.array_equal(m, messages[0]) for m in messages):
            raise ProtocolAbort("the compute parties sent different public messages; "
                                "they disagree on the plan")
        return messages[0].tobytes()
