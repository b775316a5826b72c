"""Shared test settings and helpers."""

from __future__ import annotations

import os
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from concilium.data import Session
from concilium.governance.consortium import Manifest, add_party, save_manifest
from concilium.governance.identity import create_node, load_signing_key
from concilium.testing import run_parties
from tests.helpers_tls import free_port

# Parallel workers (pytest-xdist, ``-n 2``) pick TCP ports from disjoint residues.
if "PYTEST_XDIST_WORKER" in os.environ:
    os.environ["CONCILIUM_PORT_SHARD"] = (
        f"{int(os.environ['PYTEST_XDIST_WORKER'].removeprefix('gw'))}/"
        f"{os.environ.get('PYTEST_XDIST_WORKER_COUNT', '1')}")

# Each example runs three party threads; keep the count moderate and never time out.
settings.register_profile(
    "concilium",
    max_examples=int(os.environ.get("CONCILIUM_EXAMPLES", "40")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile("concilium")


class SuiteProtocol(str):
    """A protocol of the generic suite and the number of compute parties it runs on
    (``protocol.parties``); it compares equal to the protocol's name."""

    parties: int

    def __new__(cls, name: str, parties: int) -> SuiteProtocol:
        value = super().__new__(cls, name)
        value.parties = parties
        return value

    @property
    def label(self) -> str:
        return f"{self}-{self.parties}" if str(self) == "additive" else str(self)


#: Generic tests that ``make test`` runs on ``additive`` with two parties only: the
#: layers above the backend interface (plans, joins, policies, aggregates, outside
#: parties), which see nothing different on three parties, and the accuracy and
#: division tests, whose three-party truncation ``tests/test_additive.py`` checks
#: directly on 3 and 5 parties. The three-party variant of these costs about 17 minutes
#: on two cores; ``CONCILIUM_SUITE=full`` (``make test-full``) runs every test on every
#: variant. Conversions, comparisons, sort and shuffle, SecretArray and the correlation
#: source run on 2 and 3 parties in ``make test``.
TWO_PARTY_ONLY = frozenset({"test_queries", "test_joins", "test_join_groups",
                            "test_output_policy", "test_aggregate_registry",
                            "test_outside_parties", "test_ops_arithmetic", "test_ops_misc",
                            "test_count_division", "test_long_division"})


def suite(module: str = "") -> list[SuiteProtocol]:
    """Every protocol that runs the generic suite: on three parties, ``rep4`` on four,
    and ``additive`` on two and three (two only for :data:`TWO_PARTY_ONLY` modules, unless
    ``CONCILIUM_SUITE=full``)."""
    from concilium.mpc.protocols import implemented, protocol

    full = os.environ.get("CONCILIUM_SUITE") == "full"
    variants = []
    for name in implemented():
        counts: tuple[int, ...] = (3,)
        if name == "additive":
            two_only = module.rsplit(".", 1)[-1] in TWO_PARTY_ONLY
            counts = (2,) if two_only and not full else (2, 3)
        elif name == "rep4":
            counts = (4,)
        variants += [SuiteProtocol(name, n) for n in counts
                     if protocol(name).parties_problem(n) is None]
    return variants


def last_party(session: Session) -> int:
    """The last compute party (party 2 of three, party 1 of two)."""
    return session.backend.compute_parties[-1]


def last_input(session: Session, values: Any, **options: Any) -> Any:
    """``values`` input by the last compute party (the others pass nothing)."""
    last = last_party(session)
    return session.input(last, values if session.party == last else None, **options)


def run3(program: Callable[[Session], Any], protocol: str = "rep3", **options: Any) -> Any:
    """Run ``program`` on the compute parties of ``protocol`` (three, or
    ``protocol.parties`` for a suite variant) and return party 0's result."""
    parties = getattr(protocol, "parties", 3)
    return run_parties(parties, program, protocol=str(protocol), **options)[0]


NODE_NAMES = ("hospital-a", "hospital-b", "hospital-c")


@pytest.fixture(scope="module")
def signing_consortium(tmp_path_factory: pytest.TempPathFactory) -> tuple[Manifest, dict, Path]:
    root = tmp_path_factory.mktemp("governance")
    manifest = Manifest("hospitals", "rep3")
    keys = {}
    for name in NODE_NAMES:
        node = create_node(root / name, name, f"127.0.0.1:{free_port()}",
                           f"127.0.0.1:{free_port()}")
        manifest = add_party(manifest, node, ("data_owner", "compute"))
        keys[name] = load_signing_key(node)
    save_manifest(manifest, root / "consortium.toml")
    return manifest, keys, root / "consortium.toml"




@pytest.fixture(autouse=True)
def _fewer_examples_where_each_sets_up_oblivious_transfer(
        request: pytest.FixtureRequest) -> Any:
    """A property test on ``additive`` runs an eighth of the examples (5 of 40): each
    example is a fresh consortium whose parties first run their base OTs (0.3 to 1 s);
    the same properties run in full on ``rep3`` and ``reference``."""
    test = getattr(request, "function", None)
    callspec = getattr(request.node, "callspec", None)
    protocol = callspec.params.get("protocol") if callspec is not None else None
    if not getattr(test, "is_hypothesis_test", False) or str(protocol) != "additive":
        yield
        return
    saved = test._hypothesis_internal_use_settings  # type: ignore[union-attr]
    test._hypothesis_internal_use_settings = settings(  # type: ignore[union-attr]
        saved, max_examples=max(5, saved.max_examples // 8))
    try:
        yield
    finally:
        test._hypothesis_internal_use_settings = saved  # type: ignore[union-attr]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A test that takes ``protocol`` runs on every implemented backend (``rep3``, the
    plaintext ``reference``, and ``additive`` on two and on three parties: a
    :class:`SuiteProtocol`); tests specific to one backend do not take it."""
    if "protocol" in metafunc.fixturenames:
        variants = suite(metafunc.module.__name__)
        metafunc.parametrize("protocol", variants, ids=[v.label for v in variants])


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``make test`` runs half of the parametrized cases of the query-level modules
    (:data:`TWO_PARTY_ONLY`) on ``additive`` with two parties, chosen by a hash of the
    test's id (the same half on every worker and every run): each such case costs
    seconds of base OTs and triples, and the same cases run in full on ``rep3``,
    ``rep4`` and ``reference``. ``CONCILIUM_SUITE=full`` (``make test-full``) runs all."""
    if os.environ.get("CONCILIUM_SUITE") == "full":
        return
    kept, dropped = [], []
    for item in items:
        callspec = getattr(item, "callspec", None)
        protocol = callspec.params.get("protocol") if callspec is not None else None
        module = getattr(getattr(item, "module", None), "__name__", "").rsplit(".", 1)[-1]
        sampled = (isinstance(protocol, SuiteProtocol) and protocol.label == "additive-2"
                   and module in TWO_PARTY_ONLY and len(callspec.params) > 1)
        if sampled and zlib.crc32(item.nodeid.encode()) % 2:
            dropped.append(item)
        else:
            kept.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept
