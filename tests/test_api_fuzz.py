"""The node's HTTP API fuzzed with schemathesis against real node processes.

Three ``concilium node start`` processes (HTTPS through uvicorn, SQLite, peers that
answer) hold a dataset, a computation waiting for approvals, a refused one and a
completed one. Every operation of hospital-a's OpenAPI document is called with
generated requests (schemathesis, valid and invalid ones; the request bodies are
fuzzed by the shapes the handlers read, see :func:`_document`) and each of: the
generated ``Authorization`` header, none, a wrong token, a revoked user's token, and
the valid tokens of the admin, the analyst and the approver. Path parameters are
often the real dataset and computations, so refusals are tried on things that exist.

After every request: no 5xx; a refused one (4xx) changed nothing the node keeps
(datasets, computations, approvals, the catalog, the audit log, the users: read from
its SQLite files) except the one documented case, an automatic refusal that the
node records; a refusal is the API's JSON error. After every endpoint the node
still answers and its log shows no traceback. Wrong tokens come from other loopback
addresses than the valid ones, so the rate limiter locks those out (429) during the
run while the valid users keep working. ``CONCILIUM_API_EXAMPLES`` scales the number
of generated requests (default 20 per endpoint, 3x for those with a body).
"""

from __future__ import annotations

import collections
import json
import os
import secrets
import sqlite3
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from requests.adapters import HTTPAdapter
from schemathesis import GenerationMode

from concilium.governance.identity import load_node
from concilium.governance.users import UserStore
from concilium.node.cluster import LocalCluster

pytestmark = pytest.mark.slow

NAMES = ("hospital-a", "hospital-b", "hospital-c")
TARGET = NAMES[0]
EXAMPLES = int(os.environ.get("CONCILIUM_API_EXAMPLES", "20"))
SCHEMA = {"age": {"type": "int", "low": 0, "high": 120},
          "condition": {"type": "category", "domain": ["asthma", "copd"]}}
QUERIES = ("SELECT COUNT(*) AS n FROM admissions",
           "SELECT condition, COUNT(*) AS n FROM admissions GROUP BY condition",
           "SELECT AVG(age) AS mean_age FROM admissions WHERE condition = 'copd'",
           "SELECT MEDIAN(age) AS m, MAX(age) AS top FROM admissions")
#: every operation of the OpenAPI document (a test keeps this list complete)
OPERATIONS = (
    "GET /health", "GET /datasets", "POST /datasets", "PUT /datasets/{name}/rules",
    "GET /datasets/{name}/budget", "POST /models",
    "GET /catalog", "POST /computations", "GET /computations", "GET /outbox",
    "GET /computations/{identifier}", "POST /computations/{identifier}/approve",
    "POST /computations/{identifier}/reject", "POST /computations/{identifier}/retry",
    "GET /computations/{identifier}/result", "GET /audit/entries",
    "GET /audit/checkpoints", "GET /audit/verify", "GET /audit/witnessed", "GET /incidents",
    "GET /consortium", "GET /consortium/amendments", "POST /consortium/amendments",
    "POST /consortium/amendments/{identifier}/approve")
VALID = ("admin", "analyst", "approver")
REFUSED = ("generated", "none", "wrong", "revoked")  # callers sent from STRANGERS
#: the addresses that send wrong tokens (valid users call from 127.0.0.1)
STRANGERS = tuple(f"127.0.0.{k}" for k in range(2, 10))


class _Pinned(HTTPAdapter):
    """HTTPS to one node as :class:`concilium.node.client.NodeClient` does it (its own
    certificate is the only trust anchor), from a chosen loopback address."""

    def __init__(self, certificate: Path, source: str) -> None:
        self.tls = ssl.create_default_context(cafile=str(certificate))
        self.tls.check_hostname = False
        self.source = source
        super().__init__()

    def init_poolmanager(self, *args: Any, **options: Any) -> None:
        options.update(ssl_context=self.tls, source_address=(self.source, 0),
                       assert_hostname=False)
        super().init_poolmanager(*args, **options)


class Target:
    """hospital-a of a running cluster: its URL, sessions per source address, the
    things that exist on it, and what every request got."""

    def __init__(self, cluster: LocalCluster, root: Path) -> None:
        self.cluster, self.root = cluster, root
        self.directory = cluster.dirs[TARGET]
        identity = load_node(self.directory)
        self.url = f"https://{identity.api_address}"
        self.sessions: dict[str, requests.Session] = {}
        for address in ("127.0.0.1", *STRANGERS):
            session = requests.Session()
            session.mount("https://", _Pinned(identity.tls_certificate_path, address))
            self.sessions[address] = session
        self.tokens = dict(cluster.tokens[TARGET])
        users = UserStore(self.directory / "users.sqlite")  # the node reads it per request
        try:
            self.tokens["revoked"] = users.add_user("former-analyst", "analyst")
            users.revoke("former-analyst")
        finally:
            users.close()
        self.computations: dict[str, str] = {}
        self.outcomes: collections.Counter[tuple[str, str, int]] = collections.Counter()

    def close(self) -> None:
        for session in self.sessions.values():
            session.close()

    def get(self, path: str, role: str = "admin") -> requests.Response:
        return self.sessions["127.0.0.1"].get(
            self.url + path, headers={"Authorization": f"Bearer {self.tokens[role]}"},
            timeout=30)

    def state(self) -> dict[str, list[tuple[Any, ...]]]:
        """What the node keeps, read from its SQLite files (not what background work
        changes: the audit checkpoints, the outbox, catalog receipt times)."""
        tables = {
            "state.sqlite": {
                "datasets": "SELECT * FROM datasets ORDER BY name",
                "computations": "SELECT id, status, progress, result, error FROM "
                                "computations ORDER BY id",
                "approvals": "SELECT * FROM approvals ORDER BY computation, approver, node, "
                             "body",
                "catalog": "SELECT node, dataset, entry FROM catalog ORDER BY node, dataset"},
            "audit.sqlite": {"audit": "SELECT position, kind, hash FROM entries ORDER BY "
                                      "position"},
            "users.sqlite": {"users": "SELECT * FROM users ORDER BY name"}}
        snapshot = {}
        for file, queries in tables.items():
            connection = sqlite3.connect(f"file:{self.directory / file}?mode=ro", uri=True,
                                         timeout=10)
            try:
                for name, query in queries.items():
                    snapshot[name] = connection.execute(query).fetchall()
            finally:
                connection.close()
        return snapshot

    def log(self) -> str:
        return (self.directory / "node.log").read_text(errors="replace")


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    root = tmp_path_factory.mktemp("api-fuzz")
    cluster = LocalCluster(root, NAMES)
    try:
        frames = {name: pd.DataFrame({"age": [30 + 3 * k + i for k in range(12)],
                                      "condition": ["asthma", "copd", "copd"] * 4})
                  for i, name in enumerate(NAMES)}
        cluster.register("admissions", frames, SCHEMA)
        frames[TARGET].to_parquet(root / "admissions.parquet")
        (root / "not-a-table.bin").write_bytes(secrets.token_bytes(256))
        target = Target(cluster, root)
        completed = cluster.propose_and_approve(QUERIES[0])
        cluster.wait([completed])
        refused = cluster.propose(QUERIES[1])
        cluster.client("hospital-b", "approver").request(
            "POST", f"/computations/{refused}/reject", json={"comment": "not now"})
        waiting = cluster.propose(QUERIES[2])
        target.computations = {"completed": completed, "refused": refused,
                               "waiting": waiting}
        yield target
        target.close()
    finally:
        cluster.close()


def _any_of(values: list[Any], kind: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [{"enum": values}, kind]}


def _document(target: Target, document: dict[str, Any]) -> dict[str, Any]:
    """The node's OpenAPI document with the request bodies it takes as free-form JSON
    described by the fields the handlers read (a dataset's registration, rules, a
    proposal's policy), and real values among the generated ones, so that generated
    requests reach the parsing of every field, valid or not."""
    names = {"type": "array", "items": {"type": "string"}, "maxItems": 3}
    policy = {"type": "object", "additionalProperties": False, "properties": {
        "min_cohort": {"type": "integer"}, "rounding": {"type": "number"},
        "allowed_aggregates": names, "allowed_columns": names, "allowed_recipients": names,
        "metrics_only": {"type": "boolean"},
        "dominance": {"type": "array", "items": {"type": "number"}, "minItems": 2,
                      "maxItems": 2}}}
    rules = {"type": "object", "additionalProperties": False, "properties": {
        "policy": policy, "approval": {"type": "object", "additionalProperties": False,
                                       "properties": {"required": {"type": "integer"}}}}}
    column = {"type": "object", "required": ["type"], "additionalProperties": False,
              "properties": {
                  "type": {"enum": ["int", "fixed", "bool", "category", "key"]},
                  "low": {"type": "number"}, "high": {"type": "number"},
                  "nullable": {"type": "boolean"}, "unique": {"type": "boolean"},
                  "domain": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
                  "usage": _any_of(["ignore"], {"type": "array", "maxItems": 4, "items": {
                      "enum": ["filter", "group", "aggregate", "join"]}}),
                  "decimals": {"type": "integer"}}}
    table = {"type": "object", "additionalProperties": False,
             "properties": {"age": column, "condition": column, "extra": column}}
    schema = {"anyOf": [table, {"type": "object", "required": ["columns"],
                                "additionalProperties": False, "properties": {
                                    "columns": table, "max_rows": {"type": "integer"}}}]}
    files = [str(target.root / f"{TARGET}-admissions.csv"),
             str(target.root / "admissions.parquet"), str(target.root / "not-a-table.bin"),
             str(target.root), str(target.root / "missing.csv")]
    bodies = {
        ("/datasets", "post"): {
            "type": "object", "required": ["name", "path", "schema"],
            "additionalProperties": False, "properties": {
                "name": {"enum": ["admissions", "admissions_copy", "second_copy"]},
                "path": {"enum": files}, "schema": schema,
                "format": {"enum": ["csv", "parquet"]}, "rules": rules}},
        ("/datasets/{name}/rules", "put"): {
            "type": "object", "required": ["rules"], "additionalProperties": False,
            "properties": {"rules": rules}},
        ("/computations", "post"): {
            "type": "object", "required": ["query", "datasets", "recipients"],
            "additionalProperties": False, "properties": {
                "query": {"enum": list(QUERIES)},
                "datasets": {"type": "array", "maxItems": 2, "items": {"enum": ["admissions"]}},
                "recipients": {"type": "array", "maxItems": 3, "items": {"enum": list(NAMES)}},
                "policy": policy}}}
    for (path, method), body in bodies.items():
        operation = document["paths"][path][method]
        operation["requestBody"]["content"]["application/json"]["schema"] = body
    return document


def _unchanged_but_refused(before: dict[str, Any], after: dict[str, Any]) -> bool:
    """Whether the only change is what the node records when it refuses a computation
    itself (an approval re-checked against rules that tightened, or a peer's
    refusal of a proposal): such computations now refused, with the automatic
    rejection, the proposal and refusal logged; nothing else."""
    if any(before[k] != after[k] for k in ("datasets", "users", "catalog")):
        return False
    old = {row[0]: row for row in before["computations"]}
    changed = [row for row in after["computations"] if old.get(row[0]) != row]
    audit = after["audit"]
    return (set(old) <= {row[0] for row in after["computations"]}
            and bool(changed) and all(row[1] == "refused" for row in changed)
            and audit[:len(before["audit"])] == before["audit"]
            and {row[1] for row in audit[len(before["audit"]):]} <= {
                "proposal", "approval", "refusal"}
            and set(before["approvals"]) <= set(after["approvals"]))


def _refusal_body(response: requests.Response) -> bool:
    """The API's error JSON (or FastAPI's own for a request that fails validation)."""
    try:
        body = response.json()
    except ValueError:
        return False
    return isinstance(body, dict) and (
        {"error", "message"} <= set(body) or (response.status_code == 422 and "detail" in body))


@pytest.fixture(scope="module")
def api(target: Target) -> schemathesis.BaseSchema:
    document = target.sessions["127.0.0.1"].get(target.url + "/openapi.json", timeout=30)
    assert document.status_code == 200
    return schemathesis.openapi.from_dict(_document(target, document.json()))


def test_every_documented_endpoint_is_fuzzed(api: schemathesis.BaseSchema) -> None:
    labels = {result.ok().label for result in api.get_all_operations()}
    assert labels == set(OPERATIONS)


@pytest.mark.parametrize("label", OPERATIONS)
def test_an_endpoint_refuses_bad_requests_cleanly(api: schemathesis.BaseSchema,
                                                  target: Target, label: str) -> None:
    operation = api[label.split(" ", 1)[1]][label.split(" ", 1)[0]]
    definition = operation.definition.raw
    modes = [operation.as_strategy(generation_mode=GenerationMode.POSITIVE)]
    if "requestBody" in definition or any(p.get("in") in ("query", "path")
                                          for p in definition.get("parameters", [])):
        modes.append(operation.as_strategy(generation_mode=GenerationMode.NEGATIVE))
    known = [*target.computations.values(), "admissions"]
    last = {"state": target.state()}

    @settings(max_examples=EXAMPLES * (3 if "requestBody" in definition else 1),
              deadline=None, suppress_health_check=list(HealthCheck))
    @given(case=st.one_of(modes), caller=st.sampled_from(REFUSED) | st.sampled_from(VALID),
           stranger=st.sampled_from(STRANGERS), real=st.none() | st.sampled_from(known))
    def fuzz(case: schemathesis.Case, caller: str, stranger: str, real: str | None) -> None:
        if real is not None and case.path_parameters:
            case.path_parameters = {key: real for key in case.path_parameters}
        headers = {k: v for k, v in (case.headers or {}).items()
                   if k.lower() != "authorization"}
        if caller == "generated":
            headers = dict(case.headers or {})
        elif caller == "wrong":
            headers["Authorization"] = f"Bearer {secrets.token_urlsafe(32)}"
        elif caller != "none":
            headers["Authorization"] = f"Bearer {target.tokens[caller]}"
        case.headers = headers
        address = "127.0.0.1" if caller in VALID else stranger
        before = last["state"]
        response = case.call(base_url=target.url, session=target.sessions[address],
                             timeout=60)
        status = response.status_code
        target.outcomes[(label, caller, status)] += 1
        last["state"] = after = target.state()
        what = (f"{caller} from {address}: {case.as_curl_command()}\n"
                f"-> {status} {response.text[:500]}")
        assert status < 500, what
        if caller in VALID:
            assert status != 429, what  # strangers' lock-outs do not reach valid users
        if status >= 400:
            assert _refusal_body(response), what
            assert before == after or _unchanged_but_refused(before, after), what
        if status == 429:
            assert response.json()["error"] == "TooManyAttempts", what

    fuzz()
    assert target.cluster.running(TARGET)
    assert target.get("/health").status_code == 200
    log = target.log()
    assert "Traceback" not in log, log[log.find("Traceback") - 2000:][:6000]


def test_wrong_tokens_are_rate_limited_per_address_on_a_real_node(target: Target) -> None:
    """Over real sockets: ten wrong tokens from one address lock it out (429, even with
    a valid token, logged), while other addresses are served."""
    address = "127.0.0.200"
    session = requests.Session()
    session.mount("https://", _Pinned(load_node(target.directory).tls_certificate_path,
                                      address))
    try:
        for _ in range(10):
            wrong = session.get(target.url + "/datasets", timeout=30,
                                headers={"Authorization": "Bearer guess"})
            assert wrong.status_code == 401, wrong.text
        locked = session.get(target.url + "/datasets", timeout=30, headers={
            "Authorization": f"Bearer {target.tokens['admin']}"})
        assert locked.status_code == 429 and locked.json()["error"] == "TooManyAttempts"
        assert target.get("/datasets").status_code == 200
        deadline = time.monotonic() + 10
        while f"locked out {address}" not in target.log() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert f"locked out {address}" in target.log()
    finally:
        session.close()


def test_unsigned_peer_requests_are_refused(target: Target) -> None:
    """The control plane's endpoints (left out of the OpenAPI document) refuse
    requests that are not signed by a member of the manifest, whatever they carry."""
    before = target.state()
    session = target.sessions[STRANGERS[0]]
    bodies = (b"", b"{}", b"not json", json.dumps({"id": "x" * 64}).encode(),
              secrets.token_bytes(64))
    forged = {"X-Concilium-Node": "hospital-b", "X-Concilium-Time": "2030-01-01T00:00:00",
              "X-Concilium-Signature": "00" * 64}
    for path in ("computations", "catalog", "approvals", "retry", "witness", "witnessed",
                 "amendments"):
        for body in bodies:
            for headers in ({}, forged, {**forged, "X-Concilium-Signature": "zz"},
                            {**forged, "X-Concilium-Node": "nobody"}):
                response = session.post(f"{target.url}/peer/{path}", data=body,
                                        headers=headers, timeout=30)
                assert response.status_code == 403, (path, body, headers, response.text)
                assert response.json()["error"] == "AccessDenied"
    after = target.state()
    # each refusal is an incident in the audit log (rate-limited), and nothing else
    added = after["audit"][len(before["audit"]):]
    assert after["audit"][:len(before["audit"])] == before["audit"]
    assert added and {row[1] for row in added} == {"incident"}
    assert {**after, "audit": before["audit"]} == before
