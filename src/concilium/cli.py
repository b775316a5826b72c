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
) -> None:
    """Detect any edited, deleted, inserted or reordered entry; name the first bad one."""
    from concilium.governance.audit import verify_log

    with _friendly():
        signers = None
        if manifest is not None:
            signers = {p.name: p.signing_key for p in load_manifest(manifest).parties}
        count = verify_log(log, signers)
        console.print(f"{log}: {count} entries, chain, signatures and checkpoints verified",
                      highlight=False)


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
) -> None:
    """Serve the node's HTTP API over HTTPS until Ctrl-C or SIGTERM."""
    from concilium.node.service import serve

    with _friendly():
        identity = load_node(node_dir)
        errors.print(f"node {identity.name} serving https://{identity.api_address}",
                     highlight=False)
        serve(node_dir, manifest)
    errors.print(f"node {identity.name} stopped", highlight=False)


def _client(node: Path, token: str | None) -> Any:
    from concilium.node.client import NodeClient

    return NodeClient(node, token)


@dataset_app.command("add")
def dataset_add(
    name: Annotated[str, typer.Argument(help="Dataset name")],
    file: Annotated[Path, typer.Argument(help="CSV or Parquet file on this node's host")],
    schema: Annotated[Path, typer.Option(help="TOML with [columns.<name>] sections")],
    node: NodeOption, token: TokenOption = None,
) -> None:
    """Register a dataset (its rows are checked against the schema; nothing is shared)."""
    import tomllib

    with _friendly():
        try:
            columns = tomllib.loads(schema.read_text())
        except (OSError, tomllib.TOMLDecodeError) as error:
            raise ConfigurationError(f"cannot read the schema {schema}: {error}") from None
        kind = "parquet" if file.suffix == ".parquet" else "csv"
        answer = _client(node, token).request("POST", "/datasets", json={
            "name": name, "path": str(file.resolve()), "format": kind,
            "schema": columns.get("columns", columns)})
    console.print(f"registered {answer['name']}: {answer['rows']} rows checked")


@app.command()
def propose(
    sql: Annotated[str, typer.Argument(help="The SQL query")],
    dataset: Annotated[list[str], typer.Option(help="A dataset the query uses")],
    recipient: Annotated[list[str], typer.Option(help="Who receives the result")],
    node: NodeOption, token: TokenOption = None,
) -> None:
    """Propose a computation; prints its id (what approvers approve)."""
    with _friendly():
        answer = _client(node, token).request("POST", "/computations", json={
            "query": sql, "datasets": dataset, "recipients": recipient})
    console.print(answer["id"], highlight=False)


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
                                                   "bar until it ends")] = False) -> None:
    """Show computations and their progress."""
    with _friendly():
        client = _client(node, token)
        if wait and identifier:
            _follow(client, identifier)
        rows = ([client.request("GET", f"/computations/{identifier}")] if identifier
                else client.request("GET", "/computations"))
    table = Table("id", "status", "progress", "analyst", "query")
    table.columns[0].no_wrap = table.columns[1].no_wrap = True
    for row in rows:
        table.add_row(row["id"][:12], row["status"], f"{row['progress']:.0%}", row["analyst"],
                      row["query"][:60])
    console.print(table)


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


@app.command()
def result(identifier: Annotated[str, typer.Argument(help="Computation id")],
           node: NodeOption, token: TokenOption = None,
           format: Annotated[str, typer.Option(help="table, csv or json")] = "table") -> None:
    """Print a computation's result (recipients only)."""
    with _friendly():
        answer = _client(node, token).request("GET", f"/computations/{identifier}/result")
        if format not in ("table", "csv", "json"):
            raise ConfigurationError("--format is table, csv or json")
    if format == "json":
        console.print_json(json.dumps(answer))
        return
    columns, rows = answer["columns"], answer["rows"]
    if format == "csv":
        console.print(",".join(columns))
        for row in rows:
            console.print(",".join("" if v is None else str(v) for v in row), highlight=False)
        return
    table = Table(*columns)
    for row in rows:
        table.add_row(*("-" if v is None else str(v) for v in row))
    console.print(table)


@app.command()
def explain(
    sql: Annotated[str, typer.Argument(help="The SQL query")],
    catalog: Annotated[Path, typer.Option(help="TOML file with the tables' schemas and "
                                               "owners")],
) -> None:
    """Print what a query runs where, what is shared and what is revealed to whom."""
    from concilium.query.explain import explain as explain_plan
    from concilium.query.plan import load_catalog, plan_query

    with _friendly():
        tables = load_catalog(catalog)
        plan = plan_query(sql, tables.tables)
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
) -> None:
    """Start an empty manifest."""
    with _friendly():
        if manifest.exists():
            raise ConfigurationError(f"{manifest} already exists; refusing to overwrite it")
        save_manifest(Manifest(name=name, protocol=protocol), manifest)
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
def demo() -> None:
    """Three hospitals compute joint readmission statistics on secret shares."""
    from concilium.demo import main as run_demo

    raise typer.Exit(run_demo())


def main() -> None:
    app()


if __name__ == "__main__":
    main()
