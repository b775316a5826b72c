"""The node's HTTP API, in process over httpx's ASGI transport, with exact JSON."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from concilium.governance.approval import sign_approval
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
            audit_path=root / "audit.sqlite", manifest=manifest, run_jobs=False,
            peer_timeout=2.0)
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


def make_node(root: Path, consortium: tuple) -> Node:
    """hospital-a's API in process, with an admissions file ready to register."""
    pd.DataFrame({"age": [30, 40, 50], "condition": ["asthma", "copd", "copd"]}).to_csv(
        root / "admissions.csv", index=False)
    return Node(root, consortium)


@pytest.fixture
def node(tmp_path: Path, signing_consortium: tuple) -> Node:
    return make_node(tmp_path, signing_consortium)


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


def test_repeated_failed_token_attempts_are_rate_limited_and_logged(
        node: Node, caplog: pytest.LogCaptureFixture) -> None:
    from concilium.node.api import FailedAttempts

    node.context.attempts = FailedAttempts(limit=3, window=60)
    for _ in range(3):
        wrong = node.call("GET", "/datasets", headers={"Authorization": "Bearer guess"})
        assert wrong.status_code == 401
    locked = node.call("GET", "/datasets", "root")  # even a valid token, from there
    assert locked.status_code == 429 and locked.json()["error"] == "TooManyAttempts"
    assert "too many failed token attempts from 127.0.0.1" in locked.json()["message"]
    assert sum(r.message.startswith("a failed token attempt") for r in caplog.records) == 3
    assert any("locked out 127.0.0.1" in r.message for r in caplog.records)

    async def elsewhere() -> httpx.Response:  # another address is not affected
        transport = httpx.ASGITransport(app=node.app, client=("10.0.0.9", 4000))
        async with httpx.AsyncClient(transport=transport, base_url="http://node") as client:
            return await client.get("/datasets", headers={
                "Authorization": f"Bearer {node.tokens['root']}"})

    assert asyncio.run(elsewhere()).status_code == 200


NO_RULES = {"policy": {"allowed_aggregates": None, "allowed_columns": None,
                       "allowed_recipients": None, "dominance": None, "metrics_only": False,
                       "min_cohort": 0, "rounding": None, "dp": None, "min_difference": 0},
            "approval": {"required": 1}}


def test_datasets_show_schemas_and_rules_only(node: Node) -> None:
    assert _register(node).json() == {"name": "admissions", "rows": 3, "rules": NO_RULES}
    assert node.call("GET", "/datasets", "dr-lee").json() == [
        {"name": "admissions", "rows": 3, "schema": {"columns": SCHEMA}, "rules": NO_RULES}]
    bad = node.call("POST", "/datasets", "root", json={
        "name": "broken", "path": str(node.root / "missing.csv"), "schema": SCHEMA})
    assert bad.status_code == 400 and "no file" in bad.json()["message"]


def test_an_admin_changes_a_datasets_rules_and_the_change_is_logged(node: Node) -> None:
    _register(node)
    rules = {"policy": {"min_cohort": 10}, "approval": {"required": 2}}
    refused = node.call("PUT", "/datasets/admissions/rules", "dr-lee", json={"rules": rules})
    assert refused.status_code == 403
    changed = node.call("PUT", "/datasets/admissions/rules", "root", json={"rules": rules})
    expected = {"policy": {**NO_RULES["policy"], "min_cohort": 10}, "approval": {"required": 2}}
    assert changed.json() == {"name": "admissions", "rules": expected}
    entry = node.call("GET", "/audit/entries", "root").json()[-1]
    assert entry["kind"] == "dataset_rules_changed"
    assert entry["body"] == {"dataset": "admissions", "by": "root", "before": NO_RULES,
                             "after": expected}
    typo = node.call("PUT", "/datasets/admissions/rules", "root",
                     json={"rules": {"policy": {"min_cohrt": 1}}})
    assert typo.status_code == 400 and "unknown policy settings" in typo.json()["message"]


def _publish(node: Node, peer: str, datasets: list[dict]) -> httpx.Response:
    """``peer`` publishes its catalog to the node, as its control plane does."""
    return _peer_post(node, peer, "/peer/catalog", {"node": peer, "datasets": datasets})


def _entry(peer: str, rules: dict | None = None) -> dict:
    return {"dataset": "admissions", "node": peer, "schema": {"columns": SCHEMA},
            "rules": rules or NO_RULES}


def test_the_catalog_holds_what_each_node_publishes_about_itself(node: Node) -> None:
    _register(node)
    answer = _publish(node, "hospital-b", [_entry("hospital-b")])
    assert answer.status_code == 200
    assert answer.json() == {"node": "hospital-a", "datasets": [_entry("hospital-a")]}
    assert node.call("GET", "/catalog", "dr-lee").json() == [_entry("hospital-a"),
                                                            _entry("hospital-b")]
    lying = _publish(node, "hospital-b", [_entry("hospital-c")])
    assert lying.status_code == 403 and "only its own datasets" in lying.json()["message"]


def test_propose_approve_and_audit(node: Node) -> None:
    _register(node)
    for peer in ("hospital-b", "hospital-c"):
        _publish(node, peer, [_entry(peer, {"policy": {"min_cohort": 3},
                                            "approval": {"required": 1}})])
    proposal = node.call("POST", "/computations", "dr-lee", json={
        "query": QUERY, "datasets": ["admissions"], "recipients": ["hospital-a"]})
    assert proposal.status_code == 201
    identifier = proposal.json()["id"]
    assert proposal.json() == {
        "id": identifier, "status": "proposed",
        "policy": {**NO_RULES["policy"], "min_cohort": 3},  # the owners' strictest
        "approvers": {"hospital-a": 1, "hospital-b": 1, "hospital-c": 1},
        "unreachable": ["hospital-b", "hospital-c"]}  # no peer processes in this test
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
    assert shown["pending"] == {"hospital-b": 1, "hospital-c": 1}
    assert "each owner of admissions (hospital-a (party 0), hospital-b (party 1), " \
           "hospital-c (party 2))" in shown["plan"]
    # the other owners' approvals arrive from their nodes, signed by those nodes
    spec = node.context.store.computation(identifier).spec
    for peer in ("hospital-b", "hospital-c"):
        theirs = sign_approval(spec, "approve", "officer-9", peer, node.keys[peer])
        arrived = _peer_post(node, peer, "/peer/approvals", theirs.as_dict())
        assert arrived.status_code == 201 and arrived.json() == {"id": identifier, "from": peer}
    shown = node.call("GET", f"/computations/{identifier}", "dr-lee").json()
    assert shown["status"] == "approved" and shown["pending"] == {}
    forged = sign_approval(spec, "approve", "officer-9", "hospital-b", node.keys["hospital-c"])
    refused = _peer_post(node, "hospital-b", "/peer/approvals", forged.as_dict())
    assert refused.status_code == 409 and "forged" in refused.json()["message"]
    impostor = _peer_post(node, "hospital-b", "/peer/approvals", forged.as_dict(),
                          signer="hospital-c")
    assert impostor.status_code == 403 and "not signed by that node" in impostor.json()[
        "message"]
    assert node.call("GET", f"/computations/{identifier}/result", "ministry").status_code == 409
    kinds = [e["kind"] for e in node.call("GET", "/audit/entries", "root").json()]
    # the impostor's request is an incident
    assert kinds == ["dataset_registered", "proposal", "approval", "approval", "approval",
                     "incident"]
    # no peer process answers in this test: the log is checked on its own
    assert node.call("GET", "/audit/verify", "officer-1").json() == {
        "entries": 6, "verified": True, "peers": [], "checkpoints": 0}


def test_common_mistakes_get_clear_errors_before_anyone_approves(node: Node) -> None:
    _register(node)
    unknown = node.call("POST", "/computations", "dr-lee", json={
        "query": QUERY, "datasets": ["patients"], "recipients": ["hospital-a"]})
    assert unknown.status_code == 400
    assert unknown.json() == {"error": "ConfigurationError", "message": "no node of the "
                              "consortium holds a dataset 'patients' (known: admissions); its "
                              "owner registers it with concilium dataset add"}
    star = node.call("POST", "/computations", "dr-lee", json={
        "query": "SELECT * FROM admissions", "datasets": ["admissions"],
        "recipients": ["hospital-a"]})
    assert star.status_code == 422 and star.json()["error"] == "UnsupportedQuery"
    nobody = node.call("POST", "/computations", "dr-lee", json={
        "query": QUERY, "datasets": ["admissions"], "recipients": ["ministry"]})
    assert nobody.status_code == 400 and nobody.json()["message"].startswith(
        "'ministry' is not a party of consortium 'hospitals'")
    typo = node.call("POST", "/computations", "dr-lee", json={
        "query": QUERY, "datasets": ["admissions"], "recipients": ["hospital-a"],
        "policy": {"min_cohrt": 5}})
    assert typo.status_code == 400 and "unknown policy settings" in typo.json()["message"]
    assert node.call("GET", "/computations", "dr-lee").json() == []  # nothing was proposed
    missing = node.call("GET", "/computations/" + "0" * 64, "dr-lee")
    assert missing.status_code == 404
    rejected = node.call("POST", "/computations", "dr-lee", json={
        "query": QUERY, "datasets": ["admissions"], "recipients": ["hospital-a"]}).json()["id"]
    node.call("POST", f"/computations/{rejected}/reject", "officer-1", json={})
    assert node.call("GET", f"/computations/{rejected}", "dr-lee").json()["status"] == "refused"


def test_a_datasets_format_is_stored_at_registration_whatever_the_files_name(
        node: Node) -> None:
    from concilium.node.control import load_dataset

    frame = pd.DataFrame({"age": [30, 40, 50, 60], "condition": ["asthma", "copd", "copd",
                                                                 "asthma"]})
    frame.to_parquet(node.root / "export.dat")  # a Parquet file without the suffix
    registered = node.call("POST", "/datasets", "root", json={
        "name": "admissions", "path": str(node.root / "export.dat"), "format": "parquet",
        "schema": SCHEMA})
    assert registered.status_code == 201 and registered.json()["rows"] == 4
    assert node.context.store.dataset("admissions").format == "parquet"
    loaded = load_dataset(node.context, "admissions")  # as the job reads it
    assert loaded.rows == 4
    entry = node.call("GET", "/audit/entries", "root").json()[-1]
    assert entry["kind"] == "dataset_registered" and entry["body"]["format"] == "parquet"
    wrong = node.call("POST", "/datasets", "root", json={
        "name": "other", "path": str(node.root / "export.dat"), "format": "xlsx",
        "schema": SCHEMA})
    assert wrong.status_code == 400 and "format must be one of csv, parquet" in \
        wrong.json()["message"]


def test_a_store_from_before_formats_were_stored_keeps_reading_its_files(
        tmp_path: Path) -> None:
    import sqlite3

    old = sqlite3.connect(tmp_path / "state.sqlite")
    old.execute("CREATE TABLE datasets (name TEXT PRIMARY KEY, schema TEXT NOT NULL, "
                "source TEXT NOT NULL, rows INTEGER NOT NULL, registered TEXT NOT NULL, "
                "rules TEXT NOT NULL DEFAULT '{}')")
    old.executemany("INSERT INTO datasets VALUES (?, '{}', ?, 3, 't', '{}')",
                    [("a", "/data/a.parquet"), ("b", "/data/b.csv")])
    old.commit()
    old.close()
    store = NodeStore(tmp_path / "state.sqlite")
    assert [(d.name, d.format) for d in store.datasets()] == [("a", "parquet"), ("b", "csv")]
    store.close()


def test_the_same_query_proposed_again_is_a_new_computation(node: Node) -> None:
    _register(node)
    for peer in ("hospital-b", "hospital-c"):
        _publish(node, peer, [_entry(peer)])
    body = {"query": QUERY, "datasets": ["admissions"], "recipients": ["hospital-a"]}
    first = node.call("POST", "/computations", "dr-lee", json=body).json()["id"]
    node.call("POST", f"/computations/{first}/reject", "officer-1", json={"comment": "no"})
    again = node.call("POST", "/computations", "dr-lee", json=body).json()
    assert again["id"] != first and again["status"] == "proposed"  # not the rejected one
    specs = [node.call("GET", f"/computations/{i}", "dr-lee").json()["spec"]
             for i in (first, again["id"])]
    assert specs[0]["query"] == specs[1]["query"] and specs[0]["nonce"] != specs[1]["nonce"]
