"""The node's metrics (``GET /metrics``, Prometheus text) and structured JSON logs:
the monitor role, the text format, the run counters read from the audit log (in
process, then at three real node processes as a run completes and another aborts,
the figures surviving a restart), and one JSON line per request without its token."""

from __future__ import annotations

import io
import json
import logging
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pandas as pd
import pytest
from prometheus_client.parser import text_string_to_metric_families

from concilium.governance import audit_events as events
from concilium.governance.identity import load_node
from concilium.node import logs
from concilium.node.cluster import LocalCluster
from tests.test_node_api import Node, make_node

NAMES = ("hospital-a", "hospital-b", "hospital-c")
SCHEMA = {"age": {"type": "int", "low": 0, "high": 120},
          "condition": {"type": "category", "domain": ["asthma", "copd"]}}
SQL = "SELECT condition, COUNT(*) AS n FROM admissions GROUP BY condition"

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    """Every sample of a scrape: (name, sorted labels) -> value."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
def node(tmp_path: Path, signing_consortium: tuple) -> Node:
    node = make_node(tmp_path, signing_consortium)
    node.tokens["watcher"] = node.users.add_user("watcher", "monitor")
    node.context.identity = load_node(signing_consortium[2].parent / "hospital-a")
    return node


# -- in process ---------------------------------------------------------------------

def test_metrics_need_the_monitor_or_admin_role(node: Node) -> None:
    assert node.call("GET", "/metrics").status_code == 401
    refused = node.call("GET", "/metrics", "dr-lee")
    assert refused.status_code == 403 and "read metrics" in refused.json()["message"]
    assert node.call("GET", "/metrics", "officer-1").status_code == 403
    for user in ("watcher", "root"):
        answer = node.call("GET", "/metrics", user)
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"].startswith("text/plain")
    assert "/metrics" not in node.call("GET", "/openapi.json").json()["paths"]
    # a monitor reads metrics (and /health), nothing else: not the audit log, and not
    # the computations, datasets, catalog, outbox or manifest either
    identifier = "ab" * 32  # refused before anything is looked up
    for path in ("/audit/entries", "/incidents", "/computations", f"/computations/{identifier}",
                 f"/computations/{identifier}/result", "/datasets", "/catalog", "/outbox",
                 "/consortium", "/consortium/amendments", "/datasets/admissions/budget"):
        refused = node.call("GET", path, "watcher")
        assert refused.status_code == 403, path
        assert refused.json()["message"] == (
            "'watcher' is a monitor: it reads /metrics and /health only"), path
        reader = "dr-lee" if path.endswith("/result") else "root"  # who may read it
        assert node.call("GET", path, reader).status_code != 403, path
    assert node.call("GET", "/health").status_code == 200


def test_the_text_parses_and_every_family_has_help(node: Node) -> None:
    text = node.call("GET", "/metrics", "watcher").text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name in ("concilium_node_info", "concilium_computations", "concilium_runs_started",
                 "concilium_runs_completed", "concilium_run_aborts", "concilium_run_refusals",
                 "concilium_run_bytes_sent", "concilium_run_rounds",
                 "concilium_run_duration_seconds",
                 "concilium_outbox_messages", "concilium_outbox_oldest_message_age_seconds",
                 "concilium_privacy_budget_rho", "concilium_privacy_budget_remaining_rho",
                 "concilium_tls_certificate_expiry_timestamp_seconds",
                 "concilium_tls_certificate_expires_in_seconds", "concilium_audit_entries",
                 "concilium_audit_cosigned_entries", "concilium_metrics_collection_errors"):
        assert name in families, name
        assert families[name].documentation, name
    samples = parse(text)
    assert value(samples, "concilium_metrics_collection_errors") == 0
    assert value(samples, "concilium_computations", status="completed") == 0
    # a certificate made today is valid for a long time yet
    assert value(samples, "concilium_tls_certificate_expires_in_seconds") > 86400 * 300
    assert value(samples, "concilium_node_info", node="hospital-a",
                 consortium=node.context.manifest.hash, protocol="rep3") == 1
    assert "Bearer" not in text and node.tokens["watcher"] not in text


def test_run_counters_follow_the_audit_log(node: Node) -> None:
    """Runs, aborts, bytes and durations as the audit log records them, read
    incrementally; a second app over the same state (a restart) counts the same."""
    from concilium.node.api import create_app

    audit = node.context.audit
    audit.append("run_start", events.RunStart("c1", 0, "rep3", {}).body(),
                 time=_at(0.0))
    audit.append("run_end", events.RunEnd("c1", 1200, [], 7).body(), time=_at(3.0))
    first = parse(node.call("GET", "/metrics", "watcher").text)
    assert value(first, "concilium_runs_started_total", protocol="rep3") == 1
    assert value(first, "concilium_runs_completed_total", protocol="rep3") == 1
    assert value(first, "concilium_run_bytes_sent_total", protocol="rep3") == 1200
    assert value(first, "concilium_run_rounds_total", protocol="rep3") == 7
    assert value(first, "concilium_run_duration_seconds_count", protocol="rep3") == 1
    assert value(first, "concilium_run_duration_seconds_sum", protocol="rep3") == 3.0
    assert value(first, "concilium_run_duration_seconds_bucket", protocol="rep3",
                 le="2.5") == 0
    assert value(first, "concilium_run_duration_seconds_bucket", protocol="rep3",
                 le="5.0") == 1
    audit.record(events.RunStart("c2", 0, "rep3", {}))
    audit.record(events.Abort("c2", "ProtocolAbort", "party 2 went silent"))
    audit.record(events.Abort("c3", "NodeRestarted", "the node stopped during the run"))
    audit.record(events.Refusal("c4", "PolicyViolation", "too small"))
    second = parse(node.call("GET", "/metrics", "watcher").text)
    assert value(second, "concilium_runs_started_total", protocol="rep3") == 2
    assert value(second, "concilium_runs_completed_total", protocol="rep3") == 1
    assert value(second, "concilium_run_aborts_total", reason="ProtocolAbort") == 1
    assert value(second, "concilium_run_aborts_total", reason="NodeRestarted") == 1
    assert value(second, "concilium_run_refusals_total", reason="PolicyViolation") == 1
    assert value(second, "concilium_audit_entries") == 6
    node.app = create_app(node.context)  # a restarted node: the same figures
    again = parse(node.call("GET", "/metrics", "watcher").text)
    assert {k: v for k, v in again.items() if "expires_in" not in k[0]} == {
        k: v for k, v in second.items() if "expires_in" not in k[0]}


def _at(seconds: float) -> object:
    import datetime

    return datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC) + datetime.timedelta(
        seconds=seconds)


def test_computations_budgets_and_outbox(node: Node, tmp_path: Path) -> None:
    from concilium.governance.budget import Ledger
    from concilium.node.outbox import Outbox

    node.context.ledger = Ledger(tmp_path / "budget.sqlite")
    rules = {"policy": {"dp": {"rho": 0.1}}, "budget": {"rho": 0.5}}
    registered = node.call("POST", "/datasets", "root", json={
        "name": "admissions", "path": str(node.root / "admissions.csv"), "schema": SCHEMA,
        "rules": rules})
    assert registered.status_code == 201, registered.text
    proposed = node.call("POST", "/computations", "dr-lee", json={
        "query": "SELECT COUNT(*) AS n FROM admissions", "datasets": ["admissions"],
        "recipients": ["hospital-a"]})
    assert proposed.status_code == 201, proposed.text
    node.context.outbox = Outbox(tmp_path / "outbox.sqlite")
    node.context.outbox.add("hospital-b", "/peer/approvals", b"{}", "ConnectError")
    samples = parse(node.call("GET", "/metrics", "watcher").text)
    assert value(samples, "concilium_computations", status="proposed") == 1
    assert value(samples, "concilium_privacy_budget_rho", dataset="admissions") == 0.5
    assert value(samples, "concilium_privacy_budget_remaining_rho", dataset="admissions") == 0.5
    assert value(samples, "concilium_outbox_messages", peer="hospital-b") == 1
    assert value(samples, "concilium_outbox_messages", peer="hospital-c") == 0
    assert value(samples, "concilium_outbox_oldest_message_age_seconds") >= 0


def test_a_request_is_one_json_line_without_its_token(node: Node) -> None:
    stream = io.StringIO()
    levels = {name: logging.getLogger(name).level for name in ("", "concilium")}
    handler = logs.configure("hospital-a", stream)
    logs.install(node.app, node.context)
    try:
        node.call("GET", "/metrics?debug=1", "watcher")
        node.call("GET", "/datasets", headers={"Authorization": "Bearer not-a-token"})
        logging.getLogger("concilium.node").warning("plain %s", "words")
    finally:
        logging.getLogger().removeHandler(handler)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    requests = [line for line in lines if line["event"] == "http_request"]
    assert len(requests) == 2, lines
    scrape, refused = requests
    assert {"time", "level", "event", "node", "method", "path", "status", "duration_ms",
            "user"} <= set(scrape)
    assert scrape["node"] == "hospital-a" and scrape["level"] == "info"
    assert (scrape["method"], scrape["path"], scrape["status"], scrape["user"]) == (
        "GET", "/metrics", 200, "watcher")
    assert scrape["duration_ms"] >= 0
    assert (refused["path"], refused["status"], refused["user"]) == ("/datasets", 401, None)
    plain = [line for line in lines if line["event"] == "log"]
    assert any(line["message"] == "plain words" and line["level"] == "warning"
               for line in plain)
    text = stream.getvalue()
    assert node.tokens["watcher"] not in text and "not-a-token" not in text
    assert "debug" not in text


# -- three node processes -----------------------------------------------------------

def _scraper(cluster: LocalCluster, name: str) -> httpx.Client:
    identity = load_node(cluster.dirs[name])
    tls = ssl.create_default_context(cafile=str(identity.tls_certificate_path))
    tls.check_hostname = False
    return httpx.Client(base_url=f"https://{identity.api_address}", verify=tls, timeout=30,
                        headers={"Authorization": f"Bearer {cluster.tokens[name]['monitor']}"})


def scrape(cluster: LocalCluster, name: str) -> Samples:
    with _scraper(cluster, name) as client:
        answer = client.get("/metrics")
        assert answer.status_code == 200, answer.text
        return parse(answer.text)


def _until(check: object, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.3)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    root = tmp_path_factory.mktemp("metrics-nodes")
    cluster = LocalCluster(root, NAMES, options=["--startup-timeout", "8",
                                                 "--peer-timeout", "5"])
    try:
        frames = {name: pd.DataFrame({"age": [30 + 3 * k + i for k in range(12)],
                                      "condition": ["asthma", "copd", "copd"] * 4})
                  for i, name in enumerate(NAMES)}
        cluster.register("admissions", frames, SCHEMA)
        yield cluster
    finally:
        cluster.close()


def test_counters_move_as_runs_complete_and_abort(cluster: LocalCluster) -> None:
    with _scraper(cluster, "hospital-a") as client:
        assert client.get("/metrics", headers={"Authorization": ""}).status_code == 401
        analyst = client.get("/metrics", headers={
            "Authorization": f"Bearer {cluster.tokens['hospital-a']['analyst']}"})
        assert analyst.status_code == 403
    before = scrape(cluster, "hospital-a")

    completed = cluster.propose_and_approve(SQL)
    cluster.wait([completed])
    after = scrape(cluster, "hospital-a")
    for name in ("concilium_runs_started_total", "concilium_runs_completed_total",
                 "concilium_run_duration_seconds_count"):
        assert value(after, name, protocol="rep3") == value(before, name, protocol="rep3") + 1
    for name in ("concilium_run_bytes_sent_total", "concilium_run_rounds_total"):
        assert value(after, name, protocol="rep3") > value(before, name, protocol="rep3")
    assert value(after, "concilium_run_duration_seconds_sum", protocol="rep3") > 0
    assert value(after, "concilium_computations", status="completed") == value(
        before, "concilium_computations", status="completed") + 1
    assert value(after, "concilium_audit_entries") > value(before, "concilium_audit_entries")
    _until(lambda: value(scrape(cluster, "hospital-c"), "concilium_runs_completed_total",
                         protocol="rep3") == 1)

    # an abort: hospital-b dies after approving; hospital-c dies in the middle of the
    # run (waiting for b) and is restarted; hospital-a fails it as c did
    aborted = cluster.propose(SQL)
    cluster.approve(aborted, ["hospital-b"])
    cluster.kill("hospital-b")
    cluster.approve(aborted, ["hospital-a", "hospital-c"])
    assert (cluster.status("hospital-c", aborted) or {}).get("status") == "running"
    cluster.kill("hospital-c")
    before_restart = (cluster.dirs["hospital-c"] / "node.log").stat().st_size
    cluster.options = (*cluster.options, "--log-format", "text")  # c's operator's choice
    cluster.start("hospital-c")
    restarted = scrape(cluster, "hospital-c")
    assert value(restarted, "concilium_run_aborts_total", reason="NodeRestarted") == 1
    assert value(restarted, "concilium_computations", status="failed") == 1
    # what the audit log holds survives the restart
    assert value(restarted, "concilium_runs_completed_total", protocol="rep3") == 1
    _until(lambda: value(scrape(cluster, "hospital-a"), "concilium_run_aborts_total",
                         reason="PeerFailed") == 1)
    final = scrape(cluster, "hospital-a")
    assert value(final, "concilium_computations", status="failed") == 1
    assert value(final, "concilium_runs_completed_total", protocol="rep3") == value(
        after, "concilium_runs_completed_total", protocol="rep3")
    assert value(final, "concilium_outbox_messages", peer="hospital-b") >= 1  # b is down

    # hospital-c restarted with --log-format text: plain lines, no JSON request log
    with open(cluster.dirs["hospital-c"] / "node.log") as log:
        log.seek(before_restart)
        plain = log.read().splitlines()
    assert any("node hospital-c serving https://" in line for line in plain)
    assert not [line for line in plain if line.startswith("{")]

    # the node's log: JSON lines, every request and run, no token
    text = (cluster.dirs["hospital-a"] / "node.log").read_text()
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    scrapes = [line for line in lines if line["event"] == "http_request"
               and line["path"] == "/metrics" and line["status"] == 200]
    assert scrapes and all(line["user"] == "monitor" for line in scrapes)
    kinds = {line["event"] for line in lines}
    assert {"run_start", "run_end", "run_abort", "http_request"} <= kinds
    ended = next(line for line in lines if line["event"] == "run_end")
    assert ended["computation"] == completed and ended["bytes_sent"] > 0
    assert ended["rounds"] > 0
    abort = next(line for line in lines if line["event"] == "run_abort")
    assert abort["computation"] == aborted and abort["reason"] == "PeerFailed"
    for token in cluster.tokens["hospital-a"].values():
        assert token not in text
