"""The ``concilium`` command.

    concilium init NODE_DIR --name hospital-a --mpc-address 127.0.0.1:7001
    concilium consortium create consortium.toml --name hospitals --protocol rep3
    concilium consortium add consortium.toml NODE_DIR --roles data_owner,compute
    concilium consortium show consortium.toml
    concilium launch consortium.toml NODE_DIR... --program package.module:function
    concilium explain "SELECT ..." --catalog tables.toml
    concilium audit verify audit.sqlite [--manifest consortium.toml]
    concilium user add NODE_DIR NAME --role analyst        (prints the API token once)
    concilium node start NODE_DIR [--manifest consortium.toml]
    concilium dataset add NAME FILE --schema columns.toml --node NODE_DIR
    concilium propose "SELECT ..." --dataset NAME --recipient NAME --node NODE_DIR
    concilium approve|reject ID --node NODE_DIR
    concilium status [ID] --node NODE_DIR
    concilium retry ID --node NODE_DIR
    concilium result ID --node NODE_DIR [--format table|csv|json]
    concilium demo

Errors print one line saying what went wrong and what to do, and exit with
status 2; nothing is half-written.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from concilium.errors import ConciliumError, ConfigurationError
from concilium.governance.consortium import (
    ROLES,
    Manifest,
    add_party,
    load_manifest,
    save_manifest,
)
from concilium.governance.identity import create_node, load_node

__all__ = ["app", "main"]

app = typer.Typer(help="Concilium: governed secure multiparty computation.",
                  no_args_is_help=True, add_completion=False)
consortium_app = typer.Typer(help="Create and inspect the consortium manifest.",
                             no_args_is_help=True)
app.add_typer(consortium_app, name="consortium")
audit_app = typer.Typer(help="Check audit logs.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")
node_app = typer.Typer(help="Run a node.", no_args_is_help=True)
app.add_typer(node_app, name="node")
user_app = typer.Typer(help="Manage a node's users.", no_args_is_help=True)
app.add_typer(user_app, name="user")
dataset_app = typer.Typer(help="Register datasets at a node.", no_args_is_help=True)
app.add_typer(dataset_app, name="dataset")
budget_app = typer.Typer(help="Privacy budgets of a node's datasets.", no_args_is_help=True)
app.add_typer(budget_app, name="budget")
NodeOption = Annotated[Path, typer.Option("--node", help="The node's directory")]
TokenOption = Annotated[str | None, typer.Option(envvar="CONCILIUM_TOKEN",
                                                 help="Your API token at that node")]
console = Console(soft_wrap=True)
errors = Console(stderr=True, soft_wrap=True)


@contextmanager
def _friendly() -> Iterator[None]:
    try:
        yield
    except ConciliumError as error:
        errors.print(f"[bold red]error:[/] {error}", highlight=False)
        raise typer.Exit(2) from None


@audit_app.command("verify")
def audit_verify(
    log: Annotated[Path, typer.Argument(help="The node's audit log (SQLite)")],
    manifest: Annotated[Path | None, typer.Option(
        help="Check the log's key and the co-signers against this manifest")] = None,
    against: Annotated[list[Path] | None, typer.Option(
        help="A peer's audit log (SQLite) or its exported checkpoints (JSON, from "
             "'concilium audit witnessed'): the checkpoints of this log that the peer "
             "co-signed and keeps. Detects a cut tail or a rebuilt history. Repeatable.")
    ] = None,
) -> None:
    """Detect any edited, deleted, inserted or reordered entry, and (with --against)
    a truncated log or a history rebuilt with the node's own key; name the first bad
    entry."""
    from concilium.governance.audit import load_witnessed, verify_log

    with _friendly():
        signers = None
        if manifest is not None:
            signers = {p.name: p.signing_key for p in load_manifest(manifest).parties}
        held = [w for path in against or [] for w in load_witnessed(path)]
        count = verify_log(log, signers, against=held)
        extra = f", and {len(held)} checkpoint(s) kept by peers" if against else ""
        console.print(f"{log}: {count} entries, chain, signatures and checkpoints "
                      f"verified{extra}", highlight=False)


@audit_app.command("witnessed")
def audit_witnessed(
    node: NodeOption, token: TokenOption = None,
    of: Annotated[str | None, typer.Option(help="Only the checkpoints of this node's log")
                  ] = None,
) -> None:
    """Print, as JSON, the other nodes' checkpoints this node co-signed and keeps (an
    auditor verifies a node's log against them with 'audit verify --against')."""
    with _friendly():
        path = "/audit/witnessed" + (f"?node={of}" if of else "")
        held = _client(node, token).request("GET", path)
    console.print_json(json.dumps(held))


@user_app.command("add")
def user_add(
    node_dir: Annotated[Path, typer.Argument(help="The node's directory")],
    name: Annotated[str, typer.Argument(help="User name")],
    role: Annotated[str, typer.Option(help="admin, analyst, approver or recipient")],
) -> None:
    """Create a user and print their API token (shown this once, stored hashed)."""
    from concilium.governance.users import UserStore

    with _friendly():
        load_node(node_dir)
        store = UserStore(node_dir / "users.sqlite")
        try:
            token = store.add_user(name, role)
        finally:
            store.close()
    console.print(token, highlight=False)


@node_app.command("start")
def node_start(
    node_dir: Annotated[Path, typer.Argument(help="The node's directory")],
    manifest: Annotated[Path | None, typer.Option(help="The consortium manifest")] = None,
    peer_timeout: Annotated[float, typer.Option(
        help="Seconds a run waits for a silent peer before it aborts on every node")] = 60.0,
    startup_timeout: Annotated[float, typer.Option(
        help="Seconds a run waits for its peers to connect")] = 30.0,
    mpc_bind: Annotated[str | None, typer.Option(
        help="Listen for MPC connections on HOST:PORT instead of the manifest's "
             "address (behind port forwarding or a proxy)")] = None,
) -> None:
    """Serve the node's HTTP API over HTTPS until Ctrl-C or SIGTERM."""
    from concilium.net.tls import TlsSettings
    from concilium.node.service import serve

    with _friendly():
        identity = load_node(node_dir)
        if peer_timeout <= 0 or startup_timeout <= 0:
            raise ConfigurationError("--peer-timeout and --startup-timeout must be "
                                     "positive")
        settings = TlsSettings(startup_timeout=startup_timeout, receive_timeout=peer_timeout,
                               send_timeout=peer_timeout)
        errors.print(f"node {identity.name} serving https://{identity.api_address}",
                     highlight=False)
        serve(node_dir, manifest, settings=settings, mpc_bind=mpc_bind)
    errors.print(f"node {identity.name} stopped", highlight=False)


def _client(node: Path, token: str | None) -> Any:
    from concilium.node.client import NodeClient

    return NodeClient(node, token)


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


def _read_toml(path: Path, what: str) -> dict[str, Any]:
    import tomllib

    try:
        return tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise ConfigurationError(f"cannot read the {what} {path}: {error}") from None


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
    with _friendly():
        columns = _read_toml(schema, "schema")
        rules = _read_toml(policy, "policy") if policy is not None else {}
        kind = file_format or ("parquet" if file.suffix == ".parquet" else "csv")
        answer = _client(node, token).request("POST", "/datasets", json={
            "name": name, "path": str(file.resolve()), "format": kind,
            "schema": columns, "rules": rules})
    console.print(f"registered {answer['name']}: {answer['rows']} rows checked", highlight=False)
    _print_rules(answer["rules"])


@dataset_app.command("policy", help="Change a dataset's output policy and approval rule "
                                    "(admins; the change is in the audit log and sent to "
                                    "every node).\n" + POLICY_HELP)
def dataset_policy(
    name: Annotated[str, typer.Argument(help="Dataset name")],
    policy: Annotated[Path, typer.Option(help="TOML file (see above)")],
    node: NodeOption, token: TokenOption = None,
) -> None:
    with _friendly():
        answer = _client(node, token).request("PUT", f"/datasets/{name}/rules",
                                              json={"rules": _read_toml(policy, "policy")})
    console.print(f"{answer['name']}: rules changed", highlight=False)
    _print_rules(answer["rules"])


@dataset_app.command("list")
def dataset_list(node: NodeOption, token: TokenOption = None) -> None:
    """The datasets of the consortium as this node knows them: who holds what."""
    with _friendly():
        entries = _client(node, token).request("GET", "/catalog")
    table = Table("dataset", "node", "columns", "policy", "approvals")
    for entry in entries:
        rules = entry["rules"]
        table.add_row(entry["dataset"], entry["node"], ", ".join(entry["schema"]),
                      _policy_text(rules["policy"]), str(rules["approval"]["required"]))
    console.print(table)


@budget_app.command("show")
def budget_show(dataset: Annotated[str, typer.Argument(help="Dataset name")],
                node: NodeOption, token: TokenOption = None,
                json_output: Annotated[bool, typer.Option("--json")] = False) -> None:
    """A dataset's privacy budget at its owner node: spent, left, and every charge."""
    with _friendly():
        answer = _client(node, token).request("GET", f"/datasets/{dataset}/budget")
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


def _policy_text(policy: dict[str, Any]) -> str:
    shown = {k: v for k, v in policy.items() if v not in (None, False, 0)}
    return ", ".join(f"{k}={v}" for k, v in sorted(shown.items())) or "none"


def _print_rules(rules: dict[str, Any]) -> None:
    console.print(f"  policy: {_policy_text(rules['policy'])}; approvals per use: "
                  f"{rules['approval']['required']}", highlight=False, markup=False)


@app.command()
def propose(
    sql: Annotated[str, typer.Argument(help="The SQL query")],
    dataset: Annotated[list[str], typer.Option(help="A dataset the query uses")],
    recipient: Annotated[list[str], typer.Option(help="Who receives the result")],
    node: NodeOption, token: TokenOption = None,
    policy: Annotated[Path | None, typer.Option(
        help="TOML file with a \\[policy] section: your own output policy, added to the "
             "owners' (it can only make it stricter)")] = None,
) -> None:
    """Propose a computation; prints its id (what approvers approve). The node plans it
    first: SQL, policies, recipients and value ranges that cannot work are refused
    before anyone is asked to approve."""
    with _friendly():
        rules = _read_toml(policy, "policy") if policy is not None else {}
        answer = _client(node, token).request("POST", "/computations", json={
            "query": sql, "datasets": dataset, "recipients": recipient,
            "policy": rules.get("policy", rules)})
    console.print(answer["id"], highlight=False)
    errors.print(f"effective policy: {_policy_text(answer['policy'])}; approvers: "
                 + ", ".join(f"{n} ({k})" for n, k in sorted(answer["approvers"].items())),
                 highlight=False, markup=False)
    if answer.get("unreachable"):
        errors.print(f"not reached (they will not see it yet): "
                     f"{', '.join(answer['unreachable'])}", highlight=False)


def _decide(identifier: str, decision: str, comment: str, node: Path,
            token: str | None) -> None:
    with _friendly():
        _client(node, token).request("POST", f"/computations/{identifier}/{decision}",
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
    with _friendly():
        answer = _client(node, token).request("POST", f"/computations/{identifier}/retry")
    console.print(f"{identifier[:16]}... {answer['status']}", highlight=False)


@app.command()
def status(identifier: Annotated[str | None, typer.Argument(help="Computation id")] = None,
           *, node: NodeOption, token: TokenOption = None,
           wait: Annotated[bool, typer.Option(help="Follow one computation with a progress "
                                                   "bar until it ends; exit status 1 if it "
                                                   "failed or was refused")] = False) -> None:
    """Show computations; with an id, everything about one: the full SQL, the
    effective policy, the plan, approvals and pending approvers, the error."""
    with _friendly():
        client = _client(node, token)
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
    out.append(f"effective policy  {_policy_text(state.get('policy') or {})}")
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
    with _friendly():
        if format not in ("table", "csv", "json"):
            raise ConfigurationError("--format is table, csv or json")
        answer = _client(node, token).request("GET", f"/computations/{identifier}/result")
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
        answer = _with_intervals(answer, privacy, csv=format == "csv")
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
        table.add_row(*("-" if v is None else str(v) for v in row))
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

    with _friendly():
        tables = load_catalog(catalog)
        rules = load_policy(policy) if policy is not None else OutputPolicy()
        plan = plan_query(sql, tables.tables, policy=rules)
        console.print(explain_plan(plan, tables.names), highlight=False, markup=False)


@app.command()
def init(
    node_dir: Annotated[Path, typer.Argument(help="Directory for the new node")],
    name: Annotated[str, typer.Option(help="Node name, e.g. hospital-a")],
    mpc_address: Annotated[str, typer.Option(help="HOST:PORT peers connect to")],
    api_address: Annotated[str | None, typer.Option(help="HOST:PORT of the HTTP API")] = None,
) -> None:
    """Create a node: TLS key and certificate, Ed25519 signing key, node.toml."""
    with _friendly():
        identity = create_node(node_dir, name, mpc_address, api_address)
    console.print(f"Created node [bold]{identity.name}[/] in {node_dir}")
    console.print(f"  MPC address     {identity.mpc_address}")
    console.print(f"  API address     {identity.api_address}")
    console.print(f"  TLS certificate {identity.tls_fingerprint}")
    console.print(f"  signing key     {identity.signing_public_key}")


@consortium_app.command("create")
def consortium_create(
    manifest: Annotated[Path, typer.Argument(help="Manifest file to create")],
    name: Annotated[str, typer.Option(help="Consortium name")],
    protocol: Annotated[str, typer.Option(help="rep3, rep4 or additive")] = "rep3",
    approval: Annotated[str, typer.Option(
        help="Whose approval a computation needs: dataset_owners (the owners of the data "
             "it uses) or all_owners (every data owner)")] = "dataset_owners",
) -> None:
    """Start an empty manifest."""
    with _friendly():
        if manifest.exists():
            raise ConfigurationError(f"{manifest} already exists; refusing to overwrite it")
        save_manifest(Manifest(name=name, protocol=protocol, approval=approval), manifest)
    console.print(f"Created consortium [bold]{name}[/] ({protocol}) in {manifest}")


@consortium_app.command("add")
def consortium_add(
    manifest: Annotated[Path, typer.Argument(help="Manifest file")],
    node_dir: Annotated[Path, typer.Argument(help="The node directory to add")],
    roles: Annotated[str, typer.Option(help=f"Comma-separated: {', '.join(ROLES)}")] = (
        "data_owner,compute"),
) -> None:
    """Add a node (its addresses, certificate and public key) to the manifest."""
    with _friendly():
        current = load_manifest(manifest)
        identity = load_node(node_dir)
        updated = add_party(current, identity,
                            tuple(r.strip() for r in roles.split(",") if r.strip()))
        save_manifest(updated, manifest)
    console.print(f"Added [bold]{identity.name}[/] ({roles}) to {manifest}")
    for problem in updated.readiness_problems():
        console.print(f"  not ready yet: {problem}")


@consortium_app.command("show")
def consortium_show(
    manifest: Annotated[Path, typer.Argument(help="Manifest file")],
) -> None:
    """Print the parties, the manifest hash and whether the protocol can run."""
    with _friendly():
        current = load_manifest(manifest)
    table = Table(title=f"consortium {current.name} ({current.protocol})")
    for column in ("#", "name", "MPC address", "API address", "roles", "TLS fingerprint"):
        table.add_column(column)
    for index, party in enumerate(current.parties):
        table.add_row(str(index), party.name, party.mpc_address, party.api_address,
                      ", ".join(party.roles), party.tls_fingerprint[:23] + "...")
    console.print(table)
    console.print(f"manifest hash {current.hash}")
    problems = current.readiness_problems()
    console.print("ready" if not problems else "not ready: " + "; ".join(problems))


@app.command()
def launch(
    manifest: Annotated[Path, typer.Argument(help="Manifest file")],
    node_dirs: Annotated[list[Path], typer.Argument(help="One directory per party to start")],
    program: Annotated[str, typer.Option(help="package.module:function run by each party")],
    args: Annotated[str, typer.Option(help="JSON object of keyword arguments")] = "{}",
    timeout: Annotated[float, typer.Option(help="Seconds before the launch gives up")] = 300.0,
    peer_timeout: Annotated[float, typer.Option(
        help="Seconds a party waits for a peer that sends, or accepts, nothing")] = 60.0,
) -> None:
    """Run a program on local node processes over mutual TLS on this machine."""
    from concilium.node.launcher import encode_value, launch_local

    with _friendly():
        try:
            keyword = json.loads(args)
        except json.JSONDecodeError as error:
            raise ConfigurationError(f"--args is not JSON: {error}") from None
        outcomes = launch_local(manifest, node_dirs, program, args=keyword, timeout=timeout,
                                receive_timeout=peer_timeout, python_path=[str(Path.cwd())])
    failed = False
    for outcome in outcomes:
        if outcome.ok:
            console.print(f"[green]{outcome.name}[/]: {json.dumps(encode_value(outcome.value))}")
        else:
            failed = True
            errors.print(f"[red]{outcome.name}[/]: {outcome.error_type}: {outcome.error}",
                         highlight=False)
    if failed:
        raise typer.Exit(1)


@app.command()
def demo(two_party: Annotated[bool, typer.Option(
        "--two-party", help="two banks, an additive consortium: no third party")] = False
         ) -> None:
    """Three hospitals compute joint readmission statistics on secret shares (or, with
    --two-party, two banks their joint account statistics)."""
    if two_party:
        from concilium.demo_banks import main as run_banks

        raise typer.Exit(run_banks())
    from concilium.demo import main as run_demo

    raise typer.Exit(run_demo())


def main() -> None:
    app()


if __name__ == "__main__":
    main()
