"""The concilium command: exact output lines, exit codes, and helpful errors."""

from __future__ import annotations

from pathlib import Path

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
