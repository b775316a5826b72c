"""The concilium command: exact output lines, exit codes, and helpful errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from concilium.cli import app
from concilium.governance.consortium import load_manifest
from tests.helpers_tls import free_port

runner = CliRunner()


def _init(directory: Path, name: str) -> None:
    result = runner.invoke(app, ["init", str(directory), "--name", name, "--mpc-address",
                                 f"127.0.0.1:{free_port()}"])
    assert result.exit_code == 0, result.output
    assert f"Created node {name} in {directory}" in result.output


def test_a_consortium_from_the_command_line(tmp_path: Path) -> None:
    manifest = tmp_path / "consortium.toml"
    for name in ("hospital-a", "hospital-b", "hospital-c"):
        _init(tmp_path / name, name)
    created = runner.invoke(app, ["consortium", "create", str(manifest), "--name", "hospitals"])
    assert created.exit_code == 0
    assert created.output.strip() == f"Created consortium hospitals (rep3) in {manifest}"
    first = runner.invoke(app, ["consortium", "add", str(manifest), str(tmp_path / "hospital-a")])
    assert "not ready yet: protocol rep3 needs 3 compute parties; the manifest has 1" in (
        first.output)
    for name in ("hospital-b", "hospital-c"):
        added = runner.invoke(app, ["consortium", "add", str(manifest), str(tmp_path / name),
                                    "--roles", "compute"])
        assert added.exit_code == 0
    shown = runner.invoke(app, ["consortium", "show", str(manifest)])
    assert shown.exit_code == 0
    assert f"manifest hash {load_manifest(manifest).hash}" in shown.output
    assert shown.output.rstrip().endswith("ready")


def test_common_mistakes_get_one_clear_line_and_status_2(tmp_path: Path) -> None:
    _init(tmp_path / "a", "hospital-a")
    cases = [
        (["init", str(tmp_path / "a"), "--name", "x", "--mpc-address", "127.0.0.1:9"],
         "already holds a node"),
        (["consortium", "show", str(tmp_path / "none.toml")], "no manifest at"),
        (["consortium", "add", str(tmp_path / "none.toml"), str(tmp_path / "a")],
         "no manifest at"),
        (["init", str(tmp_path / "b"), "--name", "b", "--mpc-address", "nowhere"],
         "is not of the form HOST:PORT"),
        (["node", "start", str(tmp_path / "a"), "--log-format", "xml"],
         "--log-format is json or text, not 'xml'"),
    ]
    for arguments, message in cases:
        result = runner.invoke(app, arguments)
        assert result.exit_code == 2, (arguments, result.output)
        assert message in result.output
        assert "Traceback" not in result.output
    runner.invoke(app, ["consortium", "create", str(tmp_path / "m.toml"), "--name", "x"])
    again = runner.invoke(app, ["consortium", "create", str(tmp_path / "m.toml"), "--name", "x"])
    assert again.exit_code == 2 and "refusing to overwrite" in again.output
    not_a_node = runner.invoke(app, ["consortium", "add", str(tmp_path / "m.toml"),
                                     str(tmp_path)])
    assert not_a_node.exit_code == 2 and "is not a node directory" in not_a_node.output


CATALOG = """
[tables.admissions]
owners = ["hospital-a", "hospital-b", "hospital-c"]

[tables.admissions.columns.age]
type = "int"
low = 0
high = 120

[tables.admissions.columns.condition]
type = "category"
domain = ["asthma", "copd"]
"""


def test_explain_prints_the_plan_and_refuses_unsupported_sql(tmp_path: Path) -> None:
    catalog = tmp_path / "tables.toml"
    catalog.write_text(CATALOG)
    result = runner.invoke(app, ["explain", "SELECT condition, AVG(age) FROM admissions "
                                 "WHERE age > 17 GROUP BY condition", "--catalog",
                                 str(catalog)])
    assert result.exit_code == 0, result.output
    assert "hospital-b (party 1)" in result.output and "WHERE age > 17" in result.output
    assert "Revealed" in result.output and "sum / count" in result.output
    refused = runner.invoke(app, ["explain", "SELECT * FROM admissions", "--catalog",
                                  str(catalog)])
    assert refused.exit_code == 2 and "SELECT * would reveal rows" in refused.output


def test_explain_shows_the_noise_and_its_cost_under_dp(tmp_path: Path) -> None:
    catalog, policy = tmp_path / "tables.toml", tmp_path / "policy.toml"
    catalog.write_text(CATALOG)
    policy.write_text("[policy]\ndp = { rho = 0.2 }\n")
    result = runner.invoke(app, ["explain", "SELECT condition, COUNT(*) AS n, AVG(age) AS a "
                                 "FROM admissions GROUP BY condition", "--catalog",
                                 str(catalog), "--policy", str(policy)])
    assert result.exit_code == 0, result.output
    assert "Skellam noise made on shares, rho=0.2 zCDP" in result.output
    assert "epsilon 3.1" in result.output  # 0.2-zCDP at delta 1e-6 (OpenDP)
    assert "rows: sensitivity 1" in result.output and "sum_0: sensitivity 120" in result.output
    assert "count_0: sensitivity" not in result.output  # age is never NULL: its count is rows
    refused = runner.invoke(app, ["explain", "SELECT MEDIAN(age) FROM admissions",
                                  "--catalog", str(catalog), "--policy", str(policy)])
    assert refused.exit_code == 2 and "only COUNT, SUM and AVG" in refused.output


def _consortium(tmp_path: Path) -> tuple[Path, list[Path]]:
    manifest, nodes = tmp_path / "consortium.toml", []
    runner.invoke(app, ["consortium", "create", str(manifest), "--name", "hospitals"])
    for name in ("hospital-a", "hospital-b", "hospital-c"):
        _init(tmp_path / name, name)
        added = runner.invoke(app, ["consortium", "add", str(manifest), str(tmp_path / name)])
        assert added.exit_code == 0, added.output
        nodes.append(tmp_path / name)
    return manifest, nodes


def test_launch_runs_a_program_on_three_processes_over_tls(tmp_path: Path) -> None:
    manifest, nodes = _consortium(tmp_path)
    weights = [1.0, 0.5, 2.0]
    result = runner.invoke(app, ["launch", str(manifest), *map(str, nodes),
                                 "--program", "tests.tls_programs:weighted_total",
                                 "--args", json.dumps({"weights": weights}),
                                 "--peer-timeout", "20"])
    assert result.exit_code == 0, result.output
    expected = float(np.array([7.5, 8.25, 6.0]) * weights @ np.array([42.0, 55.5, 61.25]))
    lines = result.output.strip().splitlines()
    assert [line.split(": ")[0] for line in lines] == ["hospital-a", "hospital-b", "hospital-c"]
    for line in lines:  # fixed point: within a few units of 2^-16 of the plaintext
        assert abs(float(line.split(": ")[1]) - expected) < 1e-3


def test_launch_reports_a_failing_program_on_every_party(tmp_path: Path) -> None:
    manifest, nodes = _consortium(tmp_path)
    result = runner.invoke(app, ["launch", str(manifest), *map(str, nodes),
                                 "--program", "tests.tls_programs:fail_on_party_two"])
    assert result.exit_code == 1
    assert "hospital-c: ValueError: party 2's program failed" in result.output
    assert "Traceback" not in result.output
    bad = runner.invoke(app, ["launch", str(manifest), *map(str, nodes),
                              "--program", "no_colon_here"])
    assert bad.exit_code == 2
    assert "must be given as package.module:function" in bad.output
