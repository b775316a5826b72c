"""Rotating a node's TLS key during a running consortium: `concilium keys rotate
NODE_DIR --tls` makes a new key and certificate, announces them in an amendment
signed with the node's old signing key, and switches the running node to them.
The next computation runs on the new keys, the old audit entries still verify,
and a peer presenting the old certificate is refused."""

from __future__ import annotations

import socket
import ssl
import time
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from concilium.cli import app
from concilium.errors import ConciliumError, ConfigurationError
from concilium.governance.audit import verify_log
from concilium.governance.consortium import load_manifest
from concilium.governance.identity import load_node
from concilium.node.client import NodeClient
from concilium.node.cluster import LocalCluster

NAMES = ("hospital-a", "hospital-b", "hospital-c")
SCHEMA = {"columns": {"age": {"type": "int", "low": 0, "high": 100}}}


def _count(cluster: LocalCluster, clients: dict[str, dict[str, NodeClient]]) -> int:
    identifier = clients["hospital-a"]["analyst"].request("POST", "/computations", json={
        "query": "SELECT COUNT(*) AS n FROM admissions", "datasets": ["admissions"],
        "recipients": ["hospital-a"]})["id"]
    for name in NAMES:
        clients[name]["approver"].request("POST", f"/computations/{identifier}/approve",
                                          json={})
    deadline = time.monotonic() + 120
    while True:
        shown = clients["hospital-a"]["analyst"].request("GET", f"/computations/{identifier}")
        if shown["status"] in ("completed", "failed"):
            break
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert shown["status"] == "completed", shown["error"]
    result = clients["hospital-a"]["analyst"].request("GET",
                                                      f"/computations/{identifier}/result")
    return int(result["rows"][0][0])


def _clients(cluster: LocalCluster) -> dict[str, dict[str, NodeClient]]:
    """Fresh clients, pinned to each node's certificate as it is on disk now."""
    return {name: {role: NodeClient(cluster.dirs[name], token)
                   for role, token in cluster.tokens[name].items()} for name in NAMES}


def _handshake_refused(certificate: Path, key: Path, peer: str, cluster: LocalCluster) -> bool:
    """Connect to ``peer``'s MPC listener with this certificate: whether the listener
    refuses it (mutual TLS against the pinned certificates of the manifest)."""
    target = load_node(cluster.dirs[peer])
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.load_verify_locations(str(target.tls_certificate_path))
    context.load_cert_chain(str(certificate), str(key))
    raw = socket.create_connection((target.mpc_address.host, target.mpc_address.port),
                                   timeout=5)
    try:
        with context.wrap_socket(raw) as tls:
            tls.settimeout(2)
            try:
                return tls.recv(1) == b""  # closed: refused
            except TimeoutError:
                return False  # still open: the listener waits for this party's hello
            except (ssl.SSLError, ConnectionResetError):
                return True
    except (ssl.SSLError, ConnectionResetError):
        return True


def test_a_tls_rotation_is_announced_signed_and_in_force(tmp_path: Path) -> None:
    cluster = LocalCluster(tmp_path / "c", NAMES)
    try:
        cluster.register("admissions", {n: pd.DataFrame({"age": [30, 40, 50]})
                                        for n in NAMES}, SCHEMA)
        clients = _clients(cluster)
        assert _count(cluster, clients) == 9
        before = load_manifest(cluster.manifest_path)
        old = load_node(cluster.dirs["hospital-b"])
        rotated = CliRunner().invoke(app, ["keys", "rotate", str(cluster.dirs["hospital-b"]),
                                           "--tls", "--token",
                                           cluster.tokens["hospital-b"]["admin"]])
        assert rotated.exit_code == 0, rotated.output
        assert "hospital-b rotates its TLS certificate" in rotated.output
        assert "applied" in rotated.output
        new = load_node(cluster.dirs["hospital-b"])
        assert new.tls_fingerprint != old.tls_fingerprint
        deadline = time.monotonic() + 30
        while any(NodeClient(cluster.dirs[n], cluster.tokens[n]["admin"]).request(
                "GET", "/consortium")["hash"] == before.hash for n in NAMES):
            assert time.monotonic() < deadline, "the amendment did not reach every node"
            time.sleep(0.2)
        manifest = load_manifest(cluster.manifest_path)
        assert manifest.parties[1].tls_fingerprint == new.tls_fingerprint
        # the running node serves its API on the new certificate (old pin: refused)
        with pytest.raises(ConciliumError):
            clients["hospital-b"]["analyst"].request("GET", "/consortium")
        clients = _clients(cluster)
        assert _count(cluster, clients) == 9  # the next computation, on the new keys
        previous = sorted((cluster.dirs["hospital-b"] / "tls").glob("node.previous-*"))
        old_certificate = next(p for p in previous if p.suffix == ".crt")
        old_key = next(p for p in previous if p.suffix == ".key")
        assert _handshake_refused(old_certificate, old_key, "hospital-a", cluster)
        assert not _handshake_refused(new.tls_certificate_path, new.tls_key_path,
                                      "hospital-a", cluster)
        signing = {p.name: p.signing_key for p in manifest.parties}
        for name in NAMES:  # entries from before the rotation still verify
            assert verify_log(cluster.dirs[name] / "audit.sqlite", signing) > 0
        kinds = [e["kind"] for e in clients["hospital-c"]["admin"].request(
            "GET", "/audit/entries")]
        assert "manifest_amended" in kinds
    finally:
        cluster.close()


def test_a_signing_key_rotation_is_refused_until_the_audit_log_can_record_it(
        tmp_path: Path) -> None:
    from concilium.governance.identity import create_node, prepare_rotation

    node = create_node(tmp_path / "n", "hospital-a", "127.0.0.1:7001", "127.0.0.1:8001")
    with pytest.raises(ConfigurationError, match="signing key is not available yet"):
        prepare_rotation(node, tls=False, signing=True)
    assert not list((tmp_path / "n").glob("*/*.next.*"))  # nothing half-made
