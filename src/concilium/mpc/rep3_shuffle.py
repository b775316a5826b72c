"""Secret shuffle for ``rep3``: resharing with pairwise-known permutations.

Follows the resharing shuffle of Laur, Willemson and Zhang, "Round-Efficient
Oblivious Database Manipulation" (ISC 2011), in the replicated-sharing form of
Asharov, Hamada, Ikarashi, Kikuchi, Nof, Pinkas and Tsuchida, "Efficient
Secure Three-Party Sorting with Applications to Data Analysis and Heavy
Hitters" (CCS 2022): the secret permutation is ``pi = pi_2 o pi_1 o pi_0``, where
``pi_j`` is drawn from the key shared by parties ``j`` and ``j + 1`` and is
unknown to party ``j + 2``. Every party misses one of the three, so to any
single party ``pi`` is a uniformly random permutation.

Step ``j`` (parties A = j, B = j + 1, C = j + 2, indices mod 3; A holds share
components ``(c_j, c_(j+1))``, B ``(c_(j+1), c_(j+2))``, C ``(c_(j+2), c_j)``):

1. A sets ``a = c_j + c_(j+1)``, B sets ``b = c_(j+2)``: a two-party sharing of
   the value, made without talking.
2. Both permute their part with ``pi_j`` along the last axis.
3. Fresh components ``c_j'`` (from the key of C and A) and ``c_(j+2)'`` (from
   the key of B and C) are drawn by their two holders each.
4. A sends ``pi_j(a) - c_j'`` to B and B sends ``pi_j(b) - c_(j+2)'`` to A; both
   set ``c_(j+1)' = `` the sum of the two messages.

Cost: three rounds; each party sends in two of them, 16 bytes per element
(per 64-bit word of every column) in total. The inverse permutation runs the
steps backwards with ``pi_j^-1``.

Reveals: nothing. Every message is masked by a fresh component drawn from a
key the receiver does not hold, so it is uniformly random to its receiver.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from concilium.errors import ShapeMismatch
from concilium.mpc.backend import Shares, value_shape
from concilium.mpc.randomness import Purpose
from concilium.mpc.replicated import ReplicatedParty
from concilium.ring.arithmetic import RING_DTYPE

__all__ = ["SecretPermutation", "apply_permutation", "new_permutation"]

Indices = npt.NDArray[np.intp]


@dataclass
class SecretPermutation:
    """One party's view of a secret permutation of ``length`` items: the two of
    the three component permutations it knows (by step), drawn lazily."""

    length: int
    tag: int
    known: dict[int, Indices] = field(default_factory=dict)


def new_permutation(backend: ReplicatedParty, length: int) -> SecretPermutation:
    """A fresh secret permutation (no communication): reserve its streams."""
    if length < 0:
        raise ShapeMismatch(f"cannot permute {length} items")
    return SecretPermutation(int(length), backend.next_tag())


def _component(backend: ReplicatedParty, permutation: SecretPermutation, step: int) -> Indices:
    """``pi_step``, drawn from the key of parties ``step`` and ``step + 1``."""
    if step not in permutation.known:
        role = (backend.index - step) % 3
        streams = backend.randomness
        prg = (streams.next if role == 0 else streams.previous)(permutation.tag,
                                                                Purpose.PERMUTATION)
        keys = prg.integers(permutation.length)
        # distinct 64-bit keys: argsort is a uniform permutation unless two keys
        # collide (probability below n^2 / 2^65)
        permutation.known[step] = np.argsort(keys, kind="stable")
    return permutation.known[step]


def apply_permutation(backend: ReplicatedParty, permutation: SecretPermutation, x: Shares, *,
                      inverse: bool = False, boolean: bool = False) -> Shares:
    """Reshare ``x`` permuted along its last value axis by ``permutation``
    (or its inverse)."""
    shape = value_shape(x)
    if not shape or shape[-1] != permutation.length:
        raise ShapeMismatch(
            f"a permutation of {permutation.length} items cannot permute the last axis of "
            f"shape {shape}"
        )
    first = backend.next_tag(3)
    out = np.require(x, dtype=RING_DTYPE, requirements="C")
    for step in (2, 1, 0) if inverse else (0, 1, 2):
        out = _step(backend, permutation, out, step, first + step, inverse, boolean)
    return out


def _step(backend: ReplicatedParty, permutation: SecretPermutation, x: Shares, step: int, tag: int,
          inverse: bool, boolean: bool) -> Shares:
    role = (backend.index - step) % 3
    streams = backend.randomness
    out = np.empty_like(x)
    if role == 2:  # C: only draws its two fresh components
        streams.previous(tag, Purpose.SHUFFLE_MASK).fill(out[0])
        streams.next(tag, Purpose.SHUFFLE_MASK).fill(out[1])
        return out
    order = _component(backend, permutation, step)
    if inverse:
        order = np.argsort(order)
    combine = np.bitwise_xor if boolean else np.add
    cancel = np.bitwise_xor if boolean else np.subtract
    if role == 0:  # A: part c_j + c_(j+1), fresh c_j' in slot 0
        part = combine(x[0], x[1])[..., order]
        streams.previous(tag, Purpose.SHUFFLE_MASK).fill(out[0])
        message, peer = cancel(part, out[0]), backend.peer(1)
    else:  # B: part c_(j+2), fresh c_(j+2)' in slot 1
        part = x[1][..., order]
        streams.next(tag, Purpose.SHUFFLE_MASK).fill(out[1])
        message, peer = cancel(part, out[1]), backend.peer(-1)
    backend.send(peer, tag, message)
    received = backend.receive_ring(peer, tag, message.shape)
    slot = 1 if role == 0 else 0
    combine(message, received, out=out[slot])
    return out
