"""Oblivious transfer without a dealer: base OTs (Chou-Orlandi over libsodium's
Ed25519 group), IKNP extension, and Beaver triples from Gilboa products, for two
and three parties; exact outputs, malformed messages refused, and a party's view
of the OT phase the same for two very different secrets (chi-square)."""

from __future__ import annotations

from functools import reduce
from typing import Any

import numpy as np
import pytest
from scipy.stats import chi2_contingency, chisquare

from concilium.errors import ProtocolAbort
from concilium.mpc.bit_kernels import transpose_bits, transpose_bits_numpy
from concilium.mpc.ot_base import receive_base_ots, send_base_ots
from concilium.mpc.ot_extension import setup_pair
from concilium.mpc.ot_triples import CHUNK, PairwiseOt, correction_bytes
from concilium.net import MemoryNetwork
from tests.helpers_threads import together

DATA = np.random.default_rng(7)  # test data, not secrets


@pytest.mark.parametrize("shape", [(128, 1), (128, 40), (64, 8), (8, 3)])
def test_the_compiled_transpose_is_the_bit_matrix_transpose(shape: tuple[int, int]) -> None:
    matrix = DATA.integers(0, 256, shape, dtype=np.uint8)
    bits = np.unpackbits(matrix, axis=1, bitorder="little")
    expected = np.packbits(bits.T, axis=1, bitorder="little")
    assert np.array_equal(transpose_bits(matrix), expected)
    assert np.array_equal(transpose_bits_numpy(matrix), expected)


def test_base_ots_give_the_receiver_the_key_it_chose_and_nothing_else() -> None:
    choices = DATA.integers(0, 2, 128)
    network = MemoryNetwork(2)
    sent, chosen = together(network, lambda p: send_base_ots(network.channel(0), 1, 10, 128)
                             if p == 0 else receive_base_ots(network.channel(1), 0, 10,
                                                             list(choices)))
    k0, k1 = sent
    assert np.array_equal(chosen, np.where(choices[:, None] == 1, k1, k0))
    assert (k0 != k1).any(axis=1).all()  # the other key is a different, fresh key
    assert len({bytes(k) for k in k0}) == 128


def test_a_base_ot_message_that_is_not_a_group_element_aborts() -> None:
    network = MemoryNetwork(2)
    network.channel(0).send(1, 10, np.full(32, 0xFF, dtype=np.uint8))  # not a point
    with pytest.raises(ProtocolAbort, match="not a valid group element"):
        receive_base_ots(network.channel(1), 0, 10, [0, 1])


def test_extended_ots_are_random_ots_with_the_receivers_choices() -> None:
    network = MemoryNetwork(2)
    m = 1 << 12
    choices = DATA.integers(0, 2, m).astype(np.uint8)

    def program(party: int) -> Any:
        channel = network.channel(party)
        sender, receiver = setup_pair(channel, party, 1 - party, 50)
        if party == 0:
            u, y, _ = receiver.extend(choices)
            channel.send(1, 99, u)
            return y
        return sender.extend(np.asarray(channel.receive(0, 99)), m)

    y, (x0, x1) = together(network, program)
    assert np.array_equal(y, np.where(choices == 1, x1, x0))
    assert (x0 != x1).all() and len(np.unique(x0)) == m


def _triples(parties: int, count: int, boolean: bool, network: MemoryNetwork | None = None
             ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    network = network or MemoryNetwork(parties)

    def program(party: int) -> Any:
        ot = PairwiseOt.setup(network.channel(party), party, list(range(parties)), 1000)
        return ot.triples(count, boolean=boolean)

    return together(network, program)


@pytest.mark.parametrize("parties", [2, 3])
def test_multiplication_and_and_triples_are_correct(parties: int) -> None:
    count = 100_000 if parties == 2 else 3 * CHUNK // 2  # several chunks
    shares = _triples(parties, count, boolean=False)
    a, b, c = (sum(s[k] for s in shares) for k in range(3))
    assert np.array_equal(a * b, c)
    for value in (a, b, c):  # uniform: the top byte is flat
        assert chisquare(np.bincount((value >> np.uint64(56)).astype(np.intp),
                                     minlength=256)).pvalue > 1e-4
    words = _triples(parties, 5000, boolean=True)
    a, b, c = (reduce(np.bitwise_xor, [s[k] for s in words]) for k in range(3))
    assert np.array_equal(a & b, c)
    assert 0.23 < np.unpackbits(c.view(np.uint8)).mean() < 0.27  # a & b: a quarter set


@pytest.mark.parametrize("parties", [2, 3])
def test_matrix_triples_are_correct_and_cost_a_row_of_corrections_per_element(
        parties: int) -> None:
    network = MemoryNetwork(parties)

    def program(party: int) -> Any:
        ot = PairwiseOt.setup(network.channel(party), party, list(range(parties)), 1000)
        before = network.channel(party).stats().bytes_sent
        triple = ot.matrix_triple(700, 30, 5)  # 700 rows: two chunks
        return triple, network.channel(party).stats().bytes_sent - before

    outcome = together(network, program)
    a, b, c = (sum(o[0][k] for o in outcome) for k in range(3))
    assert np.array_equal(a @ b, c) and a.shape == (700, 30) and c.shape == (700, 5)
    assert chisquare(np.bincount((c >> np.uint64(56)).astype(np.intp).ravel(),
                                 minlength=256)).pvalue > 1e-4
    # per peer: 16 bytes per OT (64 per element of A) and 5 truncated corrections
    expected = (parties - 1) * (700 * 30 * 64 * 16 + correction_bytes(700 * 30 * 5))
    assert all(o[1] == expected for o in outcome)


def test_two_party_triples_cost_what_the_docs_say() -> None:
    network = MemoryNetwork(2)
    count = 4096
    _triples(2, count, boolean=False, network=network)
    sent = network.channel(0).stats().bytes_sent
    base = 32 + 32 * 128  # base OTs: A as the sender, one point per OT as the receiver
    extension = count * 64 * 16  # IKNP: 16 bytes per OT, 64 OTs per product
    assert correction_bytes(count) == 288 * count  # truncated: 288 of 512 bytes
    assert sent == base + extension + correction_bytes(count)


def _ot_view(secret: int) -> list[np.ndarray]:
    """What party 1 receives while party 0's choice bits are the bits of ``secret``."""
    network = MemoryNetwork(2, record=True)

    def program(party: int) -> Any:
        ot = PairwiseOt.setup(network.channel(party), party, [0, 1], 1000)
        value = np.full(4096, secret, dtype=np.uint64)
        return ot.cross_products(value if party == 0 else DATA.integers(
            0, 2**63, 4096, dtype=np.uint64), value)

    together(network, program)
    return [message.array for message in network.channel(1).received_log]


def test_a_partys_view_of_the_ot_phase_does_not_depend_on_the_secret() -> None:
    zeros, ones = _ot_view(0), _ot_view(2**64 - 1)
    assert [(a.dtype, a.shape) for a in zeros] == [(a.dtype, a.shape) for a in ones]
    compared = 0
    for first, second in zip(zeros, ones, strict=True):
        if first.size < 1024:  # a base-OT group element: too short to test
            continue
        counts = np.stack([np.bincount(first.view(np.uint8).ravel(), minlength=256),
                           np.bincount(second.view(np.uint8).ravel(), minlength=256)])
        assert chi2_contingency(counts).pvalue > 1e-6
        compared += 1
    assert compared >= 2  # the extension message and the corrections
    # control: the same messages with every fourth byte the secret's are told apart
    first, second = (np.array(v[-1]).view(np.uint8).copy() for v in (zeros, ones))
    first[::4], second[::4] = 0, 255
    counts = np.stack([np.bincount(first, minlength=256), np.bincount(second, minlength=256)])
    assert chi2_contingency(counts + 1).pvalue < 1e-6
