"""Rotating a node's keys during a running consortium: `concilium keys rotate
NODE_DIR --tls | --signing` makes a new key (and certificate), announces it in an
amendment signed with the node's old signing key, and switches the running node to
it. A computation in flight finishes on the old keys, the next one runs on the new
keys, the old audit entries still verify, and a peer presenting the old
certificate, or a request signed by the old signing key, is refused."""

from __future__ import annotations

import datetime
import socket
import sqlite3
import ssl
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from typer.testing import CliRunner

from concilium.cli import app
from concilium.errors import AuditError, ConciliumError
from concilium.governance.audit import ROTATED, key_text
from concilium.governance.audit_verify import verify_log
from concilium.governance.consortium import load_manifest
from concilium.governance.identity import load_node, load_signing_key
from concilium.governance.spec import canonical_json
from concilium.node.client import NodeClient
from concilium.node.cluster import LocalCluster
from concilium.node.control import _message

NAMES = ("hospital-a", "hospital-b", "hospital-c")
SCHEMA = {"columns": {"age": {"type": "int", "low": 0, "high": 100}}}
# a join of hospital-a's patients with hospital-b's lab results: long enough (seconds)
# to rotate a key while it runs
ROWS = 40_000
PATIENTS = {"columns": {"patient": {"type": "key", "unique": True},
                        "age": {"type": "int", "low": 0, "high": 100}}}
LABS = {"columns": {"patient": {"type": "key"},
                    "value": {"type": "int", "low": 0, "high": 1000}}, "max_rows": 100_000}
JOIN = ("SELECT COUNT(*) AS n, SUM(l.value) AS total "
        "FROM patients p JOIN labs l ON p.patient = l.patient")


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


def _wait(client: NodeClient, identifier: str) -> dict[str, Any]:
    deadline = time.monotonic() + 180
    while True:
        shown = client.request("GET", f"/computations/{identifier}")
        if shown["status"] in ("completed", "failed"):
            return shown
        assert time.monotonic() < deadline, shown
        time.sleep(0.1)


def _start_join(clients: dict[str, dict[str, NodeClient]]) -> str:
    """Propose and approve the join; return once hospital-a has connected to its peers
    (progress 0.3: the run's MPC connections are open) and still runs it."""
    analyst = clients["hospital-a"]["analyst"]
    identifier = analyst.request("POST", "/computations", json={
        "query": JOIN, "datasets": ["patients", "labs"], "recipients": ["hospital-a"]})["id"]
    for name in ("hospital-a", "hospital-b"):
        clients[name]["approver"].request("POST", f"/computations/{identifier}/approve",
                                          json={})
    deadline = time.monotonic() + 60
    while True:
        shown = analyst.request("GET", f"/computations/{identifier}")
        if shown["status"] == "running" and shown["progress"] >= 0.3:
            return str(identifier)
        assert shown["status"] in ("proposed", "approved", "running"), shown
        assert time.monotonic() < deadline, shown
        time.sleep(0.05)


def _rotate(cluster: LocalCluster, name: str, which: str, change: str) -> None:
    """``concilium keys rotate NODE_DIR --tls|--signing``, applied at once (a rotation
    needs only the rotating node's old key)."""
    rotated = CliRunner().invoke(app, ["keys", "rotate", str(cluster.dirs[name]), which,
                                       "--token", cluster.tokens[name]["admin"]])
    assert rotated.exit_code == 0, rotated.output
    assert change in rotated.output and "applied" in rotated.output


def _wait_for_manifest(cluster: LocalCluster, old_hash: str) -> None:
    deadline = time.monotonic() + 60
    while any(NodeClient(cluster.dirs[n], cluster.tokens[n]["admin"]).request(
            "GET", "/consortium")["hash"] == old_hash for n in NAMES):
        assert time.monotonic() < deadline, "the amendment did not reach every node"
        time.sleep(0.2)


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
        ids = np.arange(ROWS)
        patients = pd.DataFrame({"patient": ids, "age": ids % 100})
        labs = pd.DataFrame({"patient": ids[::-1], "value": (ids * 7) % 1000})
        cluster.register("patients", {"hospital-a": patients}, PATIENTS)
        cluster.register("labs", {"hospital-b": labs}, LABS)
        expected = patients.merge(labs, on="patient")
        clients = _clients(cluster)
        assert _count(cluster, clients) == 9
        before = load_manifest(cluster.manifest_path)
        old = load_node(cluster.dirs["hospital-b"])
        in_flight = _start_join(clients)  # its connections are open, on the old keys
        _rotate(cluster, "hospital-b", "--tls", "hospital-b rotates its TLS certificate")
        new = load_node(cluster.dirs["hospital-b"])
        assert new.tls_fingerprint != old.tls_fingerprint
        _wait_for_manifest(cluster, before.hash)
        # the rotation is in force at every node while the join still runs ...
        assert clients["hospital-a"]["analyst"].request(
            "GET", f"/computations/{in_flight}")["status"] == "running"
        # ... and the join finishes on the connections it opened with the old keys
        finished = _wait(clients["hospital-a"]["analyst"], in_flight)
        assert finished["status"] == "completed", finished["error"]
        result = clients["hospital-a"]["analyst"].request(
            "GET", f"/computations/{in_flight}/result")
        assert result["rows"] == [[len(expected), int(expected["value"].sum())]]
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


def _peer_request(cluster: LocalCluster, sender: str, target: str,
                  key: ed25519.Ed25519PrivateKey) -> httpx.Response:
    """A control-plane request from ``sender`` to ``target``, signed by ``key``, as a
    node sends them (a harmless one: the checkpoints ``target`` keeps)."""
    body = canonical_json({"node": target})
    sent = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    path = "/peer/witnessed"
    pinned = ssl.create_default_context(
        cafile=str(load_node(cluster.dirs[target]).tls_certificate_path))
    pinned.check_hostname = False  # the node's own certificate is the trust anchor
    with httpx.Client(verify=pinned) as client:
        return client.post(f"https://{load_node(cluster.dirs[target]).api_address}{path}",
                           content=body, headers={
                               "Content-Type": "application/json",
                               "X-Concilium-Node": sender, "X-Concilium-Time": sent,
                               "X-Concilium-Signature": key.sign(
                                   _message("POST", path, sent, body)).hex()})


def _cosigned_by(log: Path, signer: str) -> int:
    with sqlite3.connect(f"file:{log}?mode=ro", uri=True) as connection:
        return int(connection.execute("SELECT count(*) FROM checkpoints WHERE signer = ?",
                                      (signer,)).fetchone()[0])


def test_a_signing_key_rotation_hands_the_audit_log_to_the_new_key(tmp_path: Path) -> None:
    cluster = LocalCluster(tmp_path / "c", NAMES)
    try:
        cluster.register("admissions", {n: pd.DataFrame({"age": [30, 40, 50]})
                                        for n in NAMES}, SCHEMA)
        clients = _clients(cluster)
        assert _count(cluster, clients) == 9
        log_a = cluster.dirs["hospital-a"] / "audit.sqlite"
        deadline = time.monotonic() + 60  # hospital-c co-signs hospital-a's log (old key)
        while not _cosigned_by(log_a, "hospital-c"):
            assert time.monotonic() < deadline, "hospital-c never co-signed"
            time.sleep(0.2)
        before = load_manifest(cluster.manifest_path)
        old_key = load_signing_key(load_node(cluster.dirs["hospital-c"]))
        _rotate(cluster, "hospital-c", "--signing", "hospital-c rotates its signing key")
        _wait_for_manifest(cluster, before.hash)
        new_key = load_signing_key(load_node(cluster.dirs["hospital-c"]))
        manifest = load_manifest(cluster.manifest_path)
        assert manifest.parties[2].signing_key == key_text(new_key) != key_text(old_key)
        assert manifest.parties[2].tls_fingerprint == before.parties[2].tls_fingerprint

        assert _count(cluster, clients) == 9  # approvals and peer requests: the new key
        entries = clients["hospital-c"]["admin"].request("GET", "/audit/entries")
        handover = [e for e in entries if e["kind"] == ROTATED]
        assert [(e["body"]["old_key"], e["body"]["new_key"]) for e in handover] == [
            (key_text(old_key), key_text(new_key))]
        assert any(e["kind"] == "run_end" for e in entries if e["index"] > handover[0]["index"])
        for name in NAMES:  # each node checks its whole log, old entries included
            checked = clients[name]["admin"].request("GET", "/audit/verify")
            assert checked["verified"], checked
        log_c = cluster.dirs["hospital-c"] / "audit.sqlite"
        current = {p.name: p.signing_key for p in manifest.parties}
        assert verify_log(log_c, current) == len(entries)
        # hospital-a's log holds hospital-c's co-signatures under its old key: they
        # verify up to the amendment in hospital-a's own log that retired that key
        assert verify_log(log_a, current, own_amendments=True) > 0
        with pytest.raises(AuditError, match="bad co-signature from 'hospital-c'"):
            verify_log(log_a, current)
        # a request signed by the old key is refused (and is an incident); the new one is not
        refused = _peer_request(cluster, "hospital-c", "hospital-a", old_key)
        assert refused.status_code == 403, refused.text
        assert "not signed by that node" in refused.json()["message"]
        assert _peer_request(cluster, "hospital-c", "hospital-a", new_key).status_code == 200
        incidents = clients["hospital-a"]["admin"].request("GET", "/incidents")
        assert any(i["kind"] == "bad_signature" and "hospital-c" in i["peers"]
                   for i in incidents), incidents
    finally:
        cluster.close()
