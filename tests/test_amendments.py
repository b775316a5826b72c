"""Manifest amendments: who must sign which change, and refusals (a missing member, a
forged signature, a stale base, a revocation that changes more than the revoked
party), in process; then between node processes: a member added by amendment takes
part in the next computation, and a removed member is refused."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from concilium.errors import ApprovalMissing, ConciliumError, ConfigurationError
from concilium.governance.amendments import (
    apply,
    classify,
    propose,
    required_signers,
    sign,
)
from concilium.governance.consortium import Manifest, add_party, load_manifest
from concilium.governance.identity import create_node, load_signing_key
from concilium.governance.proposal import DatasetEntry, build_spec, check_spec
from concilium.node.cluster import LocalCluster, free_port

NAMES = ("hospital-a", "hospital-b", "hospital-c")


def _newcomer(root: Path, name: str = "hospital-d") -> tuple[Any, Any]:
    node = create_node(root / name, name, f"127.0.0.1:{free_port()}",
                       f"127.0.0.1:{free_port()}")
    return node, load_signing_key(node)


def test_adding_a_member_needs_every_current_member(signing_consortium: tuple,
                                                    tmp_path: Path) -> None:
    manifest, keys, _ = signing_consortium
    node, _ = _newcomer(tmp_path)
    bigger = add_party(manifest, node, ("data_owner",))
    amendment = propose(manifest, bigger, "hospital-d joins", "hospital-a")
    assert classify(manifest, amendment).description == "add hospital-d"
    assert required_signers(manifest, amendment) == NAMES
    two = [sign(amendment, name, keys[name]) for name in NAMES[:2]]
    with pytest.raises(ApprovalMissing, match="still needs the signature of hospital-c"):
        apply(manifest, amendment, two)
    forged = sign(amendment, "hospital-c", keys["hospital-a"])
    with pytest.raises(ApprovalMissing, match=r"hospital-c.s signature on amendment .* forged"):
        apply(manifest, amendment, [*two, forged])
    applied = apply(manifest, amendment, [*two, sign(amendment, "hospital-c",
                                                     keys["hospital-c"])])
    assert applied == bigger and applied.hash != manifest.hash
    # a computation approved under the old manifest is for "another consortium" now
    catalog = [DatasetEntry("admissions", "hospital-a", {"columns": {
        "age": {"type": "int", "low": 0, "high": 100}}})]
    old = build_spec("SELECT COUNT(*) FROM admissions", ["admissions"], ["hospital-a"],
                     "dr-lee", manifest, catalog)
    with pytest.raises(ConfigurationError, match="another consortium"):
        check_spec(old, applied, "hospital-a", catalog)
    with pytest.raises(ApprovalMissing, match="not the current one"):
        apply(applied, amendment, [])


def test_a_rotation_is_signed_by_the_old_key_of_the_rotating_party(
        signing_consortium: tuple, tmp_path: Path) -> None:
    manifest, keys, _ = signing_consortium
    fresh, fresh_key = _newcomer(tmp_path, "hospital-b")  # new keys for hospital-b
    entry = manifest.parties[1]
    rotated = dataclasses.replace(manifest, parties=(
        manifest.parties[0], dataclasses.replace(
            entry, tls_fingerprint=fresh.tls_fingerprint,
            tls_certificate=fresh.tls_certificate_pem, signing_key=fresh.signing_public_key),
        manifest.parties[2]))
    amendment = propose(manifest, rotated, "yearly rotation", "hospital-b")
    change = classify(manifest, amendment)
    assert (change.kind, change.description) == (
        "rotation", "hospital-b rotates its TLS certificate and signing key")
    assert required_signers(manifest, amendment) == ("hospital-b",)
    with pytest.raises(ApprovalMissing, match="forged"):  # the new key is not trusted yet
        apply(manifest, amendment, [sign(amendment, "hospital-b", fresh_key)])
    assert apply(manifest, amendment, [sign(amendment, "hospital-b", keys["hospital-b"])]
                 ) == rotated


def test_a_compromised_key_is_revoked_by_the_other_members(signing_consortium: tuple,
                                                          tmp_path: Path) -> None:
    manifest, keys, _ = signing_consortium
    without = dataclasses.replace(manifest, parties=manifest.parties[:2])
    amendment = propose(manifest, without, "hospital-c's key leaked", "hospital-a",
                        revoke="hospital-c")
    assert required_signers(manifest, amendment) == ("hospital-a", "hospital-b")
    with pytest.raises(ApprovalMissing, match="hospital-b"):
        apply(manifest, amendment, [sign(amendment, "hospital-c", keys["hospital-c"]),
                                    sign(amendment, "hospital-a", keys["hospital-a"])])
    assert apply(manifest, amendment, [sign(amendment, n, keys[n]) for n in NAMES[:2]]
                 ) == without
    node, _ = _newcomer(tmp_path)
    sneaky = add_party(without, node, ("compute",))
    with pytest.raises(ConfigurationError, match="changes the revoked party only"):
        propose(manifest, sneaky, "revoke and add", "hospital-a", revoke="hospital-c")
    with pytest.raises(ConfigurationError, match="nothing to amend"):
        propose(manifest, manifest, "no-op", "hospital-a")


def test_changing_the_protocol_or_roles_is_a_membership_change(signing_consortium: tuple
                                                               ) -> None:
    manifest, _, _ = signing_consortium
    roles = dataclasses.replace(manifest, parties=(
        dataclasses.replace(manifest.parties[0], roles=("compute",)), *manifest.parties[1:]))
    amendment = propose(manifest, roles, "a stops owning data", "hospital-a")
    assert classify(manifest, amendment).kind == "membership"
    assert required_signers(manifest, amendment) == NAMES
    protocol = dataclasses.replace(manifest, protocol="rep4")
    assert "protocol" in classify(manifest, propose(manifest, protocol, "", "hospital-a")
                                  ).description


# -- between node processes --------------------------------------------------------------
SCHEMA = {"columns": {"age": {"type": "int", "low": 0, "high": 100}}}


def _admin(cluster: LocalCluster, name: str) -> Any:
    return cluster.client(name, "admin")


def _until(check: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def _amend(cluster: LocalCluster, new: Manifest, reason: str, signers: tuple[str, ...]) -> str:
    """Propose at the first signer, approve at the others; the amendment's id."""
    first, *others = signers
    answer = _admin(cluster, first).request("POST", "/consortium/amendments", json={
        "manifest": new.as_dict(), "reason": reason})
    for name in others:
        _admin(cluster, name).request("POST", f"/consortium/amendments/{answer['id']}/approve")
    return str(answer["id"])


def _count(cluster: LocalCluster, at: str, members: tuple[str, ...]) -> int:
    identifier = cluster.client(at, "analyst").request("POST", "/computations", json={
        "query": "SELECT COUNT(*) AS n FROM admissions", "datasets": ["admissions"],
        "recipients": [at]})["id"]
    cluster.approve(identifier, list(members))
    cluster.wait([identifier], timeout=120)
    return int(cluster.result(identifier, at)["rows"][0][0])


def test_a_member_added_by_amendment_takes_part_and_a_removed_one_is_refused(
        tmp_path: Path) -> None:
    cluster = LocalCluster(tmp_path / "c", NAMES)
    try:
        cluster.register("admissions", {n: pd.DataFrame({"age": [30, 40, 50]})
                                        for n in NAMES}, SCHEMA)
        manifest = load_manifest(cluster.manifest_path)
        joining = cluster.prepare("hospital-d", ("data_owner",))
        bigger = dataclasses.replace(manifest, parties=(*manifest.parties, joining))
        answer = _admin(cluster, "hospital-a").request("POST", "/consortium/amendments", json={
            "manifest": bigger.as_dict(), "reason": "hospital-d joins"})
        assert (answer["status"], answer["signed"], answer["required"]) == (
            "proposed", ["hospital-a"], list(NAMES))
        assert answer["change"] == "add hospital-d"
        with pytest.raises(ConciliumError, match="may not manage users"):
            cluster.client("hospital-b", "analyst").request(
                "POST", f"/consortium/amendments/{answer['id']}/approve")
        _admin(cluster, "hospital-b").request(
            "POST", f"/consortium/amendments/{answer['id'][:12]}/approve")
        # still one signature short: nothing changed anywhere
        assert _admin(cluster, "hospital-a").request("GET", "/consortium")["hash"] == \
            manifest.hash
        last = _admin(cluster, "hospital-c").request(
            "POST", f"/consortium/amendments/{answer['id']}/approve")
        assert last["status"] == "applied" and last["manifest"] == bigger.hash
        for name in NAMES:  # the last signature reached the others as a peer message
            _until(lambda n=name: _admin(cluster, n).request("GET", "/consortium")[
                "hash"] == bigger.hash)
        history = _admin(cluster, "hospital-b").request("GET", "/consortium/amendments")
        assert [(h["status"], h["signed"]) for h in history] == [("applied", list(NAMES))]
        kinds = [e["kind"] for e in _admin(cluster, "hospital-a").request(
            "GET", "/audit/entries")]
        assert "manifest_amended" in kinds
        cluster.start("hospital-d")
        cluster.register("admissions", {"hospital-d": pd.DataFrame({"age": [20, 21]})},
                         SCHEMA)
        _until(lambda: any(e["node"] == "hospital-d" for e in _admin(
            cluster, "hospital-a").request("GET", "/catalog")))
        assert _count(cluster, "hospital-a", (*NAMES, "hospital-d")) == 3 * 3 + 2  # d's rows
        _until(lambda: any(c["signer"] == "hospital-d" for c in _admin(
            cluster, "hospital-a").request("GET", "/audit/checkpoints")))
        # hospital-d leaves: every member of the amended manifest signs
        smaller = load_manifest(cluster.manifest_path)
        smaller = dataclasses.replace(smaller, parties=smaller.parties[:3])
        _amend(cluster, smaller, "hospital-d leaves", (*NAMES, "hospital-d"))
        for name in NAMES:
            _until(lambda n=name: _admin(cluster, n).request("GET", "/consortium")[
                "hash"] == smaller.hash)
        refused = _peer_request_from(cluster, "hospital-d", "hospital-a")
        assert refused.status_code == 403 and "hospital-d" in refused.text
        assert _count(cluster, "hospital-a", NAMES) == 3 * 3
        # hospital-d co-signed the members' logs while it was one: those co-signatures
        # (up to the amendment that removed it) still verify at every member
        for name in NAMES:
            checked = _admin(cluster, name).request("GET", "/audit/verify")
            assert checked["verified"], checked
    finally:
        cluster.close()


def _peer_request_from(cluster: LocalCluster, sender: str, target: str) -> Any:
    """A control-plane request signed by ``sender``'s node key, as its node sends them."""
    import datetime
    import ssl

    import httpx

    from concilium.governance.identity import load_node
    from concilium.governance.spec import canonical_json
    from concilium.node.control import _message

    key = load_signing_key(load_node(cluster.dirs[sender]))
    body = canonical_json({"amendment": {}})
    time_text = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    path = "/peer/catalog"
    signature = key.sign(_message("POST", path, time_text, body)).hex()
    target_node = load_node(cluster.dirs[target])
    pinned = ssl.create_default_context(cafile=str(target_node.tls_certificate_path))
    pinned.check_hostname = False  # the node's own certificate is the trust anchor
    with httpx.Client(verify=pinned) as client:
        return client.post(f"https://{target_node.api_address}{path}", content=body,
                           headers={"Content-Type": "application/json",
                                    "X-Concilium-Node": sender,
                                    "X-Concilium-Time": time_text,
                                    "X-Concilium-Signature": signature})
