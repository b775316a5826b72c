"""Joint message passing for ``rep4``: every message vouched for, checked in its round.

Fantastic Four (Dalskov, Escudero and Nof, USENIX Security 2021) sends every
value *jointly*: two parties that both know it, the *sender* and the
*backup*, send it to a *receiver*: the sender the value, the backup a hash of
it. With at most one corrupted party one of the two is honest, so a wrong
value (or a wrong hash) makes the receiver abort.

**Checks in the same round, never deferred.** Follows the fix of MP-SPDZ's
``Rep4`` (commit 85307a1, March 2026) after the attack of eprint 2026/234
(Eurocrypt 2026) on deferred checks: the backup's hash travels in the same
flight as the sender's value, and :func:`exchange` compares them before it
returns anything. A received value reaches the caller only through
:func:`exchange`, so nothing computed from an unchecked value is ever sent,
opened or branched on.

Steps of one exchange (all transfers of one protocol round, one plan tag):

1. Every party packs, for each receiver, the values it sends as a sender (in
   transfer order), then one SHA-256 digest (32 bytes) over the values it vouches
   for as the backup of that receiver, and sends one frame per receiver.
2. Every party receives one frame from each party that owes it something; a
   wrong dtype or length, or a frame outside the plan's order, is cheating.
3. For each backup, the receiver hashes what it received that this backup
   vouches for and compares it with the backup's digest; a difference raises
   :class:`~concilium.errors.CheatingDetected` naming the sender(s) and the backup.
4. Only then does it return the received values.

The digest binds a domain string, the plan tag and each transfer's (sender,
backup, receiver, length), so a value or digest replayed from another
operation does not match.

**Joint sharings** (``INP`` of the paper, ``prepare_joint_input`` in
MP-SPDZ): a value ``v`` known to a sender and a backup becomes a sharing with
``x_g = r`` and ``x_h = v - r`` (XOR for words), the other shares zero, where
``g`` is the receiver, ``h`` the fourth party (the *outsider*) and ``r`` is drawn
from ``K_g``, the key of everyone but ``g``. The sender and backup send
``v - r`` to ``g``: uniformly random to it. One element from the sender per
element shared, plus the backup's 32-byte digest.

Reveals: nothing; every joint sharing's message is masked by ``r``, which its
receiver does not hold. :func:`exchange` itself moves values as they are (the
backend's ``reveal`` uses it to open).
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from concilium.errors import CheatingDetected
from concilium.mpc.randomness import Purpose, ReplicatedKeys
from concilium.ring.arithmetic import RING_DTYPE, RingArray

__all__ = ["DIGEST_WORDS", "PARTIES", "Joint", "Rep4Party", "Transfer", "exchange",
           "joint_round", "joint_sharings", "others", "slot"]

PARTIES = 4
#: A SHA-256 digest as 64-bit words.
DIGEST_WORDS = 4
_DOMAIN = b"concilium/rep4/joint-message/v1"


def slot(me: int, share: int) -> int:
    """Where party ``me`` keeps share ``x_share`` among its three components
    (component ``i`` is ``x_(me+i+1)``); party ``me`` does not hold ``x_me``."""
    return (share - me - 1) % PARTIES


def others(share: int) -> list[int]:
    """The positions that hold ``x_share`` and its key ``K_share``: all but ``share``."""
    return [p for p in range(PARTIES) if p != share]


class Rep4Party(Protocol):
    """One ``rep4`` party, as its helper modules see it."""

    @property
    def index(self) -> int:
        """This party's position (0 to 3)."""
        ...

    @property
    def keys(self) -> ReplicatedKeys: ...

    def next_tag(self, count: int = 1) -> int: ...

    def mul(self, x: RingArray, y: RingArray) -> RingArray: ...

    def add_public(self, x: RingArray, constant: RingArray) -> RingArray: ...

    def send_words(self, position: int, tag: int, array: npt.NDArray[np.generic]) -> None:
        """Send a ring array to the compute party at ``position``."""
        ...

    def receive_words(self, position: int, tag: int, size: int) -> RingArray:
        """A flat ring array of ``size`` from the party at ``position``; anything else
        is cheating."""
        ...


@dataclass(frozen=True)
class Transfer:
    """One value sent jointly: ``value`` (flat ring array of ``size``, given at the
    sender and the backup, None elsewhere) goes to ``receiver``."""

    sender: int
    backup: int
    receiver: int
    size: int
    value: RingArray | None = None


def _digest(tag: int, items: Sequence[Transfer], values: Sequence[RingArray]) -> RingArray:
    h = hashlib.sha256(_DOMAIN)
    h.update(struct.pack("<Q", tag))
    for item, value in zip(items, values, strict=True):
        h.update(struct.pack("<4Q", item.sender, item.backup, item.receiver, item.size))
        h.update(np.require(value, dtype=RING_DTYPE, requirements="C").data)
    return np.frombuffer(h.digest(), dtype=RING_DTYPE)


def _check(transfers: Sequence[Transfer], me: int) -> None:
    for item in transfers:
        if len({item.sender, item.backup, item.receiver}) != 3:
            raise ValueError(f"a joint message needs three distinct parties: {item}")
        if me in (item.sender, item.backup) and (item.value is None or
                                                 item.value.shape != (item.size,)):
            raise ValueError(f"party {me} must give the flat value of {item}")


def exchange(party: Rep4Party, tag: int, transfers: Sequence[Transfer],
             label: str) -> list[RingArray | None]:
    """Run one round of joint messages; the value of each transfer at its receiver
    (None at the others), every one checked against its backup's digest.

    Raises CheatingDetected when a sender's value and its backup's digest differ,
    or a frame has the wrong type or length."""
    me = party.index
    _check(transfers, me)
    outgoing: dict[int, list[RingArray]] = {}
    for item in transfers:
        if item.sender == me:
            assert item.value is not None
            outgoing.setdefault(item.receiver, []).append(item.value)
    vouched: dict[tuple[int, int], list[Transfer]] = {}
    for item in transfers:
        vouched.setdefault((item.backup, item.receiver), []).append(item)
    for (backup, receiver), items in vouched.items():
        if backup == me:
            values = [item.value for item in items]
            outgoing.setdefault(receiver, []).append(_digest(tag, items, values))  # type: ignore[arg-type]
    for receiver in sorted(outgoing):
        parts = outgoing[receiver]
        party.send_words(receiver, tag, parts[0] if len(parts) == 1 else np.concatenate(parts))
    return _receive_and_check(party, tag, transfers, vouched, label)


def _receive_and_check(party: Rep4Party, tag: int, transfers: Sequence[Transfer],
                       vouched: dict[tuple[int, int], list[Transfer]],
                       label: str) -> list[RingArray | None]:
    me = party.index
    expected: dict[int, int] = {}
    for item in transfers:
        if item.receiver == me:
            expected[item.sender] = expected.get(item.sender, 0) + item.size
    for backup, receiver in vouched:
        if receiver == me:
            expected[backup] = expected.get(backup, 0) + DIGEST_WORDS
    frames = {peer: party.receive_words(peer, tag, size) for peer, size in sorted(expected.items())}
    offsets = dict.fromkeys(frames, 0)
    results: list[RingArray | None] = []
    for item in transfers:
        if item.receiver != me:
            results.append(None)
            continue
        start = offsets[item.sender]
        results.append(frames[item.sender][start:start + item.size])
        offsets[item.sender] = start + item.size
    by_transfer = {id(item): value for item, value in zip(transfers, results, strict=True)}
    for (backup, receiver), items in vouched.items():
        if receiver != me:
            continue
        start = offsets[backup]
        digest = frames[backup][start:start + DIGEST_WORDS]
        offsets[backup] = start + DIGEST_WORDS
        values = [by_transfer[id(item)] for item in items]
        if not np.array_equal(digest, _digest(tag, items, values)):  # type: ignore[arg-type]
            senders = sorted({item.sender for item in items})
            raise CheatingDetected(
                f"parties {', '.join(map(str, senders))} and {backup} disagree on {label} "
                f"(plan tag {tag}): what party {me} received from "
                f"{'party' if len(senders) == 1 else 'parties'} "
                f"{', '.join(map(str, senders))} does not match party {backup}'s digest",
                parties=(*senders, backup), step=f"{label}, tag {tag}")
    return results


@dataclass(frozen=True)
class Joint:
    """A value known to ``sender`` and ``backup`` (given there as a flat array of
    ``size``) to become a sharing; ``receiver`` gets it masked, ``outsider`` only
    draws the mask."""

    sender: int
    backup: int
    receiver: int
    size: int
    value: RingArray | None = None

    @property
    def outsider(self) -> int:
        return ({0, 1, 2, 3} - {self.sender, self.backup, self.receiver}).pop()


def joint_sharings(party: Rep4Party, tag: int, joints: Sequence[Joint], label: str, *,
                   boolean: bool = False) -> list[RingArray]:
    """Each joint value as a sharing (flat, three components: this party's
    ``(x_(i+1), x_(i+2), x_(i+3))``), in one checked round (see the module docstring)."""
    sharings, _ = joint_round(party, tag, joints, (), label, boolean=boolean)
    return sharings


def joint_round(party: Rep4Party, tag: int, joints: Sequence[Joint],
                transfers: Sequence[Transfer], label: str, *,
                boolean: bool = False) -> tuple[list[RingArray], list[RingArray | None]]:
    """Joint sharings and plain transfers in the same checked round: the sharings, and
    each transfer's value at its receiver (None elsewhere)."""
    me = party.index
    masks: list[RingArray | None] = []
    streams = {}
    for item in joints:  # r from K_receiver, drawn in joint order by its three holders
        if item.receiver == me:
            masks.append(None)
            continue
        if item.receiver not in streams:
            streams[item.receiver] = party.keys.stream(others(item.receiver), tag,
                                                       Purpose.JOINT_MASK)
        drawn = np.empty(item.size, dtype=RING_DTYPE)
        streams[item.receiver].fill(drawn)
        masks.append(drawn)
    messages: list[Transfer] = []
    for item, mask in zip(joints, masks, strict=True):
        masked: RingArray | None = None
        if me in (item.sender, item.backup):
            assert item.value is not None and mask is not None
            value = np.require(item.value, dtype=RING_DTYPE).reshape(-1)
            masked = (value ^ mask) if boolean else (value - mask)
        messages.append(Transfer(item.sender, item.backup, item.receiver, item.size, masked))
    received = exchange(party, tag, [*messages, *transfers], label)
    out = []
    for item, mask, sent, arrived in zip(joints, masks, messages, received, strict=False):
        shares = np.zeros((3, item.size), dtype=RING_DTYPE)
        if mask is not None:
            shares[slot(me, item.receiver)] = mask
        if me != item.outsider:
            part = arrived if item.receiver == me else sent.value
            assert part is not None
            shares[slot(me, item.outsider)] = part
        out.append(shares)
    return out, received[len(joints):]
