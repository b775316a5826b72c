"""Incidents: a forged or stale peer request, a refused MPC certificate or connection,
a refused frame, an abort and a budget refusal each show in the audit log, in
``GET /incidents`` (admins and approvers only) and in ``concilium incidents``."""

from __future__ import annotations

import datetime
import socket
import ssl
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from typer.testing import CliRunner

from concilium import errors
from concilium.errors import BadFrame, BudgetExhausted, PeerUnavailable, ProtocolAbort
from concilium.governance.audit import AuditLog
from concilium.governance.audit_events import Incident, event_from_entry
from concilium.governance.budget import Ledger
from concilium.governance.identity import load_signing_key
from concilium.governance.spec import canonical_json
from concilium.governance.users import UserStore
from concilium.net.tls import TlsIdentity, TlsSettings
from concilium.net.tls_channel import TlsChannel
from concilium.node import incidents, jobs, privacy, service
from concilium.node.context import NodeContext
from concilium.node.control import _message
from concilium.node.launcher import endpoints
from concilium.node.store import NodeStore
from tests.helpers_tls import make_consortium
from tests.test_node_api import SCHEMA, Node, _peer_post, make_node

QUERY = "SELECT condition, COUNT(*) AS n FROM admissions GROUP BY condition"


@pytest.fixture
def node(tmp_path: Path, signing_consortium: tuple) -> Node:
    return make_node(tmp_path, signing_consortium)


def _incident_bodies(log: AuditLog) -> list[dict[str, Any]]:
    found = [e for e in log.entries() if e.kind == "incident"]
    for entry in found:
        assert isinstance(event_from_entry(entry.kind, entry.body), Incident)
    return [e.body for e in found]


def _propose(node: Node, rules: dict[str, Any] | None = None) -> str:
    """hospital-a's admissions (only it holds them) and one proposal on them."""
    registered = node.call("POST", "/datasets", "root", json={
        "name": "admissions", "path": str(node.root / "admissions.csv"), "schema": SCHEMA,
        **({"rules": rules} if rules else {})})
    assert registered.status_code == 201, registered.text
    proposal = node.call("POST", "/computations", "dr-lee", json={
        "query": QUERY, "datasets": ["admissions"], "recipients": ["hospital-a"]})
    assert proposal.status_code == 201, proposal.text
    return str(proposal.json()["id"])


class _Client:
    """The CLI's node client, over the in-process app."""

    def __init__(self, node: Node, user: str) -> None:
        self.node, self.user = node, user

    def request(self, method: str, path: str, **options: Any) -> Any:
        response = self.node.call(method, path, self.user, **options)
        if response.status_code >= 400:
            raise getattr(errors, response.json()["error"])(response.json()["message"])
        return response.json()


def test_a_forged_peer_request_is_an_incident_in_the_api_and_the_cli(
        node: Node, monkeypatch: pytest.MonkeyPatch) -> None:
    body = {"node": "hospital-b", "datasets": []}
    forged = _peer_post(node, "hospital-b", "/peer/catalog", body, signer="hospital-c")
    assert forged.status_code == 403 and "not signed by that node" in forged.json()["message"]
    assert _incident_bodies(node.context.audit) == [{
        "kind": "bad_signature", "peers": ["hospital-b"], "computation_id": None,
        "reason": "POST /peer/catalog: a peer request claiming to come from 'hospital-b' is "
                  "not signed by that node (from 127.0.0.1)"}]
    # an unsigned request naming a node outside the manifest: its name is not logged
    stranger = node.call("POST", "/peer/catalog", content=b"{}", headers={
        "X-Concilium-Node": "mallory<script>", "X-Concilium-Time": "2030-01-01T00:00:00"})
    assert stranger.status_code == 403
    last = _incident_bodies(node.context.audit)[-1]
    assert last["kind"] == "bad_signature" and last["peers"] == []
    assert "mallory" not in last["reason"] and "not in the manifest" in last["reason"]
    # a well-signed request from ten minutes ago
    old = (datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=10)).isoformat(
        timespec="seconds")
    data = canonical_json(body)
    stale = node.call("POST", "/peer/catalog", content=data, headers={
        "X-Concilium-Node": "hospital-b", "X-Concilium-Time": old,
        "X-Concilium-Signature": node.keys["hospital-b"].sign(
            _message("POST", "/peer/catalog", old, data)).hex()})
    assert stale.status_code == 403 and "too old" in stale.json()["message"]
    assert _incident_bodies(node.context.audit)[-1]["kind"] == "stale_request"
    # a correctly signed request is no incident
    assert _peer_post(node, "hospital-b", "/peer/catalog", body).status_code == 200
    assert len(_incident_bodies(node.context.audit)) == 3

    shown = node.call("GET", "/incidents", "officer-1")
    assert shown.status_code == 200
    rows = shown.json()
    assert [r["kind"] for r in rows] == ["stale_request", "bad_signature", "bad_signature"]
    entries = node.context.audit.entries()
    assert rows[-1] == {"entry": entries[0].index, "time": entries[0].time,
                        "kind": "bad_signature", "source": "incident",
                        "reason": entries[0].body["reason"], "peers": ["hospital-b"],
                        "computation": None}
    assert [r["entry"] for r in rows] == sorted((r["entry"] for r in rows), reverse=True)
    assert node.call("GET", "/incidents", "root").status_code == 200
    refused = node.call("GET", "/incidents", "dr-lee")
    assert refused.status_code == 403 and "may not read audit" in refused.json()["message"]
    assert node.call("GET", "/incidents").status_code == 401
    assert "/incidents" in node.call("GET", "/openapi.json").json()["paths"]

    from concilium.cli import app
    from concilium.cli import incidents as cli_incidents

    runner = CliRunner()
    monkeypatch.setattr(cli_incidents, "node_client",
                        lambda directory, token: _Client(node, token))
    table = runner.invoke(app, ["incidents", "--node", str(node.root), "--token", "root"])
    assert table.exit_code == 0, table.output
    assert "3 incident(s), newest first" in table.output
    assert table.output.count("bad_signature") == 2 and "stale_request" in table.output
    only = runner.invoke(app, ["incidents", "--node", str(node.root), "--token", "root",
                               "--kind", "stale_request"])
    assert "bad_signature" not in only.output and "stale_request" in only.output
    denied = runner.invoke(app, ["incidents", "--node", str(node.root), "--token", "dr-lee"])
    assert denied.exit_code == 2 and "may not" in denied.output
    assert "Traceback" not in denied.output


def test_a_flood_of_forged_requests_is_rate_limited_in_the_log(
        node: Node, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(incidents, "LIMIT", 3)
    monkeypatch.setattr(incidents, "WINDOW", 0.5)
    body = {"node": "hospital-b", "datasets": []}
    for _ in range(7):
        assert _peer_post(node, "hospital-b", "/peer/catalog", body,
                          signer="hospital-c").status_code == 403
    assert len(_incident_bodies(node.context.audit)) == 3
    time.sleep(0.6)
    _peer_post(node, "hospital-b", "/peer/catalog", body, signer="hospital-c")
    bodies = _incident_bodies(node.context.audit)
    assert len(bodies) == 4
    assert "(4 more bad_signature incident(s) in the last 0.5 s were not recorded)" in (
        bodies[-1]["reason"])


def test_an_abort_and_a_budget_refusal_are_incidents(node: Node) -> None:
    node.context.ledger = Ledger(node.root / "budget.sqlite")
    identifier = _propose(node, {"policy": {"dp": {"rho": 0.3}},
                                 "budget": {"rho": 0.5, "unit": "row"}})
    spec = node.context.store.computation(identifier).spec
    assert privacy.charge_run(node.context, spec) == ["admissions"]
    with pytest.raises(BudgetExhausted):
        privacy.charge_run(node.context, spec)
    # the node stops during a run: on start-up the run is failed and aborted
    node.context.store.update(identifier, status="running")
    assert service.interrupted(node.context) == [identifier]
    rows = node.call("GET", "/incidents", "root").json()
    assert [(r["kind"], r["source"], r["computation"]) for r in rows] == [
        ("abort", "abort", identifier), ("budget_refusal", "refusal", identifier)]
    assert rows[0]["reason"] == "NodeRestarted: the node stopped during the run"
    assert rows[1]["reason"].startswith("BudgetExhausted: ")


def test_a_run_refused_at_its_set_up_or_after_its_end_is_an_incident(
        node: Node, monkeypatch: pytest.MonkeyPatch) -> None:
    identifier = _propose(node)
    context = node.context
    context.run_jobs = True

    def refused(*_: Any) -> TlsChannel:
        raise BadFrame("party 1 (hospital-b) presented a certificate that is not the one "
                       "pinned in the manifest")

    monkeypatch.setattr(jobs, "_connect", refused)
    jobs._job(context, identifier)
    assert context.store.computation(identifier).status == "failed"
    [first] = _incident_bodies(context.audit)
    assert first == {"kind": "refused_certificate", "peers": ["hospital-b"],
                     "computation_id": identifier,
                     "reason": "BadFrame: party 1 (hospital-b) presented a certificate that "
                               "is not the one pinned in the manifest"}
    # frames a channel refused, and a failure no abort entry records
    channel = SimpleNamespace(refused_frames=[(2, "party 2 sent a frame of another session")])
    jobs._incidents(context, identifier, channel,  # type: ignore[arg-type]
                    ProtocolAbort("the messages party 0 exchanged with party 1 differ "
                                  "between the two ends; the result is discarded"))
    frame, failed = _incident_bodies(context.audit)[1:]
    assert (frame["kind"], frame["peers"]) == ("refused_frame", ["hospital-c"])
    assert (failed["kind"], failed["peers"]) == ("run_failed", ["hospital-b"])
    # a failure the runner logged as an abort is not recorded twice
    context.store.update(identifier, status="running")
    service.interrupted(context)
    jobs._incidents(context, identifier, None, ProtocolAbort("party 1 went away"))
    assert len(_incident_bodies(context.audit)) == 3
    kinds = [r["kind"] for r in node.call("GET", "/incidents", "root").json()]
    assert kinds == ["abort", "run_failed", "refused_frame", "refused_certificate"]


class _NoArrivals:
    def get(self, timeout: float) -> None:
        time.sleep(min(timeout, 0.1))


def test_the_standing_listener_records_refused_certificates_and_connections(
        tmp_path: Path) -> None:
    consortium = make_consortium(tmp_path)
    stranger = make_consortium(tmp_path / "other", names=("mallory",), name="other")
    me = consortium.nodes[2]
    context = NodeContext(
        name=me.name, key=load_signing_key(me), store=NodeStore(tmp_path / "state.sqlite"),
        users=UserStore(tmp_path / "users.sqlite"),
        audit=AuditLog(tmp_path / "audit.sqlite", me.name, load_signing_key(me)),
        audit_path=tmp_path / "audit.sqlite", manifest=consortium.manifest, identity=me,
        tls_settings=TlsSettings(startup_timeout=3, handshake_timeout=2))
    listener = service.mpc_listener(context)
    try:
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        tls.check_hostname, tls.verify_mode = False, ssl.CERT_NONE
        tls.load_cert_chain(str(stranger.nodes[0].tls_certificate_path),
                            str(stranger.nodes[0].tls_key_path))
        raw = socket.create_connection(("127.0.0.1", listener.port))
        try:
            with tls.wrap_socket(raw) as wrapped:
                wrapped.sendall(b"x")
                wrapped.recv(1)
        except (ssl.SSLError, OSError):
            pass
        # a party of the manifest asks for a computation this node does not run
        unknown = bytes([9]) * 32
        bravo = consortium.nodes[1]
        with pytest.raises(PeerUnavailable):
            TlsChannel.connect(1, endpoints(consortium.manifest),
                               TlsIdentity(bravo.tls_certificate_path, bravo.tls_key_path),
                               bytes.fromhex(consortium.manifest.hash), unknown,
                               TlsSettings(startup_timeout=3, handshake_timeout=2),
                               arrivals=_NoArrivals())
        deadline = time.monotonic() + 10
        while len(_incident_bodies(context.audit)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        listener.close()
    bodies = sorted(_incident_bodies(context.audit), key=lambda b: b["kind"])
    assert [(b["kind"], b["peers"], b["computation_id"]) for b in bodies] == [
        ("refused_certificate", [], None), ("refused_connection", ["bravo"], unknown.hex())]
    assert "CERTIFICATE_VERIFY_FAILED" in bodies[0]["reason"]
    assert "which this node does not run" in bodies[1]["reason"]
    rows = incidents.incidents(context)
    assert {r["kind"] for r in rows} == {"refused_certificate", "refused_connection"}
    context.audit.close()
    context.store.close()
    context.users.close()
