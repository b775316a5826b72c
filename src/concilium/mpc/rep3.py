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
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import ClassVar

import numpy as np
import numpy.typing as npt

from concilium.errors import ConfigurationError, ProtocolAbort
from concilium.mpc import rep3_truncation as truncation
from concilium.mpc.backend import (
    TRUNCATION_MODES,
    Backend,
    Shares,
    Truncation,
    align,
    broadcast_shape,
    matmul_shape,
    share_matmul,
    value_shape,
)
from concilium.mpc.randomness import ReplicatedRandomness, agree_replicated_keys
from concilium.net.channel import Channel
from concilium.ring.arithmetic import RING_DTYPE, RingArray
from concilium.ring.prg import Prg

__all__ = ["OUTSIDE_TAG_BASE", "Rep3", "check_shape_message"]

#: Tags of messages exchanged with outside parties start here, one counter per
#: outside party, so they never collide with the compute parties' plan tags.
OUTSIDE_TAG_BASE = 1 << 62
SETUP_TAG = 0
_MAX_DIMENSIONS = 8
_MAX_ELEMENTS = 1 << 34


def check_shape_message(array: npt.NDArray[np.generic]) -> tuple[int, ...]:
    """Validate a shape announced by a peer (int64 vector of non-negative dims)."""
    if array.dtype != np.int64 or array.ndim != 1 or array.size > _MAX_DIMENSIONS:
        raise ProtocolAbort("a peer announced a malformed shape")
    shape = tuple(int(dim) for dim in array)
    if any(dim < 0 for dim in shape) or int(np.prod(shape, dtype=object)) > _MAX_ELEMENTS:
        raise ProtocolAbort(f"a peer announced an unacceptable shape {shape}")
    return shape


class Rep3(Backend):
    """One compute party of the ``rep3`` protocol.

    ``channel``: this party's channel; ``compute_parties``: the network
    indices of the three compute parties (this party must be one of them).
    Construction runs the one-round key agreement.
    """

    protocol: ClassVar[str] = "rep3"
    security: ClassVar[str] = "semi-honest, honest majority (tolerates 1 corrupted party of 3)"
    components: ClassVar[int] = 2

    def __init__(self, channel: Channel, compute_parties: Sequence[int] = (0, 1, 2)) -> None:
        parties = tuple(int(p) for p in compute_parties)
        if len(parties) != 3 or len(set(parties)) != 3:
            raise ConfigurationError(
                f"rep3 needs exactly 3 distinct compute parties, got {list(parties)}"
            )
        if channel.party not in parties:
            raise ConfigurationError(
                f"party {channel.party} is not one of the compute parties {list(parties)}"
            )
        self._channel = channel
        self._parties = parties
        self.index = parties.index(channel.party)
        self._tag = SETUP_TAG
        self._outside_tags: dict[int, int] = {}
        self.randomness: ReplicatedRandomness = agree_replicated_keys(
            channel, parties, self.index, SETUP_TAG
        )

    # -- identity -------------------------------------------------------------
    @property
    def channel(self) -> Channel:
        return self._channel

    @property
    def party(self) -> int:
        return self._channel.party

    @property
    def compute_parties(self) -> tuple[int, ...]:
        return self._parties

    def peer(self, offset: int) -> int:
        """Network index of compute party ``index + offset`` (mod 3)."""
        return self._parties[(self.index + offset) % 3]

    def next_tag(self) -> int:
        """The next tag of the plan; every compute party calls this in the same order."""
        self._tag += 1
        return self._tag

    def outside_tag(self, party: int) -> int:
        """The next tag for a message exchanged with outside party ``party``."""
        count = self._outside_tags.get(party, 0)
        self._outside_tags[party] = count + 1
        return OUTSIDE_TAG_BASE + count

    def send(self, peer: int, tag: int, array: npt.NDArray[np.generic]) -> None:
        self._channel.send(peer, tag, np.require(array, requirements="C"))

    def receive(self, peer: int, tag: int) -> npt.NDArray[np.generic]:
        return self._channel.receive(peer, tag)

    def receive_ring(self, peer: int, tag: int, shape: tuple[int, ...]) -> RingArray:
        """Receive a ring array and check it has the shape the plan expects."""
        array = self._channel.receive(peer, tag)
        if array.dtype != RING_DTYPE or array.shape != shape:
            raise ProtocolAbort(
                f"party {peer} sent a {array.dtype} array of shape {array.shape} where the "
                f"plan expects uint64 of shape {shape}; the parties disagree on the plan"
            )
        return array

    # -- sharing and opening ------------------------------------------------
    def input(self, owner: int, values: RingArray | None, *, boolean: bool = False) -> Shares:
        if owner in self._parties:
            return self._input_from_compute_party(owner, values, boolean)
        if not 0 <= owner < self._channel.parties:
            raise ConfigurationError(f"there is no party {owner} on this network")
        return self._input_from_outside(owner, boolean)

    def _input_from_compute_party(self, owner: int, values: RingArray | None,
                                  boolean: bool) -> Shares:
        """Owner ``j`` sets ``x_(j+1)`` from ``K_(j+1)``, ``x_(j+2) = 0`` and sends
        ``x_j = v - x_(j+1)`` to party ``j+2``; party ``j+1`` learns only the shape."""
        tag = self.next_tag()
        role = (self.index - self._parties.index(owner)) % 3
        if role == 0:
            if values is None:
                raise ConfigurationError("the owner of an input must pass its values")
            value = np.require(values, dtype=RING_DTYPE, requirements="C")
            mine = self.randomness.next.integers(value.shape)
            own = (value.reshape(-1) ^ mine.reshape(-1)) if boolean else (
                value.reshape(-1) - mine.reshape(-1))
            own = own.reshape(value.shape)
            self.send(self.peer(-1), tag, own)
            self.send(self.peer(1), tag, np.asarray(value.shape, dtype=np.int64))
            return np.stack([own, mine])
        if role == 1:
            shape = check_shape_message(self.receive(owner, tag))
            drawn = self.randomness.previous.integers(shape)
            return np.stack([drawn, np.zeros(shape, dtype=RING_DTYPE)])
        received = self.receive(owner, tag)
        if received.dtype != RING_DTYPE:
            raise ProtocolAbort(f"party {owner} sent input shares of dtype {received.dtype}")
        return np.stack([np.zeros(received.shape, dtype=RING_DTYPE), received])

    def _input_from_outside(self, owner: int, boolean: bool) -> Shares:
        """Outside owner: ``x_0 = PRG(s_0)``, ``x_1 = PRG(s_1)``, ``x_2 = v - x_0 - x_1``;
        party 0 gets both seeds and the shape, parties 1 and 2 get one seed and ``x_2``."""
        seed_tag = self.outside_tag(owner)
        data_tag = self.outside_tag(owner)
        seeds = self.receive(owner, seed_tag)
        if seeds.dtype != np.uint8:
            raise ProtocolAbort(f"outside party {owner} sent a malformed seed message")
        if self.index == 0:
            if seeds.size < 32 or (seeds.size - 32) % 8:
                raise ProtocolAbort(f"outside party {owner} sent a malformed seed message")
            shape = check_shape_message(seeds[32:].copy().view(np.int64))
            first = Prg(seeds[:16].tobytes()).integers(shape)
            second = Prg(seeds[16:32].tobytes()).integers(shape)
            return np.stack([first, second])
        if seeds.size != 16:
            raise ProtocolAbort(f"outside party {owner} sent a malformed seed message")
        last = self.receive(owner, data_tag)
        if last.dtype != RING_DTYPE:
            raise ProtocolAbort(f"outside party {owner} sent shares of dtype {last.dtype}")
        drawn = Prg(seeds.tobytes()).integers(last.shape)
        return np.stack([drawn, last] if self.index == 1 else [last, drawn])

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
                    self.send(target, tag, x[1])
            else:
                self.send(target, self.outside_tag(target), x[0])
        if self.party not in targets:
            return None
        shape = value_shape(x)
        missing = self.receive_ring(self.peer(1), tag, shape).reshape(shape or (1,))
        first, second = x[0].reshape(shape or (1,)), x[1].reshape(shape or (1,))
        value = (first ^ second ^ missing) if boolean else (first + second + missing)
        return value.reshape(shape)

    def share_public(self, values: RingArray, *, boolean: bool = False) -> Shares:
        value = np.asarray(values, dtype=RING_DTYPE)
        zero = np.zeros(value.shape, dtype=RING_DTYPE)
        first = value if self.index == 0 else zero
        second = value if self.index == 2 else zero
        return np.stack([first, second])

    # -- local operations -----------------------------------------------------
    def add_public(self, x: Shares, constant: RingArray) -> Shares:
        return self._public_into_x0(x, constant, np.add)

    def xor_public(self, x: Shares, constant: RingArray) -> Shares:
        return self._public_into_x0(x, constant, np.bitwise_xor)

    def _public_into_x0(self, x: Shares, constant: RingArray,
                        combine: Callable[..., npt.NDArray[np.uint64]]) -> Shares:
        """Fold a public value into share ``x_0`` (held by parties 0 and 2)."""
        constant = np.asarray(constant, dtype=RING_DTYPE)
        shape = broadcast_shape(value_shape(x), constant.shape)
        out = np.array(np.broadcast_to(align(x, len(shape)), (2, *shape)))
        if self.index == 0:
            out[0, ...] = combine(out[0, ...], constant)
        elif self.index == 2:
            out[1, ...] = combine(out[1, ...], constant)
        return out

    def random(self, shape: tuple[int, ...], *, boolean: bool = False) -> Shares:
        """``x_i`` is drawn from ``K_i``, so each share is known to exactly its two holders."""
        out = np.empty((2, *shape), dtype=RING_DTYPE)
        self.randomness.previous.fill(out[0, ...])
        self.randomness.next.fill(out[1, ...])
        return out

    # -- multiplication -------------------------------------------------------
    def _operands(self, x: Shares, y: Shares) -> tuple[Shares, Shares, tuple[int, ...]]:
        """Broadcast both operands to their common value shape, lifting a 0-d value to
        shape (1,) so protocol code only ever handles arrays (numpy scalars would warn
        on the intended wraparound); callers reshape results to the returned shape."""
        shape = broadcast_shape(value_shape(x), value_shape(y))
        full = (2, *(shape or (1,)))
        return (np.broadcast_to(align(x, len(full) - 1), full),
                np.broadcast_to(align(y, len(full) - 1), full), shape)

    def _reshare(self, z: RingArray, tag: int, boolean: bool) -> Shares:
        """Mask the 3-out-of-3 share ``z_i`` with a zero sharing, send it to the previous
        party and receive ``z_(i+1)`` from the next: replicated shares of the sum."""
        out = np.empty((2, *z.shape), dtype=RING_DTYPE)
        mask = out[1, ...]
        self.randomness.previous.fill(mask)
        if boolean:
            z ^= mask
        else:
            z += mask
        self.randomness.next.fill(mask)
        if boolean:
            z ^= mask
        else:
            z -= mask
        out[0, ...] = z
        self.send(self.peer(-1), tag, out[0, ...])
        out[1, ...] = self.receive_ring(self.peer(1), tag, z.shape)
        return out

    def mul(self, x: Shares, y: Shares) -> Shares:
        """Araki et al. Section 2.2: ``z_i = x_i y_i + x_i y_(i+1) + x_(i+1) y_i + a_i``
        with ``a_i = F(K_i) - F(K_(i+1))`` (a zero sharing), then one reshare."""
        tag = self.next_tag()
        a, b, shape = self._operands(x, y)
        z = a[0] * (b[0] + b[1])
        z += a[1] * b[0]
        return self._reshare(z, tag, boolean=False).reshape((2, *shape))

    def and_(self, x: Shares, y: Shares) -> Shares:
        """The same protocol over GF(2)^64: ``z_i = x_i & (y_i ^ y_(i+1)) ^ (x_(i+1) & y_i)``."""
        tag = self.next_tag()
        a, b, shape = self._operands(x, y)
        z = a[0] & (b[0] ^ b[1])
        z ^= a[1] & b[0]
        return self._reshare(z, tag, boolean=True).reshape((2, *shape))

    def matmul(self, x: Shares, y: Shares) -> Shares:
        """``Z_i = X_i (Y_i + Y_(i+1)) + X_(i+1) Y_i`` locally, then one reshare of the
        output: communication is per output element, independent of the inner dimension."""
        xs, ys = value_shape(x), value_shape(y)
        shape = matmul_shape(xs, ys)
        tag = self.next_tag()
        both = share_matmul(x, np.stack([y[0] + y[1], y[0]]), len(xs), len(ys))
        z = (both[0] + both[1]).reshape(shape or (1,))
        return self._reshare(z, tag, boolean=False).reshape((2, *shape))

    # -- fixed point ----------------------------------------------------------
    def trunc(self, x: Shares, bits: int, mode: Truncation = "reliable") -> Shares:
        _check_truncation(bits, mode)
        tag = self.next_tag()
        shape = value_shape(x)
        lifted = x.reshape((2, *(shape or (1,))))
        if mode == "fast":
            out = truncation.fast_truncate(self, lifted, bits, tag)
        else:
            out = truncation.reliable_truncate(self, lifted, bits, tag)
        return out.reshape((2, *shape))

    def mul_trunc(self, x: Shares, y: Shares, bits: int,
                  mode: Truncation = "reliable") -> Shares:
        _check_truncation(bits, mode)
        tag = self.next_tag()
        a, b, shape = self._operands(x, y)
        out = truncation.product_truncate(self, a, b, np.multiply, bits, mode, tag)
        return out.reshape((2, *shape))

    def matmul_trunc(self, x: Shares, y: Shares, bits: int,
                     mode: Truncation = "reliable") -> Shares:
        _check_truncation(bits, mode)
        xs, ys = value_shape(x), value_shape(y)
        shape = matmul_shape(xs, ys)
        tag = self.next_tag()

        def product(left: RingArray, right: RingArray) -> RingArray:
            stacked = share_matmul(left[None], right[None], len(xs), len(ys))
            return np.require(stacked[0], requirements="C").reshape(shape or (1,))

        out = truncation.product_truncate(self, x, y, product, bits, mode, tag)
        return out.reshape((2, *shape))


def _check_truncation(bits: int, mode: str) -> None:
    if mode not in TRUNCATION_MODES:
        raise ConfigurationError(
            f"unknown truncation mode {mode!r}; choose one of {', '.join(TRUNCATION_MODES)}"
        )
    if not 0 < bits < 62:
        raise ConfigurationError(f"can only truncate by 1..61 bits, not {bits}")
