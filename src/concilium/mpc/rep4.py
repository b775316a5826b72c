"""``rep4``: four-party replicated secret sharing, secure with abort against one
actively cheating party.

Follows Fantastic Four (Dalskov, Escudero and Nof, "Fantastic Four:
Honest-Majority Four-Party Secure Computation With Malicious Security",
USENIX Security 2021), with every check made in the round of the message it
checks, as MP-SPDZ's ``Rep4`` does since commit 85307a1 (March 2026), after
the attack on deferred checks of eprint 2026/234 (see
:mod:`concilium.mpc.rep4_exchange`).

A secret ``x = x_0 + x_1 + x_2 + x_3`` (mod 2^64; XOR for words); party ``i``
holds every share but ``x_i``, as components ``(x_(i+1), x_(i+2), x_(i+3))``.
Each share has three holders, so any value a party receives is known to at
least two others: one sends it, another vouches for it with a hash (joint
message passing), and with one corrupted party one of them is honest. A
cheater can make the run abort (and learn that it did); it cannot change a
result or learn anything else.

PRG keys: ``K_j``, held by everyone but party ``j``, draws share ``x_j``; keys are
agreed from every holder's contribution and confirmed
(:func:`concilium.mpc.confirmed_keys.agree_keys_confirmed`).

Costs per element (payload bytes; ``rep3``'s in brackets):

| operation | rounds | bytes, all parties together | checks (same round) |
|---|---|---|---|
| input from a compute party | 2 | 16 + digests [8] | the two receivers compare hashes |
| input from an outside owner | 2 | 24 + seeds + digests [16] | every pair compares hashes |
| reveal to all | 1 | 32 (8 each) + digests [24] | value against a second holder's hash |
| reveal to an outside party | 1 | 96 (24 each) [24] | the recipient compares all three copies |
| mul, and_ (per word), matmul (per output) | 1 | 48 (12 each) [24] | joint messages |
| trunc ``"fast"`` / ``"reliable"`` | 1 / 3 | 16 / 96 [24 / 48] | joint messages |
| boolean_pair | 1 | 16 | joint messages |
| bit_inject | 2 | 64 | joint messages |
| permute (shuffle) | 4 | 96 (24 each) [48] | joint messages |
| random, add, public constants | 0 | 0 | none needed |

Digests are 32 bytes per (backup, receiver) link per round, whatever the length.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Sequence
from typing import ClassVar

import numpy as np
import numpy.typing as npt

from concilium.errors import BadFrame, CheatingDetected, ConfigurationError, ProtocolAbort
from concilium.mpc import rep4_conversion as conversion
from concilium.mpc import rep4_products as products
from concilium.mpc import rep4_shuffle as shuffle
from concilium.mpc import rep4_truncation as truncation
from concilium.mpc.backend import (
    CAPABILITIES,
    ChannelBackend,
    Shares,
    Truncation,
    check_truncation,
    matmul_shape,
    share_matmul,
    value_shape,
)
from concilium.mpc.confirmed_keys import agree_keys_confirmed
from concilium.mpc.randomness import Purpose, ReplicatedKeys
from concilium.mpc.rep4_exchange import (
    PARTIES,
    Transfer,
    exchange,
    others,
    slot,
)
from concilium.mpc.shares import check_shape_message, flat_operands, fold_public
from concilium.net.channel import Channel
from concilium.ring.arithmetic import RING_DTYPE, RingArray
from concilium.ring.prg import Prg

__all__ = ["Rep4"]

SETUP_TAG = 0
_INPUT_DOMAIN = b"concilium/rep4/input/v1"


def _input_digest(tag: int, owner: int, shape: tuple[int, ...],
                  shares: Sequence[RingArray]) -> bytes:
    h = hashlib.sha256(_INPUT_DOMAIN)
    h.update(struct.pack(f"<QQQ{len(shape)}Q", tag, owner, len(shape), *shape))
    for share in shares:
        h.update(np.require(share, dtype=RING_DTYPE, requirements="C").data)
    return h.digest()


def _announced_shape(array: npt.NDArray[np.generic], owner: int) -> tuple[int, ...]:
    """A shape an input's owner announced; a malformed one is cheating."""
    try:
        return check_shape_message(array)
    except ProtocolAbort as error:
        raise CheatingDetected(f"party {owner} announced an input shape that cannot be: "
                               f"{error}", parties=(owner,), step="input") from None


class Rep4(ChannelBackend):
    """One compute party of the ``rep4`` protocol (positions 0 to 3 in
    ``compute_parties`` order). Construction runs the two-round key agreement."""

    protocol: ClassVar[str] = "rep4"
    security: ClassVar[str] = "malicious with abort, honest majority (tolerates 1 of 4)"
    components: ClassVar[int] = 3
    capabilities: ClassVar[frozenset[str]] = frozenset(CAPABILITIES)

    def __init__(self, channel: Channel, compute_parties: Sequence[int] = (0, 1, 2, 3)) -> None:
        parties = tuple(int(p) for p in compute_parties)
        if len(parties) != PARTIES or len(set(parties)) != PARTIES:
            raise ConfigurationError(
                f"rep4 needs exactly 4 distinct compute parties, got {list(parties)}")
        super().__init__(channel, parties, first_tag=SETUP_TAG + 1)
        self.index = parties.index(channel.party)
        self.keys: ReplicatedKeys = agree_keys_confirmed(
            channel, parties, self.index, SETUP_TAG, threshold=1)

    # -- messaging (every receive checked: a deviation is cheating) ------------
    def send_words(self, position: int, tag: int, array: npt.NDArray[np.generic]) -> None:
        self._channel.send(self._parties[position], tag, np.require(array, requirements="C"))

    def receive_raw(self, peer: int, tag: int) -> npt.NDArray[np.generic]:
        """A frame from network party ``peer``; one outside the plan's order is cheating."""
        try:
            return self._channel.receive(peer, tag)
        except BadFrame as error:
            raise CheatingDetected(f"party {peer} deviated from the plan: {error}",
                                   parties=(peer,), step=f"tag {tag}") from None

    def receive_words(self, position: int, tag: int, size: int) -> RingArray:
        array = self.receive_raw(self._parties[position], tag)
        if array.dtype != RING_DTYPE or array.shape != (size,):
            raise CheatingDetected(
                f"party {position} sent a {array.dtype} array of shape {array.shape} where "
                f"the plan expects {size} ring elements", parties=(position,),
                step=f"tag {tag}")
        return array  # type: ignore[return-value]

    def stream(self, share: int, tag: int, purpose: Purpose) -> Prg:
        """The stream of ``K_share`` (this party must hold it: ``share != index``)."""
        return self.keys.stream(others(share), tag, purpose)

    # -- sharing and opening ------------------------------------------------
    def input(self, owner: int, values: RingArray | None, *, boolean: bool = False) -> Shares:
        if owner in self._parties:
            position = self._parties.index(owner)
            [shares] = self._inputs([(position, values)], boolean)
            return shares
        if not 0 <= owner < self._channel.parties:
            raise ConfigurationError(f"there is no party {owner} on this network")
        return self._input_from_outside(owner, boolean)

    def _inputs(self, batch: Sequence[tuple[int, RingArray | None]],
                boolean: bool) -> list[Shares]:
        """Inputs from compute parties (positions), all in the same two rounds.

        Round 1: owner ``o`` draws ``x_(o+1)`` (key ``K_(o+1)``) and ``x_(o+3)`` (``K_(o+3)``),
        sends ``x_(o+2) = v - x_(o+1) - x_(o+3)`` to parties ``o+1`` and ``o+3`` and the shape to
        ``o+2``; ``x_o = 0``. Round 2: every two parties other than the owner exchange
        a hash of (tag, owner, shape, the share they were both sent) and abort on a
        difference, so an owner that equivocates is caught before anyone uses its input.
        That hash is the check itself, sent only to a party that was sent the same
        share (or, for the shape, told the same shape): nothing computed from the
        unchecked share is sent anywhere else, and nothing is returned before the check.
        """
        me = self.index
        tag = self.next_tag(2)
        combine = np.bitwise_xor if boolean else np.subtract
        outputs: list[Shares] = []
        sent: dict[int, RingArray] = {}
        for owner, values in batch:
            if owner != me:
                continue
            if values is None:
                raise ConfigurationError("the owner of an input must pass its values")
            value = np.require(values, dtype=RING_DTYPE, requirements="C")
            first, last = np.empty(value.shape, RING_DTYPE), np.empty(value.shape, RING_DTYPE)
            self.stream((me + 1) % 4, tag, Purpose.INPUT).fill(first)
            self.stream((me + 3) % 4, tag, Purpose.INPUT).fill(last)
            middle = combine(combine(value, first), last)
            sent[owner] = middle
            self.send_words((me + 1) % 4, tag, middle)
            self.send_words((me + 3) % 4, tag, middle)
            self.send_words((me + 2) % 4, tag, np.asarray(value.shape, dtype=np.int64))
        received: dict[int, tuple[tuple[int, ...], RingArray | None]] = {}
        for owner, _ in batch:
            role = (me - owner) % 4
            if role == 0:
                received[owner] = (sent[owner].shape, sent[owner])
            elif role == 2:
                shape = _announced_shape(self.receive_raw(self._parties[owner], tag), owner)
                received[owner] = (shape, None)
            else:
                array = self.receive_raw(self._parties[owner], tag)
                if array.dtype != RING_DTYPE:
                    raise CheatingDetected(f"party {owner} sent input shares of dtype "
                                           f"{array.dtype}", parties=(owner,), step="input")
                _announced_shape(np.asarray(array.shape, dtype=np.int64), owner)
                received[owner] = (tuple(array.shape), array)  # type: ignore[assignment]
        self._confirm_inputs(tag + 1, received)
        for owner, _ in batch:
            shape, middle = received[owner]
            out = np.zeros((3, *shape), dtype=RING_DTYPE)
            for share in ((owner + 1) % 4, (owner + 3) % 4):
                if share != me:
                    self.stream(share, tag, Purpose.INPUT).fill(out[slot(me, share), ...])
            if middle is not None and me != (owner + 2) % 4:
                out[slot(me, (owner + 2) % 4)] = middle
            outputs.append(out)
        return outputs

    def _confirm_inputs(self, tag: int,
                        received: dict[int, tuple[tuple[int, ...], RingArray | None]]) -> None:
        me = self.index
        digests: dict[int, bytes] = {}
        for peer in range(4):
            if peer == me:
                continue
            parts = []
            for owner, (shape, middle) in received.items():
                if owner in (me, peer):
                    continue
                both = {me, peer} == {(owner + 1) % 4, (owner + 3) % 4}
                common = [middle] if both and middle is not None else []
                parts.append(_input_digest(tag, owner, shape, common))
            if parts:
                digests[peer] = b"".join(parts)
                self.send_words(peer, tag, np.frombuffer(digests[peer], dtype=RING_DTYPE))
        for peer, mine in digests.items():
            theirs = self.receive_words(peer, tag, len(mine) // 8)
            if theirs.tobytes() != mine:
                owners = [o for o in received if o not in (me, peer)]
                raise CheatingDetected(
                    f"parties {me} and {peer} were sent different shares or shapes of the "
                    f"input of party {' or '.join(map(str, owners))} (or one of them lies)",
                    parties=(me, peer), step="input")

    def _input_from_outside(self, owner: int, boolean: bool) -> Shares:
        """Outside owner: ``x_j = PRG(s_j)`` for j = 0, 1, 2 and ``x_3 = v - x_0 - x_1 - x_2``;
        party 3 gets the three seeds and the shape, parties 0 to 2 the two seeds of the
        shares they hold and ``x_3``. Round 2: every pair of compute parties compares a
        hash of the shape and the two shares they both hold."""
        me = self.index
        seed_tag, data_tag = self.outside_tag(owner), self.outside_tag(owner)
        seeds = self.receive_raw(owner, seed_tag)
        expected = 48 if me == 3 else 32
        if seeds.dtype != np.uint8 or seeds.size < expected or (
                me != 3 and seeds.size != expected) or (seeds.size - expected) % 8:
            raise CheatingDetected(f"outside party {owner} sent a malformed seed message",
                                   parties=(owner,), step="outside input")
        held = [s for s in range(3) if s != me]
        if me == 3:
            shape = _announced_shape(seeds[48:].copy().view(np.int64), owner)
            out = np.empty((3, *shape), dtype=RING_DTYPE)
        else:
            last = self.receive_raw(owner, data_tag)
            if last.dtype != RING_DTYPE:
                raise CheatingDetected(f"outside party {owner} sent shares of dtype "
                                       f"{last.dtype}", parties=(owner,), step="outside input")
            shape = _announced_shape(np.asarray(last.shape, dtype=np.int64), owner)
            out = np.empty((3, *shape), dtype=RING_DTYPE)
            out[slot(me, 3)] = last
        for k, share in enumerate(held):
            Prg(seeds[16 * k:16 * (k + 1)].tobytes()).fill(out[slot(me, share), ...])
        self._confirm_outside(owner, self.next_tag(), shape, out)
        return out

    def _confirm_outside(self, owner: int, tag: int, shape: tuple[int, ...],
                         out: Shares) -> None:
        me = self.index
        mine = {}
        for peer in range(4):
            if peer != me:
                common = [out[slot(me, s)] for s in range(4) if s not in (me, peer)]
                mine[peer] = _input_digest(tag, owner, shape, common)
                self.send_words(peer, tag, np.frombuffer(mine[peer], dtype=RING_DTYPE))
        for peer, digest in mine.items():
            if self.receive_words(peer, tag, 4).tobytes() != digest:
                raise CheatingDetected(
                    f"parties {me} and {peer} were sent different shares of an input of "
                    f"outside party {owner} (or one of them lies)", parties=(me, peer),
                    step="outside input")

    def reveal(self, x: Shares, to: Sequence[int] | None = None, *,
               boolean: bool = False) -> RingArray | None:
        """Reveals: the value of ``x`` to the parties in ``to`` (all compute parties by
        default). Compute party ``t`` gets ``x_t`` from party ``t-1`` and a hash of it from
        ``t+1``, checked before it opens; an outside recipient gets all three components
        from every compute party and checks the three copies of each share agree."""
        targets = self._parties if to is None else tuple(dict.fromkeys(int(t) for t in to))
        for target in targets:
            if not 0 <= target < self._channel.parties:
                raise ConfigurationError(f"cannot reveal to party {target}: no such party")
        shape = value_shape(x)
        flat = np.require(x, dtype=RING_DTYPE, requirements="C").reshape(3, -1)
        size = flat.shape[1]
        tag = self.next_tag()
        me = self.index
        transfers = []
        for target in targets:
            if target in self._parties:
                t = self._parties.index(target)
                sender, backup = (t - 1) % 4, (t + 1) % 4
                value = flat[slot(me, t)] if me in (sender, backup) else None
                transfers.append(Transfer(sender, backup, t, size, value))
        for target in targets:
            if target not in self._parties:
                self._channel.send(target, self.outside_tag(target),
                                   np.require(x, dtype=RING_DTYPE, requirements="C"))
        received = exchange(self, tag, transfers, "reveal")
        if self.party not in targets:
            return None
        missing = next(r for r in received if r is not None)
        if boolean:
            value = flat[0] ^ flat[1] ^ flat[2] ^ missing
        else:
            value = flat[0] + flat[1] + flat[2] + missing
        return value.reshape(shape)

    def share_public(self, values: RingArray, *, boolean: bool = False) -> Shares:
        """The value in ``x_0`` (held by parties 1 to 3), the other shares zero."""
        value = np.asarray(values, dtype=RING_DTYPE)
        out = np.zeros((3, *value.shape), dtype=RING_DTYPE)
        if self.index != 0:
            out[slot(self.index, 0)] = value
        return out

    def add_public(self, x: Shares, constant: RingArray) -> Shares:
        return self._public_into_x0(x, constant, np.add)

    def xor_public(self, x: Shares, constant: RingArray) -> Shares:
        return self._public_into_x0(x, constant, np.bitwise_xor)

    def _public_into_x0(self, x: Shares, constant: RingArray,
                        combine: Callable[..., npt.NDArray[np.uint64]]) -> Shares:
        """Fold a public value into share ``x_0`` (held by parties 1 to 3)."""
        return fold_public(x, constant, combine,
                           None if self.index == 0 else slot(self.index, 0))

    def random(self, shape: tuple[int, ...], *, boolean: bool = False) -> Shares:
        """``x_j`` from ``K_j``: each share known to exactly its three holders."""
        tag = self.next_tag()
        out = np.empty((3, *shape), dtype=RING_DTYPE)
        for share in others(self.index):
            self.stream(share, tag, Purpose.RANDOM).fill(out[slot(self.index, share), ...])
        return out

    def sum_of_private(self, values: RingArray) -> Shares:
        """The four parties' arrays input at once (two rounds, see :meth:`_inputs`)."""
        value = np.require(values, dtype=RING_DTYPE, requirements="C")
        batch = [(p, value if p == self.index else None) for p in range(4)]
        parts = self._inputs(batch, boolean=False)
        total = parts[0]
        for part in parts[1:]:
            if part.shape != total.shape:
                raise CheatingDetected("the parties' private arrays have different shapes",
                                       parties=(), step="sum of private arrays")
            total = total + part
        return total

    # -- multiplication -------------------------------------------------------
    #: False: products by the numpy implementation of the same protocol (tests
    #: run parties on both to show the two interoperate message for message).
    compiled_products: bool = True

    def mul(self, x: Shares, y: Shares) -> Shares:
        """Six joint sharings of the 16 cross terms (Fantastic Four, Section 4, see
        :mod:`concilium.mpc.rep4_products`): one round, 12 bytes per party per element
        with the roles rotated."""
        return self._elementwise(x, y, boolean=False)

    def and_(self, x: Shares, y: Shares) -> Shares:
        """The same protocol over GF(2)^64."""
        return self._elementwise(x, y, boolean=True)

    def _elementwise(self, x: Shares, y: Shares, *, boolean: bool) -> Shares:
        a, b, shape = flat_operands(x, y)
        label = "and" if boolean else "mul"
        if self.compiled_products:
            out = products.elementwise_products(self, a, b, label, boolean=boolean)
        else:
            out = products.products(self, products.blockwise_terms(a, b, self.index, boolean),
                                    a.shape[1], label, boolean=boolean)
        return out.reshape((3, *shape))

    def matmul(self, x: Shares, y: Shares) -> Shares:
        """The cross terms as local matrix products, then one round of joint sharings of
        the output: communication per output element, whatever the inner dimension."""
        xs, ys = value_shape(x), value_shape(y)
        shape = matmul_shape(xs, ys)
        me = self.index

        def product(left: RingArray, right: RingArray) -> RingArray:
            return share_matmul(left[None], right[None], len(xs), len(ys))[0].reshape(-1)

        full = {key: products.term(x, y, me, pair, square, product, np.add)
                for key, (pair, square) in products.own_terms(me).items()}
        size = int(np.prod(shape, dtype=np.int64))
        return products.products(self, lambda key, lo, hi: full[key][lo:hi], size, "mul",
                                 boolean=False).reshape((3, *shape))

    # -- fixed point ----------------------------------------------------------
    def trunc(self, x: Shares, bits: int, mode: Truncation = "reliable") -> Shares:
        """See :mod:`concilium.mpc.rep4_truncation`: ``"fast"`` in one round,
        ``"reliable"`` in three."""
        check_truncation(bits, mode)
        shape = value_shape(x)
        flat = np.require(x, dtype=RING_DTYPE, requirements="C").reshape(3, -1)
        if mode == "fast":
            out = truncation.fast_truncate(self, flat, bits)
        else:
            out = truncation.reliable_truncate(self, flat, bits)
        return out.reshape((3, *shape))

    # -- conversions and permutations ----------------------------------------
    def boolean_pair(self, x: Shares, transform: Callable[[RingArray], RingArray] | None = None,
                     *, difference: bool = False) -> tuple[Shares, Shares]:
        """See :mod:`concilium.mpc.rep4_conversion`: one round, two joint sharings."""
        return conversion.boolean_pair(self, x, transform, difference)

    def bit_inject(self, bits: Shares) -> Shares:
        """See :mod:`concilium.mpc.rep4_conversion`: two rounds."""
        return conversion.bit_inject(self, bits)

    def new_permutation(self, length: int) -> shuffle.SecretPermutation:
        return shuffle.new_permutation(self, length)

    def permute(self, permutation: shuffle.SecretPermutation, x: Shares, *,
                inverse: bool = False, boolean: bool = False) -> Shares:
        """See :mod:`concilium.mpc.rep4_shuffle`: four rounds, 24 bytes per element."""
        return shuffle.apply_permutation(self, permutation, x, inverse=inverse,
                                         boolean=boolean)
