"""What one party sees does not depend on the secrets (statistical check).

Party 1 and party 2 record every array they receive while the others input a
secret and the parties multiply (integer, fast and reliable fixed point) and
truncate. Runs with two very different secrets must give views with the same
structure and byte distributions that a chi-square test cannot tell apart; a
view with the secret mixed in must be told apart (the test can fail).
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import chi2_contingency

from concilium.data import Session
from concilium.net import MemoryNetwork
from concilium.ring import FixedPointCodec, Prg
from concilium.testing import run_parties

pytestmark = pytest.mark.rep3  # rep3's own costs, views and truncations

N = 20_000  # above the slicing threshold: every party plays every role


def _view(secret: float, observer: int) -> list[np.ndarray]:
    network = MemoryNetwork(3, record=True)

    def program(session: Session) -> None:
        x = session.input(0, np.full(N, secret) if session.party == 0 else None, fixed=True)
        y = session.input(1, np.full(N, 3.0) if session.party == 1 else None, fixed=True)
        k = session.input(0, np.full(N, int(secret)) if session.party == 0 else None)
        x * y
        x.multiply(y, truncation="fast")
        k * k
        x.truncate(4)
        x.truncate(4, truncation="fast")

    run_parties(3, program, network=network)
    return [message.array for message in network.channel(observer).received_log]


def _distinguishable(first: np.ndarray, second: np.ndarray) -> bool:
    counts = np.stack([np.bincount(first.view(np.uint8).ravel(), minlength=256),
                       np.bincount(second.view(np.uint8).ravel(), minlength=256)])
    return chi2_contingency(counts).pvalue < 1e-6


@pytest.mark.parametrize("observer", [1, 2])
def test_views_for_different_secrets_are_indistinguishable(observer: int) -> None:
    small, large = _view(1.0, observer), _view(-123456.75, observer)
    assert [(a.dtype, a.shape) for a in small] == [(a.dtype, a.shape) for a in large]
    key_messages = 1 if observer != 2 else 2  # key agreement: fresh random keys
    assert len(small) > key_messages + 5
    compared = 0
    for first, second in zip(small, large, strict=True):
        if first.dtype == np.int64:             # announced shapes are public
            assert np.array_equal(first, second)
        elif first.dtype == np.uint64:          # shares, masked values
            assert not _distinguishable(first, second)
            compared += 1
        else:                                   # 16-byte fresh keys: too short to test
            assert first.size <= 32
    assert compared >= 5


def test_the_check_detects_a_partially_masked_secret() -> None:
    """Control: shares masked with only 16 random bits (a protocol bug) are caught."""
    codec = FixedPointCodec()
    prg = Prg.from_urandom()

    def weak_share(secret: float) -> np.ndarray:
        return codec.encode(np.full(N, secret)) + (prg.integers(N) >> np.uint64(48))

    assert _distinguishable(weak_share(1.0), weak_share(-123456.75))
    assert not _distinguishable(prg.integers(N), prg.integers(N))
