"""Secret shuffle for ``rep4``: four resharing steps, one per key.

The replicated-sharing shuffle of Laur, Willemson and Zhang (ISC 2011) and
Asharov et al. (CCS 2022, as ``rep3_shuffle`` runs it), with the four-party
groups of ORQ's sharded permutations (``hm_oblivious_apply_sharded_perm``):
the secret permutation is ``pi = pi_3 o pi_2 o pi_1 o pi_0``, where ``pi_j`` is
drawn from ``K_j``, the key of every party but ``j``. Each party misses one of
the four, so to any single party ``pi`` is uniformly random.

Step ``j`` (the group G = every party but ``j``):

1. Every member of G draws ``rho_k`` for each ``k != j`` from ``K_j`` (unknown to ``j``).
2. The new shares are ``y_k = pi_j(x_k) + rho_k`` for ``k != j`` and
   ``y_j = pi_j(x_j) - sum rho_k``; they sum to ``pi_j(x)``. Each member computes the
   ones it holds: it holds ``x_k`` and ``y_k`` for the same ``k``.
3. Party ``j`` holds ``y_k`` for every ``k != j`` but cannot compute them: the two
   members of G other than ``k`` both can, and send it jointly (sender and backup,
   checked in the same round; :mod:`concilium.mpc.rep4_exchange`). A member that
   applies another permutation or mask is caught by the other's hash.

Cost: four rounds, three elements to the step's party: 96 bytes per element in
all, 24 per party. The inverse runs the steps backwards with ``pi_j^-1``.

Reveals: nothing; what party ``j`` receives is masked by the ``rho_k``, which it
does not hold.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from concilium.errors import ShapeMismatch
from concilium.mpc.backend import Shares, value_shape
from concilium.mpc.randomness import Purpose
from concilium.mpc.rep4_exchange import Rep4Party, Transfer, exchange, others, slot
from concilium.ring.arithmetic import RING_DTYPE

__all__ = ["SecretPermutation", "apply_permutation", "new_permutation"]

Indices = npt.NDArray[np.intp]


@dataclass
class SecretPermutation:
    """One party's view of a secret permutation of ``length`` items: the three of
    the four component permutations it knows (by step), drawn lazily."""

    length: int
    tag: int
    known: dict[int, Indices] = field(default_factory=dict)


def new_permutation(party: Rep4Party, length: int) -> SecretPermutation:
    """A fresh secret permutation (no communication): reserve its streams."""
    if length < 0:
        raise ShapeMismatch(f"cannot permute {length} items")
    return SecretPermutation(int(length), party.next_tag())


def _component(party: Rep4Party, permutation: SecretPermutation, step: int) -> Indices:
    """``pi_step`` from ``K_step`` (this party must not be ``step``)."""
    if step not in permutation.known:
        keys = party.keys.stream(others(step), permutation.tag,
                                 Purpose.PERMUTATION).integers(permutation.length)
        # distinct 64-bit keys: a uniform permutation unless two collide (< n^2 / 2^65)
        permutation.known[step] = np.argsort(keys, kind="stable")
    return permutation.known[step]


def apply_permutation(party: Rep4Party, permutation: SecretPermutation, x: Shares, *,
                      inverse: bool = False, boolean: bool = False) -> Shares:
    """Reshare ``x`` permuted along its last value axis by ``permutation`` (or its
    inverse)."""
    shape = value_shape(x)
    if not shape or shape[-1] != permutation.length:
        raise ShapeMismatch(
            f"a permutation of {permutation.length} items cannot permute the last axis of "
            f"shape {shape}")
    first = party.next_tag(4)
    out = np.require(x, dtype=RING_DTYPE, requirements="C")
    for step in (3, 2, 1, 0) if inverse else (0, 1, 2, 3):
        out = _step(party, permutation, out, step, first + step, inverse, boolean)
    return out


def _senders(step: int, share: int) -> tuple[int, int]:
    """The two members of the group other than ``share``: (sender, backup)."""
    rest = [p for p in range(4) if p not in (step, share)]
    return (rest[0], rest[1]) if share % 2 == 0 else (rest[1], rest[0])


def _step(party: Rep4Party, permutation: SecretPermutation, x: Shares, step: int, tag: int,
          inverse: bool, boolean: bool) -> Shares:
    me = party.index
    targets = [k for k in range(4) if k != step]
    size = int(np.prod(x.shape[1:], dtype=np.int64))
    out = np.empty_like(x)
    new: dict[int, Shares] = {}
    if me != step:
        order = _component(party, permutation, step)
        if inverse:
            order = np.argsort(order)
        stream = party.keys.stream(others(step), tag, Purpose.SHUFFLE_MASK)
        rho = {k: stream.integers(x.shape[1:]) for k in targets}
        total = np.zeros(x.shape[1:], dtype=RING_DTYPE)
        for k in targets:
            total = (total ^ rho[k]) if boolean else (total + rho[k])
        for share in others(me):
            moved = x[slot(me, share)][..., order]
            if share == step:
                new[share] = (moved ^ total) if boolean else (moved - total)
            else:
                new[share] = (moved ^ rho[share]) if boolean else (moved + rho[share])
    transfers = []
    for k in targets:
        sender, backup = _senders(step, k)
        value = new[k].reshape(-1) if me in (sender, backup) else None
        transfers.append(Transfer(sender, backup, step, size, value))
    received = exchange(party, tag, transfers, f"shuffle step {step}")
    for share in others(me):
        if me == step:
            arrived = received[targets.index(share)]
            assert arrived is not None
            out[slot(me, share)] = arrived.reshape(x.shape[1:])
        else:
            out[slot(me, share)] = new[share]
    return out
