"""Datasets and their privacy budgets at a node, and ``explain``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from concilium.cli.common import (
    NodeOption,
    TokenOption,
    app,
    budget_app,
    console,
    dataset_app,
    friendly,
    model_app,
    node_client,
    policy_text,
    print_rules,
    read_toml,
)

SCHEMA_HELP = """
\b
The schema is TOML with one \\[columns.NAME] section per column of the file:
  max_rows = 1000000        # optional: the most rows this table holds here
  \\[columns.patient_id]
  type = "key"              # int, fixed, bool, category or key
  unique = true             # keys only: each value once
  \\[columns.age]
  type = "int"
  low = 0                   # public bounds, checked on every row
  high = 120
  \\[columns.cost]
  type = "fixed"            # reals, 16 fractional bits
  decimals = 2              # optional: values in cents, sums exact to the cent
  nullable = true
  usage = ["aggregate"]     # of filter, group, aggregate, join
  \\[columns.condition]
  type = "category"
  domain = ["asthma", "copd", "sepsis"]
  \\[columns.ssn]
  usage = "ignore"          # in the file, dropped on load
A column of the file that the schema does not list is refused.
"""

POLICY_HELP = """
\b
The policy is TOML (the dataset's rules; every computation on it must meet them):
  \\[policy]
  min_cohort = 10                       # a released cell needs 10 rows
  allowed_aggregates = ["count", "avg"] # e.g. no MIN or MAX
  metrics_only = true
  \\[approval]
  required = 2                          # approvers at this node per use
"""


@dataset_app.command("add", help="Register a dataset: every row is checked against the "
                                 "schema; nothing is shared.\n" + SCHEMA_HELP + POLICY_HELP)
def dataset_add(
    name: Annotated[str, typer.Argument(help="Dataset name")],
    file: Annotated[Path, typer.Argument(help="CSV or Parquet file on this node's host")],
    schema: Annotated[Path, typer.Option(help="TOML file of the columns (see above)")],
    node: NodeOption, token: TokenOption = None,
    policy: Annotated[Path | None, typer.Option(
        help="TOML file of the dataset's output policy and approval rule (see above)")] = None,
    file_format: Annotated[str | None, typer.Option(
        "--format", help="csv or parquet (default: parquet for a .parquet file, else csv); "
                         "stored with the dataset")] = None,
) -> None:
    with friendly():
        columns = read_toml(schema, "schema")
        rules = read_toml(policy, "policy") if policy is not None else {}
        kind = file_format or ("parquet" if file.suffix == ".parquet" else "csv")
        answer = node_client(node, token).request("POST", "/datasets", json={
            "name": name, "path": str(file.resolve()), "format": kind,
            "schema": columns, "rules": rules})
    console.print(f"registered {answer['name']}: {answer['rows']} rows checked", highlight=False)
    print_rules(answer["rules"])


@model_app.command("add", help="Register a model file on this (vendor) node: parsed and "
                               "checked (ONNX operators against the whitelist); its numbers "
                               "stay here, proposals carry its hash and public shape.")
def model_add(
    file: Annotated[Path, typer.Argument(help="An .onnx file or a Concilium .json model")],
    node: NodeOption, token: TokenOption = None,
) -> None:
    with friendly():
        answer = node_client(node, token).request("POST", "/models",
                                                  json={"path": str(file.resolve())})
    console.print(f"registered {answer['file']}: sha256 {answer['sha256']}", highlight=False)
    shape = {k: v for k, v in answer["shape"].items() if k != "node_features"}
    console.print(f"public shape: {shape}", highlight=False, markup=False)


@dataset_app.command("policy", help="Change a dataset's output policy and approval rule "
                                    "(admins; the change is in the audit log and sent to "
                                    "every node).\n" + POLICY_HELP)
def dataset_policy(
    name: Annotated[str, typer.Argument(help="Dataset name")],
    policy: Annotated[Path, typer.Option(help="TOML file (see above)")],
    node: NodeOption, token: TokenOption = None,
) -> None:
    with friendly():
        answer = node_client(node, token).request("PUT", f"/datasets/{name}/rules",
                                              json={"rules": read_toml(policy, "policy")})
    console.print(f"{answer['name']}: rules changed", highlight=False)
    print_rules(answer["rules"])


@dataset_app.command("list")
def dataset_list(node: NodeOption, token: TokenOption = None) -> None:
    """The datasets of the consortium as this node knows them: who holds what."""
    with friendly():
        entries = node_client(node, token).request("GET", "/catalog")
    table = Table("dataset", "node", "columns", "policy", "approvals")
    for entry in entries:
        rules = entry["rules"]
        table.add_row(entry["dataset"], entry["node"], ", ".join(entry["schema"]),
                      policy_text(rules["policy"]), str(rules["approval"]["required"]))
    console.print(table)


@budget_app.command("show")
def budget_show(dataset: Annotated[str, typer.Argument(help="Dataset name")],
                node: NodeOption, token: TokenOption = None,
                json_output: Annotated[bool, typer.Option("--json")] = False) -> None:
    """A dataset's privacy budget at its owner node: spent, left, and every charge."""
    with friendly():
        answer = node_client(node, token).request("GET", f"/datasets/{dataset}/budget")
    if json_output:
        console.print_json(json.dumps(answer))
        return
    budget = answer["budget"]
    console.print(f"{dataset}: budget rho={budget['rho']:g} per {budget['unit']} "
                  f"(epsilon {answer['total_epsilon']:.3g} at delta {answer['delta']:g}); "
                  f"spent rho={answer['spent_rho']:.6g}, left rho={answer['left_rho']:.6g} "
                  f"(epsilon {answer['left_epsilon']:.3g})", highlight=False)
    if "warning" in answer:
        console.print(f"warning: {answer['warning']}", highlight=False)
    table = Table("time", "computation", "analyst", "rho", "state")
    for charge in answer["charges"]:
        table.add_row(charge["time"][:19], charge["computation"][:16], charge["analyst"],
                      f"{charge['rho']:g}", charge["state"])
    console.print(table)




@app.command()
def explain(
    sql: Annotated[str, typer.Argument(help="The SQL query")],
    catalog: Annotated[Path, typer.Option(help="TOML file with the tables' schemas and "
                                               "owners")],
    policy: Annotated[Path | None, typer.Option(help="TOML output policy (with dp: the "
                                                     "noise and its cost)")] = None,
) -> None:
    """Print what a query runs where, what is shared and what is revealed to whom."""
    from concilium.governance.policy import OutputPolicy, load_policy
    from concilium.query.catalog import load_catalog
    from concilium.query.explain import explain as explain_plan
    from concilium.query.planner import plan_query

    with friendly():
        tables = load_catalog(catalog)
        rules = load_policy(policy) if policy is not None else OutputPolicy()
        plan = plan_query(sql, tables.tables, policy=rules)
        console.print(explain_plan(plan, tables.names), highlight=False, markup=False)


