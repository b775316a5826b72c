"""A real node process: HTTPS with its pinned certificate, the CLI as its client,
graceful shutdown, and the common mistakes."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from concilium.cli import app
from concilium.errors import ConfigurationError
from concilium.governance.consortium import Manifest, add_party, save_manifest
from concilium.governance.identity import create_node
from concilium.node.client import NodeClient
from concilium.node.service import spawn
from tests.helpers_tls import free_port

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def _wait_until_up(node_dir: Path, process: subprocess.Popen) -> None:
    client = NodeClient(node_dir, None)
    deadline = time.monotonic() + 30
    try:
        while True:
            try:
                client.request("GET", "/health")
                return
            except ConfigurationError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(process.stderr.read() if process.stderr else "") from None
                time.sleep(0.1)
    finally:
        client.close()


@pytest.fixture
def running_node(tmp_path: Path) -> Iterator[tuple]:
    node_dir = tmp_path / "hospital-a"
    manifest = Manifest("hospitals", "rep3")
    for name in ("hospital-a", "hospital-b", "hospital-c"):  # b and c are not started
        identity = create_node(tmp_path / name, name, f"127.0.0.1:{free_port()}",
                               f"127.0.0.1:{free_port()}")
        manifest = add_party(manifest, identity, ("data_owner", "compute") if name ==
                             "hospital-a" else ("compute",))
    save_manifest(manifest, tmp_path / "consortium.toml")
    tokens = {}
    for name, role in (("root", "admin"), ("dr-lee", "analyst"), ("officer-1", "approver"),
                       ("ministry", "recipient")):
        made = runner.invoke(app, ["user", "add", str(node_dir), name, "--role", role])
        assert made.exit_code == 0, made.output
        tokens[name] = made.output.strip()
    process = spawn(node_dir, tmp_path / "consortium.toml", quiet=False)
    try:
        _wait_until_up(node_dir, process)
        yield node_dir, tokens, process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _cli(*arguments: str, token: str | None = None) -> object:
    env = {"CONCILIUM_TOKEN": token} if token else {}
    return runner.invoke(app, list(arguments), env=env)


def test_a_node_serves_the_cli_over_pinned_https_and_stops_gracefully(
        running_node: tuple, tmp_path: Path) -> None:
    node_dir, tokens, process = running_node
    node = ["--node", str(node_dir)]
    pd.DataFrame({"age": [30, 40, 50], "condition": ["asthma", "copd", "copd"]}).to_csv(
        tmp_path / "admissions.csv", index=False)
    (tmp_path / "schema.toml").write_text(
        '[columns.age]\ntype = "int"\nlow = 0\nhigh = 120\n'
        '[columns.condition]\ntype = "category"\ndomain = ["asthma", "copd"]\n')
    added = _cli("dataset", "add", "admissions", str(tmp_path / "admissions.csv"), "--schema",
                 str(tmp_path / "schema.toml"), *node, token=tokens["root"])
    assert added.exit_code == 0 and "3 rows checked" in added.output
    proposed = _cli("propose", "SELECT condition, COUNT(*) FROM admissions GROUP BY condition",
                    "--dataset", "admissions", "--recipient", "hospital-a", *node,
                    token=tokens["dr-lee"])
    assert proposed.exit_code == 0, proposed.output
    identifier = proposed.stdout.strip()
    assert len(identifier) == 64
    approved = _cli("approve", identifier, "--comment", "ok", *node, token=tokens["officer-1"])
    assert approved.exit_code == 0 and "approved" in approved.output
    shown = _cli("status", *node, token=tokens["dr-lee"])
    # approved by the only owner; the run waits for the compute parties b and c
    assert shown.exit_code == 0 and identifier[:12] in shown.output and "running" in (
        shown.output)
    pending = _cli("result", identifier, *node, token=tokens["ministry"])
    assert pending.exit_code == 2 and "no result yet" in pending.output
    # common mistakes: a wrong token, a role that may not act, an unknown dataset
    wrong = _cli("status", *node, token="not-a-token")
    assert wrong.exit_code == 2 and "unknown API token" in wrong.output
    refused = _cli("approve", identifier, *node, token=tokens["dr-lee"])
    assert refused.exit_code == 2 and "may not approve" in refused.output
    unknown = _cli("propose", "SELECT COUNT(*) FROM patients", "--dataset", "patients",
                   "--recipient", "hospital-a", *node, token=tokens["dr-lee"])
    assert unknown.exit_code == 2 and "holds a dataset 'patients'" in unknown.output
    nobody = _cli("propose", "SELECT COUNT(*) FROM admissions", "--dataset", "admissions",
                  "--recipient", "ministry", *node, token=tokens["dr-lee"])
    assert nobody.exit_code == 2 and "'ministry' is not a party" in nobody.output
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=20) == 0
    assert "stopped" in process.stderr.read()
    down = _cli("status", *node, token=tokens["dr-lee"])
    assert down.exit_code == 2 and "no node is answering" in down.output
