"""The node's HTTP API, in process over httpx's ASGI transport, with exact JSON."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from concilium.governance.approval import ApprovalPolicy, sign_approval
from concilium.governance.audit import AuditLog
from concilium.governance.users import UserStore
from concilium.node.api import NodeContext, create_app
from concilium.node.store import NodeStore

SCHEMA = {"age": {"type": "int", "low": 0, "high": 120},
          "condition": {"type": "category", "domain": ["asthma", "copd"]}}
QUERY = "SELECT condition, COUNT(*) AS n FROM admissions GROUP BY condition"


class Node:
    """One node's API with its users, called through httpx in process."""

    def __init__(self, root: Path, consortium: tuple) -> None:
        manifest, keys, _ = consortium
        self.root = root
        self.users = UserStore(root / "users.sqlite")
        self.tokens = {name: self.users.add_user(name, role) for name, role in (
            ("root", "admin"), ("dr-lee", "analyst"), ("officer-1", "approver"),
            ("ministry", "recipient"))}
        self.context = NodeContext(
            name="hospital-a", key=keys["hospital-a"], store=NodeStore(root / "state.sqlite"),
            users=self.users, audit=AuditLog(root / "audit.sqlite", "hospital-a",
                                             keys["hospital-a"]),
            audit_path=root / "audit.sqlite", manifest=manifest,
            approval_policies={"admissions": ApprovalPolicy("admissions", "hospital-a")},
            run_jobs=False)
        self.keys = keys
        self.app = create_app(self.context)

    def call(self, method: str, path: str, user: str | None = None,
             **options: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.tokens[user]}"} if user else {}
        headers.update(options.pop("headers", {}))

        async def send() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://node") as client:
                return await client.request(method, path, headers=headers, **options)

        return asyncio.run(send())


@pytest.fixture
def node(tmp_path: Path, signing_consortium: tuple) -> Node:
    pd.DataFrame({"age": [30, 40, 50], "condition": ["asthma", "copd", "copd"]}).to_csv(
        tmp_path / "admissions.csv", index=False)
    return Node(tmp_path, signing_consortium)


def _peer_post(node: Node, sender: str, path: str, body: dict,
               signer: str | None = None) -> httpx.Response:
    """A request from another node, signed as the control plane signs it."""
    import datetime

    from concilium.governance.spec import canonical_json
    from concilium.node.control import _message

    data = canonical_json(body)
    time = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    signature = node.keys[signer or sender].sign(_message("POST", path, time, data)).hex()
    return node.call("POST", path, content=data, headers={
        "Content-Type": "application/json", "X-Concilium-Node": sender,
        "X-Concilium-Time": time, "X-Concilium-Signature": signature})


def _register(node: Node) -> httpx.Response:
    return node.call("POST", "/datasets", "root", json={
        "name": "admissions", "path": str(node.root / "admissions.csv"), "schema": SCHEMA})


def test_health_and_openapi_need_no_token(node: Node, signing_consortium: tuple) -> None:
    response = node.call("GET", "/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "node": "hospital-a",
                               "consortium": signing_consortium[0].hash}
    paths = node.call("GET", "/openapi.json").json()["paths"]
    assert {"/datasets", "/computations", "/computations/{identifier}/approve",
            "/audit/verify"} <= set(paths)


def test_tokens_and_roles_are_required(node: Node) -> None:
    assert node.call("GET", "/datasets").json() == {
        "error": "AccessDenied",
        "message": "send your API token as 'Authorization: Bearer <token>'"}
    assert node.call("GET", "/datasets").status_code == 401
    wrong = node.call("GET", "/datasets", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.json()["message"] == "unknown API token"
    refused = node.call("POST", "/datasets", "dr-lee", json={})
    assert refused.status_code == 403
    assert refused.json() == {"error": "AccessDenied", "message": "'dr-lee' (analyst) may not "
                              "register dataset; that needs the role admin"}


def test_datasets_show_schemas_only(node: Node) -> None:
    assert _register(node).json() == {"name": "admissions", "rows": 3}
    assert node.call("GET", "/datasets", "dr-lee").json() == [
        {"name": "admissions", "rows": 3, "schema": SCHEMA}]
    bad = node.call("POST", "/datasets", "root", json={
        "name": "broken", "path": str(node.root / "missing.csv"), "schema": SCHEMA})
    assert bad.status_code == 400 and "no file" in bad.json()["message"]


def test_propose_approve_and_audit(node: Node) -> None:
    _register(node)
    proposal = node.call("POST", "/computations", "dr-lee", json={
        "query": QUERY, "datasets": ["admissions"], "recipients": ["hospital-a"]})
    assert proposal.status_code == 201
    identifier = proposal.json()["id"]
    assert proposal.json() == {"id": identifier, "status": "proposed"}
    assert node.call("GET", "/computations", "officer-1").json() == [
        {"id": identifier, "status": "proposed", "progress": 0.0, "analyst": "dr-lee",
         "query": QUERY}]
    approval = node.call("POST", f"/computations/{identifier}/approve", "officer-1",
                         json={"comment": "fine"}).json()
    assert {k: approval[k] for k in ("computation_id", "decision", "approver", "node",
                                     "comment")} == {
        "computation_id": identifier, "decision": "approve", "approver": "officer-1",
        "node": "hospital-a", "comment": "fine"}
    shown = node.call("GET", f"/computations/{identifier}", "dr-lee").json()
    assert shown["status"] == "proposed" and len(shown["approvals"]) == 1  # 1 of 3 owners
    # the other owners' approvals arrive from their nodes, signed by those nodes
    spec = node.context.store.computation(identifier).spec
    for peer in ("hospital-b", "hospital-c"):
        theirs = sign_approval(spec, "approve", "officer-9", peer, node.keys[peer])
        arrived = _peer_post(node, peer, "/peer/approvals", theirs.as_dict())
        assert arrived.status_code == 201 and arrived.json() == {"id": identifier, "from": peer}
    assert node.call("GET", f"/computations/{identifier}", "dr-lee").json()[
        "status"] == "approved"
    forged = sign_approval(spec, "approve", "officer-9", "hospital-b", node.keys["hospital-c"])
    refused = _peer_post(node, "hospital-b", "/peer/approvals", forged.as_dict())
    assert refused.status_code == 409 and "forged" in refused.json()["message"]
    impostor = _peer_post(node, "hospital-b", "/peer/approvals", forged.as_dict(),
                          signer="hospital-c")
    assert impostor.status_code == 403 and "not signed by that node" in impostor.json()[
        "message"]
    assert node.call("GET", f"/computations/{identifier}/result", "ministry").status_code == 409
    kinds = [e["kind"] for e in node.call("GET", "/audit/entries", "root").json()]
    assert kinds == ["dataset_registered", "proposal", "approval", "approval", "approval"]
    assert node.call("GET", "/audit/verify", "officer-1").json() == {"entries": 5,
                                                                     "verified": True}


def test_common_mistakes_get_clear_errors(node: Node) -> None:
    _register(node)
    unknown = node.call("POST", "/computations", "dr-lee", json={
        "query": QUERY, "datasets": ["patients"], "recipients": ["ministry"]})
    assert unknown.status_code == 404
    assert unknown.json() == {"error": "NotFound", "message": "this node has no dataset "
                              "'patients'"}
    star = node.call("POST", "/computations", "dr-lee", json={
        "query": "SELECT * FROM admissions", "datasets": ["admissions"],
        "recipients": ["ministry"]})
    assert star.status_code == 422 and star.json()["error"] == "UnsupportedQuery"
    missing = node.call("GET", "/computations/" + "0" * 64, "dr-lee")
    assert missing.status_code == 404
    rejected = node.call("POST", "/computations", "dr-lee", json={
        "query": QUERY, "datasets": ["admissions"], "recipients": ["ministry"]}).json()["id"]
    node.call("POST", f"/computations/{rejected}/reject", "officer-1", json={})
    assert node.call("GET", f"/computations/{rejected}", "dr-lee").json()["status"] == "refused"
