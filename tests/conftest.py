"""Shared test settings and helpers."""

from __future__ import annotations

import os
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


def suite() -> list[SuiteProtocol]:
    """Every protocol that runs the generic suite: on three parties, and ``additive``
    on two and three."""
    from concilium.mpc.protocols import implemented, protocol

    variants = []
    for name in implemented():
        counts = (2, 3) if name == "additive" else (3,)
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




def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A test that takes ``protocol`` runs on every implemented backend (``rep3``, the
    plaintext ``reference``, and ``additive`` on two and on three parties: a
    :class:`SuiteProtocol`); tests specific to one backend do not take it."""
    if "protocol" in metafunc.fixturenames:
        variants = suite()
        metafunc.parametrize("protocol", variants, ids=[v.label for v in variants])
