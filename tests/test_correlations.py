"""Correlations behind one interface: every kind correct on every backend, batched
ahead of the online phase and taken in order."""

from __future__ import annotations

import numpy as np
import pytest

from concilium.mpc.additive import MINIMUM_BATCH
from concilium.mpc.correlations import Correlation, Request
from concilium.mpc.ot_triples import correction_bytes
from concilium.ring.arithmetic import RING_DTYPE
from concilium.testing import run_parties


def _open(session: object, shares: np.ndarray, boolean: bool = False) -> np.ndarray:
    return session.backend.reveal(shares, boolean=boolean)  # type: ignore[attr-defined]


def test_every_kind_is_correct(protocol: str) -> None:
    def program(session: object) -> dict:
        source = session.correlations  # type: ignore[attr-defined]
        a, b, c = source.take(Request(Correlation.MULTIPLICATION, (5, 3)))
        x, y, z = source.take(Request(Correlation.AND, (7,)))
        left, right, product = source.take(Request(Correlation.MATRIX, (4, 6), right=(6, 2)))
        r, s = source.take(Request(Correlation.TRUNCATION, (200,), bits=16))
        arithmetic, words = source.take(Request(Correlation.RANDOM_BIT, (300,)))
        return {"mul": [_open(session, v) for v in (a, b, c)],
                "and": [_open(session, v, True) for v in (x, y, z)],
                "matrix": [_open(session, v) for v in (left, right, product)],
                "truncation": [_open(session, v) for v in (r, s)],
                "bits": [_open(session, arithmetic), _open(session, words, True)]}

    out = run_parties(protocol.parties, program, protocol=protocol)[0]
    a, b, c = out["mul"]
    assert a.shape == (5, 3) and np.array_equal(c, a * b) and len(np.unique(a)) > 1
    x, y, z = out["and"]
    assert np.array_equal(z, x & y)
    left, right, product = out["matrix"]
    assert np.array_equal(product, (left @ right).astype(RING_DTYPE))
    r, s = out["truncation"]
    assert np.array_equal(s, r >> np.uint64(16)) and np.unique(r).size == 200
    arithmetic, words = out["bits"]
    assert set(np.unique(arithmetic)) <= {0, 1} and np.array_equal(arithmetic, words)
    assert 100 < arithmetic.sum() < 200  # uniform bits


def test_prepared_correlations_are_made_offline_in_one_batch_and_taken_in_order(
        protocol: str) -> None:
    requests = [Request(Correlation.MULTIPLICATION, (10,)),
                Request(Correlation.MULTIPLICATION, (4, 2)),
                Request(Correlation.MULTIPLICATION, (10,)),
                Request(Correlation.PERMUTATION, (6,))]

    def program(session: object) -> dict:
        source = session.correlations  # type: ignore[attr-defined]
        before = session.stats()  # type: ignore[attr-defined]
        source.prepare(requests)
        middle = session.stats()  # type: ignore[attr-defined]
        first = source.take(requests[0])
        second = source.take(requests[2])
        permutation = source.take(requests[3])
        source.take(requests[1])
        after = session.stats()  # type: ignore[attr-defined]
        spare = source.take(Request(Correlation.MULTIPLICATION, (3,)))  # not prepared
        return {"offline": (middle.messages_sent - before.messages_sent,
                            middle.bytes_sent - before.bytes_sent),
                "online": after.bytes_sent - middle.bytes_sent,
                "made": (source.made_offline, source.made_online),
                "first": [_open(session, v) for v in first],
                "second": [_open(session, v) for v in second],
                "spare": [_open(session, v) for v in spare],
                "moved": _open(session, session.backend.permute(  # type: ignore
                    permutation, session.backend.share_public(  # type: ignore
                        np.arange(6, dtype=RING_DTYPE))))}

    out = run_parties(protocol.parties, program, protocol=protocol)[0]
    assert out["made"] == (4, 1)
    for triple in (out["first"], out["second"], out["spare"]):
        assert np.array_equal(triple[2], triple[0] * triple[1])
    assert not np.array_equal(out["first"][0], out["second"][0])  # two different triples
    assert sorted(out["moved"]) == list(range(6))
    # taking a prepared correlation costs no communication; the three multiplication
    # triples were made by one product (rep3: one reshare message of 8 bytes for each
    # of the 28 elements; the plaintext reference: nothing; additive: to each peer, a
    # batch of MINIMUM_BATCH OT triples, 16 bytes per OT and the Gilboa corrections,
    # then the product's opening of 16 bytes per element)
    assert out["online"] == 0
    peers = protocol.parties - 1
    batch = 16 * 64 * MINIMUM_BATCH + correction_bytes(MINIMUM_BATCH)
    # rep4: party 0 sends two joint messages of 28 elements to party 3 in one frame and
    # a 32-byte digest to party 2
    assert out["offline"] == {"rep3": (1, 8 * 28), "reference": (0, 0),
                              "rep4": (2, 16 * 28 + 32),
                              "additive": (3 * peers, peers * (batch + 16 * 28))}[protocol]


def test_requests_that_cannot_be_made_are_refused() -> None:
    from concilium.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match=r"1\.\.63 bits"):
        Request(Correlation.TRUNCATION, (3,), bits=0)
    with pytest.raises(ConfigurationError, match=r"shapes \(m, k\) and \(k, n\)"):
        Request(Correlation.MATRIX, (2, 3), right=(4, 5))
