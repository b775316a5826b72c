"""Three real node processes: propose, approve at every owner, run over TLS,
result at the recipient, audit logs that verify."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from concilium.cli import app
from concilium.errors import ConciliumError
from concilium.governance.audit_verify import verify_log
from concilium.governance.consortium import Manifest, add_party, save_manifest
from concilium.governance.identity import create_node
from concilium.node.client import NodeClient
from concilium.node.service import spawn, stop
from tests.helpers_tls import free_port
from tests.test_node_service import _wait_until_up

ROOT = Path(__file__).resolve().parents[1]
NAMES = ("hospital-a", "hospital-b", "hospital-c")
runner = CliRunner()
SCHEMA = ('[columns.condition]\ntype = "category"\ndomain = ["asthma", "copd", "sepsis"]\n'
          '[columns.readmitted]\ntype = "int"\nlow = 0\nhigh = 1\n')


@pytest.fixture
def three_nodes(tmp_path: Path) -> Iterator[tuple[list[Path], dict, Path, list]]:
    manifest = Manifest("hospitals", "rep3")
    dirs = []
    for name in NAMES:
        node = create_node(tmp_path / name, name, f"127.0.0.1:{free_port()}",
                           f"127.0.0.1:{free_port()}")
        manifest = add_party(manifest, node, ("data_owner", "compute"))
        dirs.append(tmp_path / name)
    save_manifest(manifest, tmp_path / "consortium.toml")
    tokens: dict[tuple[str, str], str] = {}
    for node_dir, name in zip(dirs, NAMES, strict=True):
        for user, role in (("root", "admin"), ("dr-lee", "analyst"), ("officer", "approver")):
            made = runner.invoke(app, ["user", "add", str(node_dir), user, "--role", role])
            tokens[(name, user)] = made.output.strip()
    processes = [spawn(d, tmp_path / "consortium.toml", quiet=False) for d in dirs]
    try:
        for node_dir, process in zip(dirs, processes, strict=True):
            _wait_until_up(node_dir, process)
        yield dirs, tokens, tmp_path / "consortium.toml", processes
    finally:
        stop(processes)


def _cli(arguments: list[str], token: str) -> object:
    return runner.invoke(app, arguments, env={"CONCILIUM_TOKEN": token})


def test_a_governed_computation_between_three_node_processes(three_nodes: tuple,
                                                            tmp_path: Path) -> None:
    dirs, tokens, manifest_path, _ = three_nodes
    (tmp_path / "schema.toml").write_text(SCHEMA)
    frames = []
    for k, (node_dir, name) in enumerate(zip(dirs, NAMES, strict=True)):
        rng = np.random.default_rng(k)
        frame = pd.DataFrame({"condition": rng.choice(["asthma", "copd"], 60),
                              "readmitted": (rng.random(60) < 0.3).astype(int)})
        frame.loc[:1, "condition"] = "sepsis" if k == 0 else frame.loc[:1, "condition"]
        frames.append(frame)
        frame.to_csv(tmp_path / f"{name}.csv", index=False)
        added = _cli(["dataset", "add", "admissions", str(tmp_path / f"{name}.csv"),
                      "--schema", str(tmp_path / "schema.toml"), "--node", str(node_dir)],
                     tokens[(name, "root")])
        assert added.exit_code == 0, added.output
    query = ("SELECT condition, COUNT(*) AS n, AVG(readmitted) AS rate FROM admissions "
             "GROUP BY condition ORDER BY condition")
    proposed = runner.invoke(app, ["propose", query, "--dataset", "admissions",
                                   "--recipient", "hospital-a", "--node", str(dirs[0])],
                             env={"CONCILIUM_TOKEN": tokens[("hospital-a", "dr-lee")]})
    assert proposed.exit_code == 0, proposed.output
    identifier = proposed.stdout.strip()
    for node_dir, name in zip(dirs, NAMES, strict=True):
        decided = _cli(["approve", identifier, "--node", str(node_dir)],
                       tokens[(name, "officer")])
        assert decided.exit_code == 0, decided.output
    followed = _cli(["status", identifier, "--wait", "--node", str(dirs[0])],
                    tokens[("hospital-a", "dr-lee")])
    assert followed.exit_code == 0 and "completed" in followed.output, followed.output
    client = NodeClient(dirs[0], tokens[("hospital-a", "dr-lee")])
    state = client.request("GET", f"/computations/{identifier}")
    assert state["status"] == "completed" and state["progress"] == 1.0, state
    checkpoints = NodeClient(dirs[1], tokens[("hospital-b", "root")]).request(
        "GET", "/audit/checkpoints")
    assert {c["signer"] for c in checkpoints} == {"hospital-a", "hospital-c"}
    result = client.request("GET", f"/computations/{identifier}/result")
    client.close()
    union = pd.concat(frames)
    expected = union.groupby("condition").agg(n=("readmitted", "size"),
                                              rate=("readmitted", "mean"))
    assert result["columns"] == ["condition", "n", "rate"]
    assert [row[0] for row in result["rows"]] == list(expected.index)
    assert [row[1] for row in result["rows"]] == list(expected["n"])
    assert np.allclose([row[2] for row in result["rows"]], expected["rate"], atol=1e-3)
    assert result["threat_model"]["protocol"] == "rep3"
    assert result["threat_model"]["corruptions"] == 1
    shown = _cli(["result", identifier, "--node", str(dirs[0]), "--format", "csv"],
                 tokens[("hospital-a", "dr-lee")])
    assert shown.exit_code == 0 and shown.stdout.splitlines()[0] == "condition,n,rate"
    assert "threat model: rep3: semi-honest, honest majority; 3 compute parties, " \
        "tolerates 1 corrupted" in shown.stderr
    for node_dir in dirs:
        verified = runner.invoke(app, ["audit", "verify", str(node_dir / "audit.sqlite"),
                                       "--manifest", str(manifest_path)])
        assert verified.exit_code == 0, verified.output
    assert verify_log(dirs[1] / "audit.sqlite") >= 7


def test_a_run_waits_for_every_owner_and_a_rejection_refuses_it(three_nodes: tuple,
                                                                tmp_path: Path) -> None:
    dirs, tokens, _, _ = three_nodes
    (tmp_path / "schema.toml").write_text(SCHEMA)
    for node_dir, name in zip(dirs, NAMES, strict=True):
        pd.DataFrame({"condition": ["asthma"] * 5, "readmitted": [0, 1, 0, 1, 1]}).to_csv(
            tmp_path / f"{name}.csv", index=False)
        _cli(["dataset", "add", "admissions", str(tmp_path / f"{name}.csv"), "--schema",
              str(tmp_path / "schema.toml"), "--node", str(node_dir)], tokens[(name, "root")])
    identifier = _cli(["propose", "SELECT COUNT(*) AS n FROM admissions", "--dataset",
                       "admissions", "--recipient", "hospital-a", "--node", str(dirs[0])],
                      tokens[("hospital-a", "dr-lee")]).stdout.strip()
    for node_dir, name in zip(dirs[:2], NAMES[:2], strict=True):
        _cli(["approve", identifier, "--node", str(node_dir)], tokens[(name, "officer")])
    time.sleep(1.0)
    client = NodeClient(dirs[0], tokens[("hospital-a", "dr-lee")])
    assert client.request("GET", f"/computations/{identifier}")["status"] == "proposed"
    refused = _cli(["reject", identifier, "--node", str(dirs[2]), "--comment", "no"],
                   tokens[("hospital-c", "officer")])
    assert refused.exit_code == 0
    deadline = time.monotonic() + 10
    while client.request("GET", f"/computations/{identifier}")["status"] != "refused":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    pending = _cli(["result", identifier, "--node", str(dirs[0])],
                   tokens[("hospital-a", "dr-lee")])
    assert pending.exit_code == 2 and "refused" in pending.output
    client.close()


def test_a_node_killed_mid_run_fails_the_run_everywhere_and_a_retry_succeeds(
        three_nodes: tuple, tmp_path: Path) -> None:
    dirs, tokens, manifest_path, processes = three_nodes
    (tmp_path / "schema.toml").write_text(SCHEMA)
    rng = np.random.default_rng(4)
    for node_dir, name in zip(dirs, NAMES, strict=True):
        pd.DataFrame({"condition": rng.choice(["asthma", "copd"], 40000),
                      "readmitted": rng.integers(0, 2, 40000)}).to_csv(
            tmp_path / f"{name}.csv", index=False)
        _cli(["dataset", "add", "admissions", str(tmp_path / f"{name}.csv"), "--schema",
              str(tmp_path / "schema.toml"), "--node", str(node_dir)], tokens[(name, "root")])
    # a median sorts all 120,000 rows: long enough to kill a node in the middle
    identifier = _cli(["propose", "SELECT MEDIAN(readmitted) AS m, COUNT(*) AS n "
                       "FROM admissions", "--dataset", "admissions", "--recipient",
                       "hospital-a", "--node", str(dirs[0])],
                      tokens[("hospital-a", "dr-lee")]).stdout.strip()
    for node_dir, name in zip(dirs, NAMES, strict=True):
        _cli(["approve", identifier, "--node", str(node_dir)], tokens[(name, "officer")])
    client = NodeClient(dirs[0], tokens[("hospital-a", "dr-lee")])

    def status() -> str:
        return str(client.request("GET", f"/computations/{identifier}")["status"])

    deadline = time.monotonic() + 30
    while status() != "running":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(0.5)
    processes[2].kill()  # hospital-c dies mid-run
    processes[2].wait()
    deadline = time.monotonic() + 60
    while status() not in ("failed", "completed"):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    shown = client.request("GET", f"/computations/{identifier}")
    assert shown["status"] == "failed"
    assert any(word in (shown["error"] or "") for word in ("PeerUnavailable", "ProtocolAbort"))
    other = NodeClient(dirs[1], tokens[("hospital-b", "dr-lee")])
    deadline = time.monotonic() + 60
    while other.request("GET", f"/computations/{identifier}")["status"] == "running":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert other.request("GET", f"/computations/{identifier}")["status"] == "failed"
    other.close()
    # hospital-c comes back with its state, its interrupted run marked failed; the
    # analyst retries
    processes[2] = spawn(dirs[2], manifest_path, quiet=False)
    _wait_until_up(dirs[2], processes[2])
    back = NodeClient(dirs[2], tokens[("hospital-c", "dr-lee")])
    shown = back.request("GET", f"/computations/{identifier}")
    back.close()
    assert shown["status"] == "failed" and "interrupted" in shown["error"]
    retried = _cli(["retry", identifier, "--node", str(dirs[0])],
                   tokens[("hospital-a", "dr-lee")])
    assert retried.exit_code == 0, retried.output
    deadline = time.monotonic() + 120
    while status() not in ("failed", "completed"):
        assert time.monotonic() < deadline
        time.sleep(0.3)
    assert status() == "completed", client.request("GET", f"/computations/{identifier}")["error"]
    result = client.request("GET", f"/computations/{identifier}/result")
    assert result["rows"][0][1] == 120000
    client.close()


def test_a_node_that_was_down_receives_what_it_missed_and_the_run_completes(
        three_nodes: tuple, tmp_path: Path) -> None:
    dirs, tokens, manifest_path, processes = three_nodes
    (tmp_path / "schema.toml").write_text(SCHEMA)
    frames = []
    for k, (node_dir, name) in enumerate(zip(dirs, NAMES, strict=True)):
        rng = np.random.default_rng(10 + k)
        frame = pd.DataFrame({"condition": rng.choice(["asthma", "copd", "sepsis"], 40),
                              "readmitted": rng.integers(0, 2, 40)})
        frame.to_csv(tmp_path / f"{name}.csv", index=False)
        frames.append(frame)
        _cli(["dataset", "add", "admissions", str(tmp_path / f"{name}.csv"), "--schema",
              str(tmp_path / "schema.toml"), "--node", str(node_dir)], tokens[(name, "root")])
    stop([processes[2]])  # hospital-c goes down
    sql = "SELECT condition, COUNT(*) AS n, SUM(readmitted) AS r FROM admissions " \
          "GROUP BY condition ORDER BY condition"
    identifier = _cli(["propose", sql, "--dataset", "admissions", "--recipient", "hospital-a",
                       "--node", str(dirs[0])], tokens[("hospital-a", "dr-lee")]).stdout.strip()
    for node_dir, name in zip(dirs[:2], NAMES[:2], strict=True):
        decided = _cli(["approve", identifier, "--node", str(node_dir)],
                       tokens[(name, "officer")])
        assert decided.exit_code == 0, decided.output
    listed = _cli(["status", "--node", str(dirs[0])], tokens[("hospital-a", "dr-lee")])
    assert "undelivered to" in listed.stdout and "hospital-c" in listed.stdout
    # hospital-c comes back: the proposal and both approvals reach it unasked
    processes[2] = spawn(dirs[2], manifest_path, quiet=False)
    _wait_until_up(dirs[2], processes[2])
    officer_c = NodeClient(dirs[2], tokens[("hospital-c", "officer")])
    deadline = time.monotonic() + 30
    while True:
        try:
            shown = officer_c.request("GET", f"/computations/{identifier}")
            if len(shown["approvals"]) == 2:
                break
        except ConciliumError:  # not there yet
            pass
        assert time.monotonic() < deadline, "the missed messages never arrived"
        time.sleep(0.2)
    officer_c.request("POST", f"/computations/{identifier}/approve", json={})
    officer_c.close()
    followed = _cli(["status", identifier, "--wait", "--node", str(dirs[0])],
                    tokens[("hospital-a", "dr-lee")])
    assert followed.exit_code == 0 and "completed" in followed.stdout, followed.output
    client = NodeClient(dirs[0], tokens[("hospital-a", "dr-lee")])
    result = client.request("GET", f"/computations/{identifier}/result")
    assert client.request("GET", "/outbox") == []
    client.close()
    expected = pd.concat(frames).groupby("condition").agg(n=("readmitted", "size"),
                                                          r=("readmitted", "sum"))
    assert [row[1] for row in result["rows"]] == expected["n"].tolist()
    assert [row[2] for row in result["rows"]] == expected["r"].tolist()
