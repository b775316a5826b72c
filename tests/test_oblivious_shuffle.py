"""The secret shuffle of the ``additive`` backend: Benes routing, oblivious switching
networks between two parties, and the composed shuffle on two and three parties."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from scipy.stats import chisquare

from concilium.errors import ProtocolAbort
from concilium.mpc.additive import Additive
from concilium.mpc.oblivious_switching import (
    programmer_finish,
    programmer_request,
    sender_answer,
    switch_bytes,
)
from concilium.mpc.ot_triples import PairwiseOt
from concilium.mpc.permutation_network import apply_network, network_width, route
from concilium.net import MemoryNetwork
from tests.helpers_threads import together

DATA = np.random.default_rng(41)  # test data and permutations, not secrets


@pytest.mark.parametrize("length", [1, 2, 3, 5, 8, 13, 64, 100, 1000, 4097])
def test_routed_networks_apply_the_permutation(length: int) -> None:
    for _ in range(3):
        gather = DATA.permutation(length)
        values = DATA.integers(0, 2**63, (2, length), dtype=np.uint64)
        switches = route(gather)
        width, bits = network_width(length)
        assert switches.shape == (2 * bits - 1, width // 2)
        assert np.array_equal(apply_network(switches, values), values[:, gather])


def _switch(values: np.ndarray, gather: np.ndarray, boolean: bool) -> list[Any]:
    """Party 0 programs ``gather``; party 1 sends ``values``: their two outputs."""
    network = MemoryNetwork(2)
    switches = route(gather)
    layers = switches.shape[0]

    def party(index: int) -> Any:
        channel = network.channel(index)
        ot = PairwiseOt.setup(channel, index, [0, 1], 100)
        if index == 1:
            out = sender_answer(ot, 0, values, layers, 500, boolean)
            return out, channel.stats().bytes_sent
        pads = programmer_request(ot, 1, switches, values.shape[0], 500)
        out = programmer_finish(ot, 1, switches, pads, values.shape[0], values.shape[1],
                                500, boolean)
        return out, channel.stats().bytes_sent

    return together(network, party)


@pytest.mark.parametrize("boolean", [False, True])
def test_oblivious_switching_shares_the_permuted_arrays(boolean: bool) -> None:
    length = 300
    values = DATA.integers(0, 2**64, (3, length), dtype=np.uint64)
    gather = DATA.permutation(length)
    (programmer, sent_by_programmer), (sender, sent_by_sender) = _switch(values, gather,
                                                                         boolean)
    combined = programmer ^ sender if boolean else programmer + sender
    assert np.array_equal(combined, values[:, gather])
    # the programmer's share is uniform whatever the values (masked by fresh masks)
    assert chisquare(np.bincount((programmer >> np.uint64(56)).astype(np.intp).ravel(),
                                 minlength=256)).pvalue > 1e-4
    base = 128 * 32 + 32  # the base OTs, both directions
    assert sent_by_programmer + sent_by_sender - 2 * base == switch_bytes(length, 3)


def test_the_programmers_view_does_not_depend_on_the_senders_values() -> None:
    length, gather = 256, DATA.permutation(256)
    zeros = np.zeros((1, length), dtype=np.uint64)
    ramp = np.arange(length, dtype=np.uint64)[None] << np.uint64(50)
    views = [_switch(values, gather, False)[0][0] for values in (zeros, ramp)]
    top = [np.bincount((v >> np.uint64(60)).astype(np.intp).ravel(), minlength=16)
           for v in views]
    for counts in top:
        assert chisquare(counts).pvalue > 1e-4


@pytest.mark.parametrize("parties", [2, 3])
def test_the_secret_shuffle_and_its_inverse(parties: int) -> None:
    network = MemoryNetwork(parties)
    values = DATA.integers(-10**6, 10**6, (2, 500))
    words = DATA.integers(0, 2**64, 500, dtype=np.uint64)

    def party(index: int) -> Any:
        backend = Additive(network.channel(index), tuple(range(parties)))
        x = backend.input(0, values.view(np.uint64) if index == 0 else None)
        w = backend.input(parties - 1, words if index == parties - 1 else None, boolean=True)
        permutation = backend.new_permutation(500)
        moved = backend.permute(permutation, x)
        back = backend.permute(permutation, moved, inverse=True)
        moved_words = backend.permute(permutation, w, boolean=True)
        return (backend.reveal(moved), backend.reveal(back),
                backend.reveal(moved_words, boolean=True))

    moved, back, moved_words = together(network, party)[0]
    assert np.array_equal(back.view(np.int64), values)
    # the words are distinct: where each moved word came from is the permutation
    gather = np.argsort(words)[np.searchsorted(np.sort(words), moved_words)]
    assert np.array_equal(moved_words, words[gather])
    assert sorted(gather) == list(range(500))
    assert np.array_equal(moved.view(np.int64), values[:, gather])  # rows stay together
    assert not np.array_equal(gather, np.arange(500))


def test_a_forged_switching_answer_aborts() -> None:
    network = MemoryNetwork(2)
    switches = route(DATA.permutation(16))

    def party(index: int) -> Any:
        channel = network.channel(index)
        ot = PairwiseOt.setup(channel, index, [0, 1], 100)
        if index == 1:
            channel.receive(0, 500)
            channel.send(0, 501, np.zeros(3, dtype=np.uint64))  # the wrong shape
            return None
        pads = programmer_request(ot, 1, switches, 1, 500)
        return programmer_finish(ot, 1, switches, pads, 1, 16, 500, False)

    with pytest.raises(ProtocolAbort, match="malformed switching message"):
        together(network, party)
