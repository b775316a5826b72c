"""``rep3``: semi-honest 3-party replicated secret sharing over Z_2^64.

Follows Araki, Furukawa, Lindell, Nof and Ohara, "High-Throughput
Semi-Honest Secure Three-Party Computation with an Honest Majority"
(CCS 2016), and ABY3 (Mohassel and Rindal, CCS 2018) for fixed point.

A secret ``x`` is split as ``x = x_0 + x_1 + x_2`` (mod 2^64; XOR for boolean
shares), and party ``i`` holds the pair ``(x_i, x_(i+1))``, indices mod 3.
Any two parties can reconstruct; one party alone sees uniformly random
values. Security: semi-honest, one corrupted party out of three (honest
majority). Correlated randomness comes from pairwise AES-CTR keys
(:mod:`concilium.mpc.randomness`).

Costs per element, busiest party (``bytes`` are payload bytes sent):

| operation | rounds | bytes |
|---|---|---|
| input from a compute party | 1 | 8 (owner only) |
| input from an outside owner | 1 | 16 (owner only; plus 32-byte seeds) |
| reveal to all | 1 | 8 |
| mul, and_ (per 64-bit word) | 1 | 8 |
| matmul / dot product, per output element | 1 | 8, whatever the inner dimension |
| mul_trunc, matmul_trunc, ``"fast"`` | 1 | 8 |
| mul_trunc, matmul_trunc, ``"reliable"`` | 2 | 32 (dealer role, rotating; 16 for the others) |
| trunc alone, ``"fast"`` / ``"reliable"`` | 1 / 2 | 8 / 16 |
| random, add, sub, public constants | 0 | 0 |
| boolean_pair (half of A2B) | 1 | 8 (party 0 only); 8/3 each from 12288 elements |
| bit_inject, per bit | 2 | 16 (party 0), 8 (others); 8 + 8/3 each from 12288 |
| permute (secret shuffle), per element | 3 | 16 |
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import ClassVar, cast

import numpy as np
import numpy.typing as npt

from concilium.errors import ConfigurationError, ProtocolAbort
from concilium.mpc import rep3_conversion as conversion
from concilium.mpc import rep3_shuffle as shuffle
from concilium.mpc import rep3_truncation as truncation
from concilium.mpc.backend import (
    CAPABILITIES,
    TRUNCATION_MODES,
    ChannelBackend,
    Shares,
    Truncation,
    matmul_shape,
    share_matmul,
    value_shape,
)
from concilium.mpc.randomness import Purpose, ReplicatedRandomness, agree_replicated_keys
from concilium.mpc.shares import check_shape_message, flat_operands, fold_public
from concilium.net.channel import Channel
from concilium.ring.arithmetic import RING_DTYPE, RingArray
from concilium.ring.blocks import BLOCK_ELEMENTS, blocks
from concilium.ring.prg import Prg

__all__ = ["Rep3", "add_zero_share"]

SETUP_TAG = 0


def _product_share(out: RingArray, a: RingArray, b: RingArray, masks: tuple[Prg, Prg],
                   boolean: bool) -> None:
    """``out = a_0 (b_0 + b_1) + a_1 b_0 + F(K_i) - F(K_(i+1))`` (XOR/AND if boolean),
    blockwise so every step runs on cache-resident data."""
    previous, following = masks
    size = min(out.size, BLOCK_ELEMENTS)
    scratch = np.empty((2, size), dtype=RING_DTYPE)
    for block in blocks(out.size):
        size = block.stop - block.start
        z, u, v = out[block], scratch[0, :size], scratch[1, :size]
        if boolean:
            np.bitwise_xor(b[0, block], b[1, block], out=z)
            z &= a[0, block]
            np.bitwise_and(a[1, block], b[0, block], out=u)
            z ^= u
            previous.fill(u)
            following.fill(v)
            u ^= v
            z ^= u
        else:
            np.add(b[0, block], b[1, block], out=z)
            z *= a[0, block]
            np.multiply(a[1, block], b[0, block], out=u)
            z += u
            previous.fill(u)
            following.fill(v)
            u -= v
            z += u


def add_zero_share(z: RingArray, masks: tuple[Prg, Prg]) -> None:
    """``z += F(K_i) - F(K_(i+1))`` in place, blockwise (the three masks sum to zero)."""
    previous, following = masks
    scratch = np.empty((2, min(z.size, BLOCK_ELEMENTS)), dtype=RING_DTYPE)
    for block in blocks(z.size):
        size = block.stop - block.start
        u, v = scratch[0, :size], scratch[1, :size]
        previous.fill(u)
        following.fill(v)
        u -= v
        z[block] += u


class Rep3(ChannelBackend):
    """One compute party of the ``rep3`` protocol.

    ``channel``: this party's channel; ``compute_parties``: the network
    indices of the three compute parties (this party must be one of them).
    Construction runs the one-round key agreement.
    """

    protocol: ClassVar[str] = "rep3"
    security: ClassVar[str] = "semi-honest, honest majority (tolerates 1 corrupted party of 3)"
    components: ClassVar[int] = 2
    capabilities: ClassVar[frozenset[str]] = frozenset(CAPABILITIES)

    def __init__(self, channel: Channel, compute_parties: Sequence[int] = (0, 1, 2)) -> None:
        parties = tuple(int(p) for p in compute_parties)
        if len(parties) != 3 or len(set(parties)) != 3:
            raise ConfigurationError(
                f"rep3 needs exactly 3 distinct compute parties, got {list(parties)}"
            )
        super().__init__(channel, parties, first_tag=SETUP_TAG)
        self.index = parties.index(channel.party)
        self.randomness: ReplicatedRandomness = agree_replicated_keys(
            channel, parties, self.index, SETUP_TAG
        )

    # -- identity and messaging ------------------------------------------------
    def peer(self, offset: int) -> int:
        """Network index of compute party ``index + offset`` (mod 3)."""
        return self._parties[(self.index + offset) % 3]

    def masks(self, tag: int) -> tuple[Prg, Prg]:
        """The two streams of this party's share of a zero sharing for ``tag``."""
        return (self.randomness.previous(tag, Purpose.ZERO_SHARE),
                self.randomness.next(tag, Purpose.ZERO_SHARE))

    def send(self, peer: int, tag: int, array: npt.NDArray[np.generic]) -> None:
        self._channel.send(peer, tag, np.require(array, requirements="C"))

    def receive_ring(self, peer: int, tag: int, shape: tuple[int, ...]) -> RingArray:
        """Receive a ring array and check it has the shape the plan expects."""
        array = self._channel.receive(peer, tag)
        if array.dtype != RING_DTYPE or array.shape != shape:
            raise ProtocolAbort(
                f"party {peer} sent a {array.dtype} array of shape {array.shape} where the "
                f"plan expects uint64 of shape {shape}; the parties disagree on the plan"
            )
        return cast(RingArray, array)

    # -- sharing and opening ------------------------------------------------
    def input(self, owner: int, values: RingArray | None, *, boolean: bool = False) -> Shares:
        if owner in self._parties:
            return self._input_from_compute_party(owner, values, boolean)
        if not 0 <= owner < self._channel.parties:
            raise ConfigurationError(f"there is no party {owner} on this network")
        return self._input_from_outside(owner, boolean)

    def _input_from_compute_party(self, owner: int, values: RingArray | None,
                                  boolean: bool) -> Shares:
        """Owner ``j`` draws ``x_(j+1)`` from ``K_(j+1)``, sets ``x_(j+2) = 0`` and sends
        ``x_j = v - x_(j+1)`` to party ``j+2``; party ``j+1`` learns only the shape."""
        tag = self.next_tag()
        role = (self.index - self._parties.index(owner)) % 3
        if role == 0:
            if values is None:
                raise ConfigurationError("the owner of an input must pass its values")
            value = np.require(values, dtype=RING_DTYPE, requirements="C")
            out = np.empty((2, *value.shape), dtype=RING_DTYPE)
            flat = out.reshape(2, -1)
            self.randomness.next(tag, Purpose.INPUT).fill(flat[1])
            combine = np.bitwise_xor if boolean else np.subtract
            combine(value.reshape(-1), flat[1], out=flat[0])
            self.send(self.peer(-1), tag, out[0, ...])
            self.send(self.peer(1), tag, np.asarray(value.shape, dtype=np.int64))
            return out
        if role == 1:
            shape = check_shape_message(self._channel.receive(owner, tag))
            out = np.zeros((2, *shape), dtype=RING_DTYPE)
            self.randomness.previous(tag, Purpose.INPUT).fill(out[0, ...])
            return out
        received = self._channel.receive(owner, tag)
        if received.dtype != RING_DTYPE:
            raise ProtocolAbort(f"party {owner} sent input shares of dtype {received.dtype}")
        out = np.zeros((2, *received.shape), dtype=RING_DTYPE)
        out[1, ...] = received
        return out

    def _input_from_outside(self, owner: int, boolean: bool) -> Shares:
        """Outside owner: ``x_0 = PRG(s_0)``, ``x_1 = PRG(s_1)``, ``x_2 = v - x_0 - x_1``;
        party 0 gets both seeds and the shape, parties 1 and 2 get one seed and ``x_2``."""
        seed_tag = self.outside_tag(owner)
        data_tag = self.outside_tag(owner)
        seeds = self._channel.receive(owner, seed_tag)
        if seeds.dtype != np.uint8:
            raise ProtocolAbort(f"outside party {owner} sent a malformed seed message")
        if self.index == 0:
            if seeds.size < 32 or (seeds.size - 32) % 8:
                raise ProtocolAbort(f"outside party {owner} sent a malformed seed message")
            shape = check_shape_message(seeds[32:].copy().view(np.int64))
            out = np.empty((2, *shape), dtype=RING_DTYPE)
            Prg(seeds[:16].tobytes()).fill(out[0, ...])
            Prg(seeds[16:32].tobytes()).fill(out[1, ...])
            return out
        if seeds.size != 16:
            raise ProtocolAbort(f"outside party {owner} sent a malformed seed message")
        last = self._channel.receive(owner, data_tag)
        if last.dtype != RING_DTYPE:
            raise ProtocolAbort(f"outside party {owner} sent shares of dtype {last.dtype}")
        out = np.empty((2, *last.shape), dtype=RING_DTYPE)
        drawn, received = (0, 1) if self.index == 1 else (1, 0)
        Prg(seeds.tobytes()).fill(out[drawn, ...])
        out[received, ...] = last
        return out

    def reveal(self, x: Shares, to: Sequence[int] | None = None, *,
               boolean: bool = False) -> RingArray | None:
        """Reveals: the value of ``x`` to the parties in ``to`` (all compute parties by
        default). A compute party receives its missing share from the next party; an
        outside recipient receives one share from each compute party."""
        tag = self.next_tag()
        targets = self._parties if to is None else tuple(dict.fromkeys(int(t) for t in to))
        for target in targets:
            if not 0 <= target < self._channel.parties:
                raise ConfigurationError(f"cannot reveal to party {target}: no such party")
        for target in targets:
            if target in self._parties:
                if self.peer(-1) == target:
                    self.send(target, tag, x[1, ...])
            else:
                self.send(target, self.outside_tag(target), x[0, ...])
        if self.party not in targets:
            return None
        shape = value_shape(x)
        missing = self.receive_ring(self.peer(1), tag, shape).reshape(-1)
        first, second = x[0].reshape(-1), x[1].reshape(-1)
        value = (first ^ second ^ missing) if boolean else (first + second + missing)
        return value.reshape(shape)


    def share_public(self, values: RingArray, *, boolean: bool = False) -> Shares:
        value = np.asarray(values, dtype=RING_DTYPE)
        out = np.zeros((2, *value.shape), dtype=RING_DTYPE)
        if self.index == 0:
            out[0, ...] = value
        elif self.index == 2:
            out[1, ...] = value
        return out

    # -- local operations -----------------------------------------------------
    def add_public(self, x: Shares, constant: RingArray) -> Shares:
        return self._public_into_x0(x, constant, np.add)

    def xor_public(self, x: Shares, constant: RingArray) -> Shares:
        return self._public_into_x0(x, constant, np.bitwise_xor)

    def _public_into_x0(self, x: Shares, constant: RingArray,
                        combine: Callable[..., npt.NDArray[np.uint64]]) -> Shares:
        """Fold a public value into share ``x_0`` (held by parties 0 and 2)."""
        return fold_public(x, constant, combine,
                           {0: 0, 2: 1}.get(self.index))

    def random(self, shape: tuple[int, ...], *, boolean: bool = False) -> Shares:
        """``x_i`` is drawn from ``K_i``, so each share is known to exactly its two holders."""
        tag = self.next_tag()
        out = np.empty((2, *shape), dtype=RING_DTYPE)
        self.randomness.previous(tag, Purpose.RANDOM).fill(out[0, ...])
        self.randomness.next(tag, Purpose.RANDOM).fill(out[1, ...])
        return out

    def sum_of_private(self, values: RingArray) -> Shares:
        """One round: party ``i`` masks its array with its share of a zero sharing
        (``z_i = v_i + F(K_i) - F(K_(i+1))``, uniformly random to anyone but ``i``) and
        reshares it as in a multiplication (Araki et al. 2016, Section 2.2); the
        ``z_i`` sum to the sum of the arrays. Eight bytes per element per party."""
        value = np.require(values, dtype=RING_DTYPE, requirements="C")
        tag = self.next_tag()
        out = np.empty((2, value.size), dtype=RING_DTYPE)
        out[0] = value.reshape(-1)
        add_zero_share(out[0], self.masks(tag))
        self._reshare(out, tag)
        return out.reshape((2, *value.shape))

    # -- multiplication -------------------------------------------------------
    def _reshare(self, out: RingArray, tag: int) -> None:
        """``out[0]`` holds this party's masked 3-out-of-3 share ``z_i``: send it to the
        previous party and receive ``z_(i+1)`` from the next into ``out[1]``."""
        self.send(self.peer(-1), tag, out[0])
        out[1] = self.receive_ring(self.peer(1), tag, out[0].shape)

    def mul(self, x: Shares, y: Shares) -> Shares:
        """Araki et al. Section 2.2: ``z_i = x_i y_i + x_i y_(i+1) + x_(i+1) y_i + a_i``
        with ``a_i = F(K_i) - F(K_(i+1))`` (a zero sharing), then one reshare."""
        return self._elementwise_product(x, y, boolean=False)

    def and_(self, x: Shares, y: Shares) -> Shares:
        """The same protocol over GF(2)^64: ``z_i = x_i & (y_i ^ y_(i+1)) ^ (x_(i+1) & y_i)``."""
        return self._elementwise_product(x, y, boolean=True)

    def _elementwise_product(self, x: Shares, y: Shares, boolean: bool) -> Shares:
        a, b, shape = flat_operands(x, y)
        tag = self.next_tag()
        out = np.empty_like(a)
        _product_share(out[0], a, b, self.masks(tag), boolean)
        self._reshare(out, tag)
        return out.reshape((2, *shape))

    def matmul(self, x: Shares, y: Shares) -> Shares:
        """``Z_i = X_i (Y_i + Y_(i+1)) + X_(i+1) Y_i`` locally, then one reshare of the
        output: communication is per output element, independent of the inner dimension."""
        xs, ys = value_shape(x), value_shape(y)
        shape = matmul_shape(xs, ys)
        tag = self.next_tag()
        both = share_matmul(x, np.stack([y[0] + y[1], y[0]]), len(xs), len(ys))
        out = np.empty((2, int(np.prod(shape, dtype=np.int64))), dtype=RING_DTYPE)
        np.add(both[0].reshape(-1), both[1].reshape(-1), out=out[0])
        add_zero_share(out[0], self.masks(tag))
        self._reshare(out, tag)
        return out.reshape((2, *shape))

    # -- fixed point ----------------------------------------------------------
    def trunc(self, x: Shares, bits: int, mode: Truncation = "reliable") -> Shares:
        _check_truncation(bits, mode)
        tag = self.next_tag(truncation.TAGS_USED[mode])
        shape = value_shape(x)
        flat = np.require(x, requirements="C").reshape(2, -1)
        if mode == "fast":
            out = truncation.fast_truncate(self, flat, bits, tag)
        else:
            out = truncation.reliable_truncate(self, flat, bits, tag)
        return out.reshape((2, *shape))

    def mul_trunc(self, x: Shares, y: Shares, bits: int,
                  mode: Truncation = "reliable") -> Shares:
        _check_truncation(bits, mode)
        a, b, shape = flat_operands(x, y)
        tag = self.next_tag(truncation.TAGS_USED[mode])
        out = truncation.product_truncate(self, truncation.elementwise_part(a, b), bits,
                                          mode, tag)
        return out.reshape((2, *shape))

    def matmul_trunc(self, x: Shares, y: Shares, bits: int,
                     mode: Truncation = "reliable") -> Shares:
        _check_truncation(bits, mode)
        xs, ys = value_shape(x), value_shape(y)
        shape = matmul_shape(xs, ys)
        tag = self.next_tag(truncation.TAGS_USED[mode])
        part = truncation.matrix_part(x, y, len(xs), len(ys))
        out = truncation.product_truncate(self, part, bits, mode, tag)
        return out.reshape((2, *shape))

    # -- conversions and permutations ----------------------------------------
    def boolean_pair(self, x: Shares, transform: Callable[[RingArray], RingArray] | None = None,
                     *, difference: bool = False) -> tuple[Shares, Shares]:
        """See :mod:`concilium.mpc.rep3_conversion`: one round, 8 bytes per element
        from party 0 (8/3 from each party on 12288 elements or more)."""
        return conversion.boolean_pair(self, x, transform, difference)

    def bit_inject(self, bits: Shares) -> Shares:
        """See :mod:`concilium.mpc.rep3_conversion`: two rounds, 16 bytes per bit from
        party 0 and 8 from the others (8 + 8/3 each on 12288 bits or more)."""
        return conversion.bit_inject(self, bits)

    def new_permutation(self, length: int) -> shuffle.SecretPermutation:
        return shuffle.new_permutation(self, length)

    def permute(self, permutation: shuffle.SecretPermutation, x: Shares, *,
                inverse: bool = False, boolean: bool = False) -> Shares:
        """See :mod:`concilium.mpc.rep3_shuffle`: three rounds, 16 bytes per element."""
        return shuffle.apply_permutation(self, permutation, x, inverse=inverse,
                                         boolean=boolean)


def _check_truncation(bits: int, mode: str) -> None:
    if mode not in TRUNCATION_MODES:
        raise ConfigurationError(
            f"unknown truncation mode {mode!r}; choose one of {', '.join(TRUNCATION_MODES)}"
        )
    if not 0 < bits < 62:
        raise ConfigurationError(f"can only truncate by 1..61 bits, not {bits}")
