"""Computations: ``propose``, ``approve``, ``reject``, ``retry``, ``status``, ``result``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from concilium.cli.common import (
    NodeOption,
    TokenOption,
    app,
    console,
    errors,
    friendly,
    node_client,
    policy_text,
    read_toml,
)
from concilium.errors import ConfigurationError


@app.command()
def propose(
    recipient: Annotated[list[str], typer.Option(help="Who receives the result")],
    node: NodeOption,
    sql: Annotated[str | None, typer.Argument(help="The SQL query")] = None,
    dataset: Annotated[list[str] | None, typer.Option(
        help="A dataset the query uses (with --evaluate: the one dataset scored)")] = None,
    token: TokenOption = None,
    policy: Annotated[Path | None, typer.Option(
        help="TOML file with a \\[policy] section: your own output policy, added to the "
             "owners' (it can only make it stricter)")] = None,
    evaluate: Annotated[Path | None, typer.Option(
        help="A model file (.onnx, or a Concilium .json model) to evaluate instead of a "
             "query: its hash and public shape go into the proposal; the vendor's node "
             "must hold the same file (concilium model add)")] = None,
    vendor: Annotated[str | None, typer.Option(help="With --evaluate: the vendor's node")] = None,
    features: Annotated[str | None, typer.Option(
        help="With --evaluate: the feature columns, comma-separated, in the model's order")
    ] = None,
    label: Annotated[str | None, typer.Option(help="With --evaluate: the label column")] = None,
    metric: Annotated[list[str] | None, typer.Option(
        help="With --evaluate: a metric to release (accuracy, precision, recall, f1, "
             "confusion_matrix, roc_auc, roc_curve, pr_auc, brier, log_loss, calibration; "
             "mse, mae, r2 for regressors)")] = None,
) -> None:
    """Propose a computation (a query, or with --evaluate a model evaluation); prints its
    id (what approvers approve). The node plans it first: SQL, models that do not fit
    the schema, policies, recipients and value ranges that cannot work are refused
    before anyone is asked to approve."""
    with friendly():
        rules = read_toml(policy, "policy") if policy is not None else {}
        body: dict[str, Any] = {"recipients": recipient, "policy": rules.get("policy", rules)}
        if evaluate is not None:
            body["evaluation"] = _evaluation(evaluate, vendor, dataset or [], features, label,
                                             metric or [])
        elif sql is None:
            raise ConfigurationError("give the SQL query, or --evaluate MODEL for a model "
                                     "evaluation")
        else:
            body.update(query=sql, datasets=dataset or [])
        answer = node_client(node, token).request("POST", "/computations", json=body)
    console.print(answer["id"], highlight=False)
    errors.print(f"effective policy: {policy_text(answer['policy'])}; approvers: "
                 + ", ".join(f"{n} ({k})" for n, k in sorted(answer["approvers"].items())),
                 highlight=False, markup=False)
    if answer.get("unreachable"):
        errors.print(f"not reached (they will not see it yet): "
                     f"{', '.join(answer['unreachable'])}", highlight=False)


def _evaluation(path: Path, vendor: str | None, datasets: list[str], features: str | None,
                label: str | None, metrics: list[str]) -> dict[str, Any]:
    """The proposal's evaluation: the model file's hash and shape (read here, on the
    proposer's machine; its numbers are not sent), and the job."""
    from concilium.evaluation.governed import model_digest
    from concilium.evaluation.model_files import load_model

    missing = [name for name, value in (("--vendor", vendor), ("--features", features),
                                        ("--label", label)) if not value]
    if missing or len(datasets) != 1 or not metrics:
        raise ConfigurationError("--evaluate needs --vendor, one --dataset, --features, "
                                 "--label and at least one --metric"
                                 + (f" (missing {', '.join(missing)})" if missing else ""))
    try:
        content = path.read_bytes()
    except OSError as error:
        raise ConfigurationError(f"cannot read the model {path}: {error}") from None
    model = load_model(content, path.name)
    assert features is not None
    return {"model": {"sha256": model_digest(content), "shape": model.shape()},
            "vendor": vendor, "dataset": datasets[0],
            "features": [f.strip() for f in features.split(",") if f.strip()],
            "label": label, "metrics": metrics, "task": model.task}


def _decide(identifier: str, decision: str, comment: str, node: Path,
            token: str | None) -> None:
    with friendly():
        node_client(node, token).request("POST", f"/computations/{identifier}/{decision}",
                                     json={"comment": comment})
    console.print(f"{decision}d {identifier[:16]}...", highlight=False)


@app.command()
def approve(identifier: Annotated[str, typer.Argument(help="Computation id")],
            node: NodeOption, token: TokenOption = None,
            comment: Annotated[str, typer.Option(help="Why")] = "") -> None:
    """Approve a computation (the node signs your decision)."""
    _decide(identifier, "approve", comment, node, token)


@app.command()
def reject(identifier: Annotated[str, typer.Argument(help="Computation id")],
           node: NodeOption, token: TokenOption = None,
           comment: Annotated[str, typer.Option(help="Why")] = "") -> None:
    """Reject a computation (the node signs your decision)."""
    _decide(identifier, "reject", comment, node, token)


@app.command()
def retry(identifier: Annotated[str, typer.Argument(help="Computation id")],
          node: NodeOption, token: TokenOption = None) -> None:
    """Run a failed computation again (every node restarts it)."""
    with friendly():
        answer = node_client(node, token).request("POST", f"/computations/{identifier}/retry")
    console.print(f"{identifier[:16]}... {answer['status']}", highlight=False)


@app.command()
def status(identifier: Annotated[str | None, typer.Argument(help="Computation id")] = None,
           *, node: NodeOption, token: TokenOption = None,
           wait: Annotated[bool, typer.Option(help="Follow one computation with a progress "
                                                   "bar until it ends; exit status 1 if it "
                                                   "failed or was refused")] = False) -> None:
    """Show computations; with an id, everything about one: the full SQL, the
    effective policy, the plan, approvals and pending approvers, the error."""
    with friendly():
        client = node_client(node, token)
        if identifier:
            if wait:
                _follow(client, identifier)
            shown = client.request("GET", f"/computations/{identifier}")
            _show(shown)
            if wait and shown["status"] in ("failed", "refused"):
                raise typer.Exit(1)
            return
        rows = client.request("GET", "/computations")
        undelivered = client.request("GET", "/outbox")
    table = Table("id", "status", "progress", "analyst", "query")
    table.columns[0].no_wrap = table.columns[1].no_wrap = True
    for row in rows:
        table.add_row(row["id"][:12], row["status"], f"{row['progress']:.0%}", row["analyst"],
                      row["query"])
    console.print(table)
    if undelivered:
        waiting = Table("undelivered to", "message", "since", "attempts", "last error")
        for item in undelivered:
            waiting.add_row(item["peer"], item["path"], item["created"], str(item["attempts"]),
                            item["last_error"])
        console.print(waiting)


def _show(state: dict[str, Any]) -> None:
    """One computation, for its approvers and its analyst."""
    spec = state["spec"]
    out = [f"computation {state['id']}",
           f"status      {state['status']} ({state['progress']:.0%})"]
    if state.get("error"):
        out.append(f"error       {state['error']}")
    out += [f"analyst     {spec['analyst']}", f"protocol    {spec['protocol']}",
            f"recipients  {', '.join(spec['recipients'])}", "query"]
    out += [f"  {line}" for line in spec["query"].splitlines()]
    out.append("datasets")
    for name, table in sorted(spec.get("tables", {}).items()):
        out.append(f"  {name}: held by {', '.join(table['owners'])}")
    out.append(f"effective policy  {policy_text(state.get('policy') or {})}")
    for name, budget in sorted((state.get("budget") or {}).items()):
        out.append(f"privacy budget of {name} here: costs rho={budget['cost_rho']:g} "
                   f"(epsilon {budget['cost_epsilon']:.3g}); left rho="
                   f"{budget['left_before_rho']:.6g} before, {budget['left_after_rho']:.6g} "
                   f"after{'' if budget['fits'] else ' (does not fit: refused)'}")
    out.append("approvals")
    for approval in state.get("approvals", []):
        comment = f": {approval['comment']}" if approval.get("comment") else ""
        out.append(f"  {approval['node']}: {approval['approver']} {approval['decision']}d "
                   f"at {approval['time']}{comment}")
    pending = state.get("pending") or {}
    needed = ", ".join(f"{n} ({k} of {spec['approvers'][n]})" for n, k in sorted(
        pending.items()))
    out.append(f"pending     {needed or 'none'}")
    if state.get("plan"):
        out.append("plan")
        out += [f"  {line}" for line in state["plan"].splitlines()]
    console.print("\n".join(out), highlight=False, markup=False)


def _follow(client: Any, identifier: str) -> None:
    """A progress bar until the computation completes, fails or is refused."""
    import time

    from rich.progress import Progress

    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(f"computation {identifier[:12]}", total=1.0)
        while True:
            state = client.request("GET", f"/computations/{identifier}")
            progress.update(task, completed=state["progress"],
                            description=f"{identifier[:12]} {state['status']}")
            if state["status"] in ("completed", "failed", "refused"):
                return
            time.sleep(0.3)


def _with_suppressed(answer: dict[str, Any], marker: str) -> tuple[list[str], list[list[Any]]]:
    """The result's rows followed by a row per suppressed cell (its group keys, and
    ``marker`` for its values), with a ``suppressed`` column holding the rule. A cell
    whose keys are secret (GROUP BY a secret key) gets a row without keys."""
    columns, rows = list(answer["columns"]), [list(r) for r in answer["rows"]]
    cells = answer.get("suppressed", [])
    if not cells:
        return columns, rows
    out = [[*row, ""] for row in rows]
    for cell in cells:
        group = cell["group"] if isinstance(cell["group"], dict) else {}
        keys = [group.get(name, marker) for name in columns]
        rule = cell["rule"] if isinstance(cell["group"], dict) else (
            f"{cell['group']}: {cell['rule']}")
        out.append([*keys, rule])
    return [*columns, "suppressed"], out


def _with_intervals(answer: dict[str, Any], privacy: dict[str, Any], *, csv: bool
                    ) -> dict[str, Any]:
    """Each noisy column shown as ``value +- half-width`` (a table) or followed by a
    ``NAME_ci95`` column (CSV)."""
    columns, rows = list(answer["columns"]), [list(r) for r in answer["rows"]]
    for name, noisy in privacy["columns"].items():
        if name not in columns:
            continue
        k = columns.index(name)
        widths = noisy["interval95"]
        if csv:
            columns.insert(k + 1, f"{name}_ci95")
            for row, width in zip(rows, widths, strict=True):
                row.insert(k + 1, None if width is None else round(width, 6))
        else:
            for row, width in zip(rows, widths, strict=True):
                if row[k] is not None and width is not None:
                    row[k] = f"{row[k]:.6g} +- {width:.3g}"
    return {**answer, "columns": columns, "rows": rows}


@app.command()
def result(identifier: Annotated[str, typer.Argument(help="Computation id")],
           node: NodeOption, token: TokenOption = None,
           format: Annotated[str, typer.Option(help="table, csv or json")] = "table") -> None:
    """Print a computation's result (recipients only). Suppressed cells are listed
    with the rule that suppressed them (a ``suppressed`` column)."""
    with friendly():
        if format not in ("table", "csv", "json"):
            raise ConfigurationError("--format is table, csv or json")
        answer = node_client(node, token).request("GET", f"/computations/{identifier}/result")
    if format == "json":
        console.print_json(json.dumps(answer))
        return
    threat = (answer.get("threat_model") or {}).get("summary")
    if threat:  # on stderr, so that CSV output stays a clean table
        errors.print(f"threat model: {threat}", highlight=False, markup=False)
    privacy = answer.get("privacy")
    if privacy:
        errors.print(f"differential privacy: {privacy['mechanism']} noise made in MPC, rho="
                     f"{privacy['rho']:g} (epsilon {privacy['epsilon']:.3g} at delta "
                     f"{privacy['delta']:g}); each noisy value +- its 95% interval",
                     highlight=False, markup=False)
        for statistic in privacy.get("statistics", []) if not privacy.get("columns") else []:
            if "interval95" in statistic:  # an evaluation: noise per histogram cell
                errors.print(f"  {statistic['statistic']}: each cell +- "
                             f"{statistic['interval95']:.3g} (95%)", highlight=False,
                             markup=False)
        answer = _with_intervals(answer, privacy, csv=format == "csv")
    curve = _roc_points(answer)
    if format == "csv":
        import csv
        import io

        columns, rows = _with_suppressed(answer, "")
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([["" if v is None else v for v in row] for row in rows])
        console.print(buffer.getvalue().rstrip("\n"), highlight=False, markup=False)
        return
    columns, rows = _with_suppressed(answer, "suppressed")
    table = Table(*columns)
    for row in rows:
        shown = row
        if curve is not None and row[:1] == ["roc_curve"]:
            shown = [row[0], f"{len(curve)} points, drawn below", *row[2:]]
        table.add_row(*("-" if v is None else str(v) for v in shown))
    console.print(table)
    if curve:
        from concilium.cli.charts import roc_chart

        points = Table("threshold (p >)", "false positive rate", "true positive rate",
                       title="ROC curve (the released points)")
        for threshold, fpr, tpr in curve:
            points.add_row(f"{threshold:g}", f"{fpr:g}", f"{tpr:g}")
        console.print(points)
        console.print(roc_chart(curve), highlight=False, markup=False)


def _roc_points(answer: dict[str, Any]) -> list[list[float]] | None:
    """An evaluation's released ROC points, if the result has them."""
    if list(answer.get("columns", [])) != ["metric", "value"]:
        return None
    for name, value in answer.get("rows", []):
        if name == "roc_curve" and isinstance(value, list):
            return [[float(v) for v in point] for point in value]
    return None


