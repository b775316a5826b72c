"""governance/: node identities and the consortium manifest."""

from __future__ import annotations

import stat
from dataclasses import replace
from pathlib import Path

import pytest

from concilium.errors import ConfigurationError
from concilium.governance.consortium import (
    Manifest,
    add_party,
    load_manifest,
    save_manifest,
)
from concilium.governance.identity import (
    certificate_fingerprint,
    create_node,
    load_node,
    load_signing_key,
    parse_address,
)
from tests.helpers_tls import make_consortium


def test_init_creates_keys_with_private_modes(tmp_path: Path) -> None:
    node = create_node(tmp_path / "a", "hospital-a", "127.0.0.1:7001")
    for private in (node.tls_key_path, node.signing_key_path):
        assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert node.api_address.port == 8001
    loaded = load_node(tmp_path / "a")
    assert loaded == node
    assert certificate_fingerprint(node.tls_certificate_pem) == node.tls_fingerprint
    public = load_signing_key(node).public_key().public_bytes_raw().hex()
    assert node.signing_public_key == "ed25519:" + public


def test_init_refuses_to_overwrite_a_node(tmp_path: Path) -> None:
    create_node(tmp_path / "a", "hospital-a", "127.0.0.1:7001")
    before = (tmp_path / "a" / "tls" / "node.key").read_bytes()
    with pytest.raises(ConfigurationError, match="already holds a node; refusing to overwrite"):
        create_node(tmp_path / "a", "hospital-b", "127.0.0.1:7002")
    assert (tmp_path / "a" / "tls" / "node.key").read_bytes() == before


@pytest.mark.parametrize(("name", "address", "message"), [
    ("Hospital A", "127.0.0.1:7001", "lowercase letters"),
    ("a", "localhost", "HOST:PORT"),
    ("a", "127.0.0.1:70000", "between 1 and 65535"),
])
def test_init_checks_names_and_addresses(tmp_path: Path, name: str, address: str,
                                         message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        create_node(tmp_path / "x", name, address)


def test_addresses_parse_ipv4_ipv6_and_names() -> None:
    assert str(parse_address("[::1]:7001")) == "[::1]:7001"
    assert parse_address("node-a.example:443").port == 443


def test_tampered_certificate_is_detected(tmp_path: Path) -> None:
    create_node(tmp_path / "a", "hospital-a", "127.0.0.1:7001")
    other = create_node(tmp_path / "b", "hospital-b", "127.0.0.1:7002")
    (tmp_path / "a" / "tls" / "node.crt").write_text(other.tls_certificate_pem)
    with pytest.raises(ConfigurationError, match="does not match the fingerprint"):
        load_node(tmp_path / "a")


def test_manifest_round_trip_and_hash(tmp_path: Path) -> None:
    consortium = make_consortium(tmp_path)
    loaded = load_manifest(consortium.manifest_path)
    assert loaded == consortium.manifest
    assert loaded.hash == consortium.manifest.hash and len(loaded.hash) == 64
    assert [p.name for p in loaded.compute_parties] == ["alpha", "bravo", "charlie"]
    assert loaded.readiness_problems() == []
    renamed = replace(loaded, name="other")
    assert renamed.hash != loaded.hash


def test_manifest_validation_names_the_problem(tmp_path: Path) -> None:
    consortium = make_consortium(tmp_path)
    alpha, bravo = consortium.manifest.parties[:2]
    with pytest.raises(ConfigurationError, match="same MPC address"):
        Manifest("t", "rep3", (alpha, replace(bravo, mpc_address=alpha.mpc_address)))
    with pytest.raises(ConfigurationError, match="same name"):
        Manifest("t", "rep3", (alpha, replace(bravo, name="alpha")))
    with pytest.raises(ConfigurationError, match="unknown protocol 'spdz'"):
        Manifest("t", "spdz", ())
    with pytest.raises(ConfigurationError, match="has no TLS certificate"):
        Manifest("t", "rep3", (replace(alpha, tls_certificate=""),))
    with pytest.raises(ConfigurationError, match="does not match its fingerprint"):
        Manifest("t", "rep3", (replace(alpha, tls_certificate=bravo.tls_certificate),))
    with pytest.raises(ConfigurationError, match="no valid Ed25519 signing key"):
        Manifest("t", "rep3", (replace(alpha, signing_key="rsa:00"),))
    with pytest.raises(ConfigurationError, match="roles must be among"):
        Manifest("t", "rep3", (replace(alpha, roles=("king",)),))
    two = Manifest("t", "rep3", (alpha, bravo))
    assert two.readiness_problems() == [
        "protocol rep3 needs 3 compute parties; the manifest has 2"]
    with pytest.raises(ConfigurationError, match="needs 3 compute parties"):
        two.require_ready()


def test_manifest_refuses_a_node_twice_and_bad_files(tmp_path: Path) -> None:
    consortium = make_consortium(tmp_path)
    with pytest.raises(ConfigurationError, match="alpha is already a party"):
        add_party(consortium.manifest, consortium.nodes[0], ("compute",))
    broken = tmp_path / "broken.toml"
    broken.write_text("[consortium]\nname = 'x'\n")
    with pytest.raises(ConfigurationError, match="missing a required entry"):
        load_manifest(broken)
    broken.write_text("not toml [")
    with pytest.raises(ConfigurationError, match="not valid TOML"):
        load_manifest(broken)
    with pytest.raises(ConfigurationError, match="no manifest at"):
        load_manifest(tmp_path / "missing.toml")
    save_manifest(consortium.manifest, tmp_path / "copy.toml")
    assert load_manifest(tmp_path / "copy.toml").hash == consortium.manifest.hash
