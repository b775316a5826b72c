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


def run3(program: Callable[[Session], Any], protocol: str = "rep3", **options: Any) -> Any:
    """Run ``program`` on three compute parties of ``protocol`` and return party 0's
    result."""
    return run_parties(3, program, protocol=protocol, **options)[0]


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
    """A test that takes ``protocol`` runs on every registered backend (``rep3`` and the
    plaintext ``reference``); tests specific to one backend do not take it."""
    if "protocol" in metafunc.fixturenames:
        from concilium.testing import PROTOCOLS

        metafunc.parametrize("protocol", PROTOCOLS)
