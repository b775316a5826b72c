"""Replicated PRG keys for any access structure: one key per set of n - t parties."""

from __future__ import annotations

import itertools
import threading

import pytest

from concilium.mpc.randomness import agree_keys, key_sets
from concilium.net.memory import MemoryNetwork


def _agree(parties: int, threshold: int) -> list:
    network = MemoryNetwork(parties, timeout=10)
    results: list = [None] * parties

    def run(index: int) -> None:
        results[index] = agree_keys(network.channel(index), tuple(range(parties)), index, 0,
                                    threshold)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(parties)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


@pytest.mark.parametrize(("parties", "threshold"), [(3, 1), (4, 1), (5, 2), (2, 1)])
def test_every_set_of_n_minus_t_parties_shares_a_key_the_others_lack(parties: int,
                                                                     threshold: int) -> None:
    keys = _agree(parties, threshold)
    sets = key_sets(parties, threshold)
    subsets = list(itertools.combinations(range(parties), parties - threshold))
    assert sets == [frozenset(c) for c in subsets] + [frozenset(range(parties))]
    for members in sets:
        held = {keys[k].key(sorted(members)) for k in members}
        assert len(held) == 1  # all members hold the same key
        for outsider in set(range(parties)) - members:
            with pytest.raises(ValueError, match="holds no key"):
                keys[outsider].key(sorted(members))
    # any t parties together miss at least one key (so they cannot rebuild every share)
    for coalition in itertools.combinations(range(parties), threshold):
        known = set().union(*(keys[k].keys for k in coalition))
        assert set(sets) - known
    distinct = {key for k in keys for key in k.keys.values()}
    assert len(distinct) == len(sets)  # fresh keys from os.urandom, none reused


def test_a_structure_needs_a_sensible_threshold() -> None:
    with pytest.raises(ValueError, match="tolerates 1 to 3"):
        key_sets(4, 4)
