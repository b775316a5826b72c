"""``reference``: a PLAINTEXT backend with NO SECURITY AT ALL, for tests only.

Like SPU's REF2K, it exists to test the layers above the engine quickly and
to prove that the backend interface is a real seam: every operation of
:mod:`concilium.ops`, :class:`~concilium.data.SecretArray`, SQL queries and
governed runs work on it unchanged. Every compute party holds every value
**in the clear** (one "share" component: the value itself); an input is sent
to every compute party as it is; comparisons and sorts run on opened values.
Anyone who sees one party's memory or traffic sees all the data.

It is registered (:mod:`concilium.mpc.protocols`) so that the generic test
suite runs on it, and refused by every consortium manifest and every node
run: it can never protect data.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar, cast

import numpy as np
import numpy.typing as npt

from concilium.errors import ConfigurationError, ProtocolAbort
from concilium.mpc.backend import (
    CAPABILITIES,
    ChannelBackend,
    Shares,
    Truncation,
    align,
    broadcast_shape,
    check_truncation,
    share_matmul,
    value_shape,
)
from concilium.mpc.outside import OutsideClient
from concilium.net.channel import Channel
from concilium.ring.arithmetic import RING_DTYPE, RingArray
from concilium.ring.prg import KEY_BYTES, Prg, new_key, stream_nonce

__all__ = ["Reference", "ReferenceOutsideParty", "ReferencePermutation"]

_SETUP_TAG = 0


@dataclass(frozen=True)
class ReferencePermutation:
    """A permutation every party knows (there is nothing secret here)."""

    order: npt.NDArray[np.intp]


class Reference(ChannelBackend):
    """One compute party of the plaintext ``reference`` backend (no security)."""

    protocol: ClassVar[str] = "reference"
    security: ClassVar[str] = ("NONE: plaintext reference backend for tests; every party "
                               "sees every value")
    components: ClassVar[int] = 1
    capabilities: ClassVar[frozenset[str]] = frozenset(CAPABILITIES)

    def __init__(self, channel: Channel, compute_parties: Sequence[int]) -> None:
        super().__init__(channel, compute_parties, first_tag=_SETUP_TAG)
        parties = self.compute_parties
        # a key for the common random values and permutations, from the first party
        if channel.party == parties[0]:
            key = new_key()
            for other in parties[1:]:
                channel.send(other, _SETUP_TAG, np.frombuffer(key, dtype=np.uint8))
        else:
            received = channel.receive(parties[0], _SETUP_TAG)
            if received.dtype != np.uint8 or received.shape != (KEY_BYTES,):
                raise ProtocolAbort("the reference backend's key message is malformed")
            key = received.tobytes()
        self._key = key


    # -- sharing and opening --------------------------------------------------
    def input(self, owner: int, values: RingArray | None, *, boolean: bool = False) -> Shares:
        """The owner sends its values, in the clear, to every compute party."""
        tag = self.next_tag()
        if owner not in self._parties:
            return self.outside_share(owner)
        if owner == self.party:
            if values is None:
                raise ConfigurationError("the owner of an input must pass its values")
            value = np.require(values, dtype=RING_DTYPE, requirements="C")
            for other in self._parties:
                if other != owner:
                    self._channel.send(other, tag, value)
            return value[None].copy()
        return self.ring_from(owner, tag)[None].copy()

    def reveal(self, x: Shares, to: Sequence[int] | None = None, *,
               boolean: bool = False) -> RingArray | None:
        """Reveals: the value to the parties in ``to`` (the compute parties already
        hold it in the clear: this backend has no secrets)."""
        self.next_tag()
        targets = self._parties if to is None else tuple(dict.fromkeys(int(t) for t in to))
        for target in targets:
            if not 0 <= target < self._channel.parties:
                raise ConfigurationError(f"cannot reveal to party {target}: no such party")
            if target not in self._parties:
                self._channel.send(target, self.outside_tag(target),
                                   np.require(x[0], requirements="C"))
        return x[0].copy() if self.party in targets else None

    def share_public(self, values: RingArray, *, boolean: bool = False) -> Shares:
        return np.asarray(values, dtype=RING_DTYPE)[None].copy()


    # -- local operations -----------------------------------------------------
    def add_public(self, x: Shares, constant: RingArray) -> Shares:
        constant = np.asarray(constant, dtype=RING_DTYPE)
        return align(x, constant.ndim) + constant

    def xor_public(self, x: Shares, constant: RingArray) -> Shares:
        constant = np.asarray(constant, dtype=RING_DTYPE)
        return align(x, constant.ndim) ^ constant

    def random(self, shape: tuple[int, ...], *, boolean: bool = False) -> Shares:
        out = np.empty((1, *shape), dtype=RING_DTYPE)
        Prg(self._key, stream_nonce(self.next_tag(), 1)).fill(out)
        return out

    # -- products -----------------------------------------------------------------
    def mul(self, x: Shares, y: Shares) -> Shares:
        ndim = len(broadcast_shape(value_shape(x), value_shape(y)))
        return align(x, ndim) * align(y, ndim)

    def and_(self, x: Shares, y: Shares) -> Shares:
        ndim = len(broadcast_shape(value_shape(x), value_shape(y)))
        return align(x, ndim) & align(y, ndim)

    def matmul(self, x: Shares, y: Shares) -> Shares:
        return share_matmul(x, y, x.ndim - 1, y.ndim - 1)

    def trunc(self, x: Shares, bits: int, mode: Truncation = "reliable") -> Shares:
        """The exact floor of ``x / 2^bits`` (within every mode's contract)."""
        check_truncation(bits, mode)
        signed = np.require(x, dtype=RING_DTYPE, requirements="C").view(np.int64)
        return np.right_shift(signed, bits).view(RING_DTYPE)



    # -- conversions and permutations -----------------------------------------
    def boolean_pair(self, x: Shares, transform: Callable[[RingArray], RingArray] | None = None,
                     *, difference: bool = False) -> tuple[Shares, Shares]:
        """``U = T(x)`` and ``V = T(0) = 0``: then ``U + V = U - V = x`` before ``T``."""
        shape = value_shape(x)
        flat = np.require(x[0], dtype=RING_DTYPE, requirements="C").reshape(-1)
        words = flat if transform is None else transform(flat)
        first = np.asarray(words, dtype=RING_DTYPE).reshape((1, *shape))
        return first, np.zeros_like(first)

    def bit_inject(self, bits: Shares) -> Shares:
        return bits & np.uint64(1)

    def new_permutation(self, length: int) -> ReferencePermutation:
        words = np.empty(length, dtype=RING_DTYPE)
        Prg(self._key, stream_nonce(self.next_tag(), 2)).fill(words)
        return ReferencePermutation(np.argsort(words, kind="stable"))

    def permute(self, permutation: ReferencePermutation, x: Shares, *,
                inverse: bool = False, boolean: bool = False) -> Shares:
        order = permutation.order
        if x.shape[-1] != order.size:
            raise ConfigurationError(f"a permutation of {order.size} items applied to "
                                     f"{x.shape[-1]}")
        if inverse:
            undo = np.empty_like(order)
            undo[order] = np.arange(order.size)
            order = undo
        return np.take(x, order, axis=-1)




class ReferenceOutsideParty(OutsideClient):
    """An outside owner or recipient of the plaintext ``reference`` backend: it
    sends its values in the clear to every compute party (NO SECURITY)."""

    def send_input(self, values: RingArray, *, boolean: bool = False) -> None:
        value = np.require(values, dtype=RING_DTYPE, requirements="C")
        tag = self.next_tag()
        for party in self._parties:
            self._channel.send(party, tag, value)

    def _agreed(self) -> npt.NDArray[np.generic]:
        tag = self.next_tag()
        messages = [self._channel.receive(party, tag) for party in self._parties]
        if any(m.dtype != messages[0].dtype or not np.array_equal(m, messages[0])
               for m in messages[1:]):
            raise ProtocolAbort("the compute parties sent different values; they disagree "
                                "on the plan")
        return messages[0]

    def receive_output(self, *, boolean: bool = False) -> RingArray:
        """Reveals: the value to this party (and the compute parties hold it anyway)."""
        value = self._agreed()
        if value.dtype != RING_DTYPE:
            raise ProtocolAbort("the compute parties sent an output of the wrong type")
        return cast(RingArray, value.copy())

    def receive_public(self) -> bytes:
        value = self._agreed()
        if value.dtype != np.uint8:
            raise ProtocolAbort("the compute parties sent a malformed public message")
        return value.tobytes()
