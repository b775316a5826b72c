"""Oblivious switching networks, and the secret shuffle of the ``additive`` backend.

**Oblivious switching** (Mohassel and Sadeghian, "How to Hide Circuits in MPC:
An Efficient Framework for Private Function Evaluation", EUROCRYPT 2013,
Section 5): a *programmer* knows a permutation, routed as the switch settings
of a Beneš network (:mod:`concilium.mpc.permutation_network`); a *sender*
holds arrays ``v`` (rows of ``N`` words). They end with shares of the
permuted ``v``, the programmer learning nothing of ``v`` and the sender
nothing of the permutation:

1. the sender draws a fresh uniform mask ``w_l`` for every wire after every
   layer ``l`` (``w_0 = v``);
2. for the switch of layer ``l`` on wires ``(p, q)`` it offers, by one 1-of-2
   OT, ``m_0 = (w_(l-1)[p] - w_l[p], w_(l-1)[q] - w_l[q])`` (straight) and
   ``m_1 = (w_(l-1)[q] - w_l[p], w_(l-1)[p] - w_l[q])`` (swapped), each padded
   with the OT's output for that choice; the programmer chooses with the
   switch's setting. All switches of all layers go in one batch: two flights;
3. the programmer starts from ``y_0 = 0`` and, layer by layer, routes ``y`` as
   its switches say and adds the chosen messages: ``y_l + w_l`` is the value
   on each wire after layer ``l``, so ``y_L + w_L`` is the permuted ``v``.

Boolean arrays use XOR for ``-`` and ``+``. Cost per switch: one OT (16
bytes from the programmer) and two padded messages of ``2 rows`` words from the
sender; ``(2k - 1) N / 2`` switches for ``N = 2^k`` (padded) wires.

**The secret shuffle** (as in Chase, Ghosh and Poburinnaya, "Secret-Shared
Shuffle", ASIACRYPT 2020: a composition of permutations, each known to one
party): ``pi = pi_(n-1) o ... o pi_0``, party ``k`` drawing ``pi_k`` on its own.
Applying ``pi_k`` to an additive sharing: party ``k`` permutes its own share,
and runs one oblivious switching as programmer with every other party as
sender on that party's share; party ``k``'s new share is its permuted share
plus its outputs, each other party's is its last masks. No coalition that
misses one party knows ``pi``. The inverse applies ``pi_k^-1`` in reverse order.

Reveals: nothing. The programmer sees only messages under OT pads or masked by
fresh uniform masks; the sender sees only OT extension messages.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from concilium.errors import ProtocolAbort, ShapeMismatch
from concilium.mpc.additive_party import AdditiveParty
from concilium.mpc.backend import Shares, value_shape
from concilium.mpc.ot_extension import KAPPA
from concilium.mpc.ot_triples import PairwiseOt
from concilium.mpc.permutation_network import Switches, layer_pairs, network_width, route
from concilium.ring.arithmetic import RING_DTYPE
from concilium.ring.prg import Prg

__all__ = ["AdditivePermutation", "apply_permutation", "new_permutation", "programmer_finish",
           "programmer_request", "sender_answer", "switch_bytes"]

Words = npt.NDArray[np.uint64]


def switch_bytes(length: int, rows: int = 1) -> int:
    """Bytes one oblivious switching of ``rows`` arrays of ``length`` words sends (both
    directions): 16 per switch from the programmer, ``32 rows`` from the sender."""
    width, bits = network_width(length)
    switches = (2 * bits - 1) * width // 2
    padded = -(-switches // 8) * 8
    return padded * 16 + switches * 32 * rows


def _combine(left: Words, right: Words, boolean: bool) -> Words:
    return left ^ right if boolean else left + right


def _difference(left: Words, right: Words, boolean: bool) -> Words:
    return left ^ right if boolean else left - right


def _choices(switches: Switches) -> npt.NDArray[np.uint8]:
    flat = switches.reshape(-1)
    return np.concatenate([flat, np.zeros(-flat.size % 8, dtype=np.uint8)])


def programmer_request(ot: PairwiseOt, sender: int, switches: Switches, rows: int,
                       tag: int) -> Words:
    """Step 2, the programmer's flight: the OT extension message to ``sender``; returns
    the pads of its choices, ``(switches, 2 rows)``."""
    u, pads, _ = ot.receivers[sender].extend(_choices(switches), 2 * rows)
    ot.channel.send(sender, tag, u)
    return np.asarray(pads, dtype=np.uint64).reshape(-1, 2 * rows)


def programmer_finish(ot: PairwiseOt, sender: int, switches: Switches, pads: Words,
                      rows: int, length: int, tag: int, boolean: bool) -> Words:
    """Step 3: the programmer's share ``y_L`` (rows, length) of the permuted arrays."""
    layers, half = switches.shape
    count = layers * half
    message = np.asarray(ot.channel.receive(sender, tag + 1))
    if message.dtype != np.uint64 or message.shape != (2, pads.shape[0], 2 * rows):
        raise ProtocolAbort(f"party {sender} sent a malformed switching message")
    chosen_bits = _choices(switches)[:, None].astype(bool)
    chosen = np.where(chosen_bits, message[1], message[0]) ^ pads
    chosen = chosen[:count].reshape(layers, half, 2, rows)
    width = 2 * half
    y = np.zeros((rows, width), dtype=np.uint64)
    for layer in range(layers):
        lower, upper = layer_pairs(width, layer)
        swap = switches[layer].astype(bool)
        a, b = y[:, lower], y[:, upper]
        y[:, lower] = _combine(np.where(swap, b, a), chosen[layer, :, 0].T, boolean)
        y[:, upper] = _combine(np.where(swap, a, b), chosen[layer, :, 1].T, boolean)
    return y[:, :length]


def sender_answer(ot: PairwiseOt, programmer: int, values: Words, layers: int,
                  tag: int, boolean: bool) -> Words:
    """Steps 1 and 2, the sender's side: answers the programmer's OT message with
    both padded messages of every switch; returns its share ``w_L`` (rows, length)."""
    rows, length = values.shape
    width, _ = network_width(length)
    half = width // 2
    count = layers * half
    padded = -(-count // 8) * 8
    u = np.asarray(ot.channel.receive(programmer, tag))
    if u.dtype != np.uint8 or u.shape != (KAPPA, padded // 8):
        raise ProtocolAbort(f"party {programmer} sent a malformed switching request")
    x0, x1 = ot.senders[programmer].extend(u, padded, 2 * rows)
    prg = Prg.from_urandom()
    masks = np.zeros((rows, width), dtype=np.uint64)
    masks[:, :length] = values
    offers = np.zeros((2, padded, 2 * rows), dtype=np.uint64)
    for layer in range(layers):
        lower, upper = layer_pairs(width, layer)
        fresh = prg.integers((rows, width))
        at = slice(layer * half, (layer + 1) * half)
        low_old, high_old = masks[:, lower], masks[:, upper]
        low_new, high_new = fresh[:, lower], fresh[:, upper]
        offers[0, at, :rows] = _difference(low_old, low_new, boolean).T
        offers[0, at, rows:] = _difference(high_old, high_new, boolean).T
        offers[1, at, :rows] = _difference(high_old, low_new, boolean).T
        offers[1, at, rows:] = _difference(low_old, high_new, boolean).T
        masks = fresh
    offers[0] ^= x0.reshape(padded, 2 * rows)
    offers[1] ^= x1.reshape(padded, 2 * rows)
    ot.channel.send(programmer, tag + 1, offers)
    return masks[:, :length]


@dataclass
class AdditivePermutation:
    """One party's view of a secret permutation: its own component ``pi_k`` (a gather:
    ``x[..., own]``) and, lazily, the switch settings that route it and its inverse."""

    length: int
    own: npt.NDArray[np.intp]
    routes: dict[bool, Switches] = field(default_factory=dict)

    def switches(self, inverse: bool) -> Switches:
        if inverse not in self.routes:
            gather = np.argsort(self.own, kind="stable") if inverse else self.own
            self.routes[inverse] = route(gather)
        return self.routes[inverse]


def new_permutation(backend: AdditiveParty, length: int) -> AdditivePermutation:
    """This party's fresh component: a uniform permutation from its own PRG (argsort
    of distinct 64-bit keys; a collision has probability below ``length^2 / 2^65``)."""
    if length < 0:
        raise ShapeMismatch(f"cannot permute {length} items")
    keys = Prg.from_urandom().integers((int(length),))
    return AdditivePermutation(int(length), np.argsort(keys, kind="stable"))


def _step(backend: AdditiveParty, permutation: AdditivePermutation, owner_index: int,
          share: Words, inverse: bool, boolean: bool) -> Words:
    """Apply the component of the party at ``owner_index`` (or its inverse)."""
    parties = backend.compute_parties
    owner = parties[owner_index]
    length = share.shape[1]
    layers = 2 * network_width(length)[1] - 1
    base = backend.next_tag(2 * len(parties))
    ot = backend.ot
    if backend.party != owner:
        return sender_answer(ot, owner, share, layers, base + 2 * backend.index, boolean)
    own = np.argsort(permutation.own, kind="stable") if inverse else permutation.own
    switches = permutation.switches(inverse)
    total = share[:, own]
    senders = [(i, p) for i, p in enumerate(parties) if p != owner]
    pads = {i: programmer_request(ot, p, switches, share.shape[0], base + 2 * i)
            for i, p in senders}
    for i, p in senders:
        part = programmer_finish(ot, p, switches, pads[i], share.shape[0], length,
                                 base + 2 * i, boolean)
        total = _combine(total, part, boolean)
    return total


def apply_permutation(backend: AdditiveParty, permutation: AdditivePermutation, x: Shares, *,
                      inverse: bool = False, boolean: bool = False) -> Shares:
    """``x[..., pi]`` (``pi^-1`` with ``inverse``) along the last value axis, reshared."""
    shape = value_shape(x)
    if not shape or shape[-1] != permutation.length:
        raise ShapeMismatch(f"a permutation of {permutation.length} items cannot permute "
                            f"an array of shape {shape}")
    if permutation.length <= 1:
        return x.copy()
    share = np.require(x[0], dtype=RING_DTYPE, requirements="C").reshape(-1, shape[-1])
    order = range(len(backend.compute_parties))
    for owner_index in (reversed(order) if inverse else order):
        share = _step(backend, permutation, owner_index, share, inverse, boolean)
    return share.reshape((1, *shape))
