"""Nodes and consortia: ``init``, ``consortium``, ``user add``, ``node start``,
``launch``, ``audit``, ``demo``."""

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
    audit_app,
    console,
    consortium_app,
    errors,
    friendly,
    node_app,
    node_client,
    user_app,
)
from concilium.errors import ConfigurationError
from concilium.governance.consortium import (
    ROLES,
    Manifest,
    add_party,
    load_manifest,
    save_manifest,
)
from concilium.governance.identity import create_node, load_node


@audit_app.command("verify")
def audit_verify(
    log: Annotated[Path, typer.Argument(
        help="The node's audit log (SQLite), or an auditor's bundle of it (JSON, from "
             "'concilium audit export'): told apart by content")],
    manifest: Annotated[list[Path] | None, typer.Option(
        help="Check the log's keys and the co-signers against this manifest (a bundle "
             "is otherwise checked against the manifest it carries). Repeatable: give "
             "the manifests from before and after a signing key rotation, so signatures "
             "under the old key are checked too.")] = None,
    against: Annotated[list[Path] | None, typer.Option(
        help="A peer's audit log (SQLite), its bundle, or its exported checkpoints (JSON, "
             "from 'concilium audit witnessed'): the checkpoints of this log that the peer "
             "co-signed and keeps. Detects a cut tail or a rebuilt history. Repeatable.")
    ] = None,
) -> None:
    """Detect any edited, deleted, inserted or reordered entry, and (with --against)
    a truncated log or a history rebuilt with the node's own key; name the first bad
    entry. A bundle needs nothing else: no node directory, no SQLite file."""
    from concilium.governance.audit_bundle import (
        is_bundle,
        signers_of,
        verify_bundle,
        witnessed_of,
    )
    from concilium.governance.audit_verify import verify_log

    with friendly():
        given = [load_manifest(path) for path in manifest or []]
        held = [w for path in against or [] for w in witnessed_of(path)]
        extra = f", and {len(held)} checkpoint(s) kept by peers" if against else ""
        if is_bundle(log):
            report = verify_bundle(log, manifest=given, against=held)
            named = ", ".join(map(str, manifest or []))
            keys = {"bundled": "the bundled manifest's keys", "given": f"the keys of {named}",
                    "none": "no manifest"}[report.keys]
            console.print(f"{log}: audit bundle of {report.node}, {report.entries} entries, "
                          f"chain, signatures and checkpoints verified ({report.checkpoints} "
                          f"co-signature(s) by {', '.join(report.cosigners) or 'nobody'} "
                          f"under {keys}; {report.witnessed} checkpoint(s) of other logs it "
                          f"keeps){extra}", highlight=False)
            console.print(f"  node key {report.public_key}", highlight=False)
            if report.manifest_hash is not None:
                console.print(f"  manifest hash {report.manifest_hash}", highlight=False)
            for note in report.notes:
                console.print(f"  note: {note}", highlight=False)
            return
        signers = signers_of(given) if given else None
        count = verify_log(log, signers, against=held)
        console.print(f"{log}: {count} entries, chain, signatures and checkpoints "
                      f"verified{extra}", highlight=False)


@audit_app.command("export")
def audit_export(
    node_dir: Annotated[Path, typer.Argument(help="The node's directory")],
    out: Annotated[Path, typer.Option(help="The bundle file to write (JSON)")],
    manifest: Annotated[Path | None, typer.Option(
        help="The consortium manifest the node runs with: its signing keys go into the "
             "bundle, so the peers' co-signatures can be checked")] = None,
) -> None:
    """Write an auditor's bundle of the node's audit log: every entry (hash, previous
    hash, signature), its checkpoints and the peers' co-signatures, the checkpoints
    of other logs it keeps, the node's public key and the manifest. 'concilium audit
    verify BUNDLE' checks it anywhere. Safe while the node runs."""
    from concilium.governance.audit_bundle import write_bundle

    with friendly():
        identity = load_node(node_dir)
        given = load_manifest(manifest) if manifest is not None else None
        bundle = write_bundle(node_dir / "audit.sqlite", out, given)
    console.print(f"{out}: audit bundle of {bundle['node']}, {len(bundle['entries'])} "
                  f"entries, {len(bundle['checkpoints'])} co-signature(s), "
                  f"{len(bundle['witnessed'])} checkpoint(s) of other logs it keeps; "
                  + (f"manifest {bundle['manifest_hash']}" if given is not None else
                     "no manifest (co-signatures cannot be checked; pass --manifest)"),
                  highlight=False)
    if bundle["public_key"] != identity.signing_public_key:
        errors.print(f"note: the log is signed under {bundle['public_key']}, not the node's "
                     f"current key {identity.signing_public_key}", highlight=False)


@audit_app.command("witnessed")
def audit_witnessed(
    node: NodeOption, token: TokenOption = None,
    of: Annotated[str | None, typer.Option(help="Only the checkpoints of this node's log")
                  ] = None,
) -> None:
    """Print, as JSON, the other nodes' checkpoints this node co-signed and keeps (an
    auditor verifies a node's log against them with 'audit verify --against')."""
    with friendly():
        path = "/audit/witnessed" + (f"?node={of}" if of else "")
        held = node_client(node, token).request("GET", path)
    console.print_json(json.dumps(held))


@user_app.command("add")
def user_add(
    node_dir: Annotated[Path, typer.Argument(help="The node's directory")],
    name: Annotated[str, typer.Argument(help="User name")],
    role: Annotated[str, typer.Option(help="admin, analyst, approver, recipient or monitor")],
) -> None:
    """Create a user and print their API token (shown this once, stored hashed)."""
    from concilium.governance.users import UserStore

    with friendly():
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
    log_format: Annotated[str | None, typer.Option(
        help="json: one JSON object per line on stderr, for every request and run "
             "(the default, or CONCILIUM_LOG_FORMAT); text: plain warnings only")] = None,
) -> None:
    """Serve the node's HTTP API over HTTPS until Ctrl-C or SIGTERM."""
    from concilium.net.tls import TlsSettings
    from concilium.node.service import serve

    with friendly():
        identity = load_node(node_dir)
        if log_format not in (None, "json", "text"):
            raise ConfigurationError(f"--log-format is json or text, not {log_format!r}")
        if peer_timeout <= 0 or startup_timeout <= 0:
            raise ConfigurationError("--peer-timeout and --startup-timeout must be "
                                     "positive")
        settings = TlsSettings(startup_timeout=startup_timeout, receive_timeout=peer_timeout,
                               send_timeout=peer_timeout)
        errors.print(f"node {identity.name} serving https://{identity.api_address}",
                     highlight=False)
        serve(node_dir, manifest, settings=settings, mpc_bind=mpc_bind,
              log_format=log_format)
    errors.print(f"node {identity.name} stopped", highlight=False)



@app.command()
def init(
    node_dir: Annotated[Path, typer.Argument(help="Directory for the new node")],
    name: Annotated[str, typer.Option(help="Node name, e.g. hospital-a")],
    mpc_address: Annotated[str, typer.Option(help="HOST:PORT peers connect to")],
    api_address: Annotated[str | None, typer.Option(help="HOST:PORT of the HTTP API")] = None,
) -> None:
    """Create a node: TLS key and certificate, Ed25519 signing key, node.toml."""
    with friendly():
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
    with friendly():
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
    with friendly():
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
    with friendly():
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

    with friendly():
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
        "--two-party", help="two banks, an additive consortium: no third party")] = False,
         four_party: Annotated[bool, typer.Option(
             "--four-party", help="four hospitals, rep4: malicious security, and a fire "
                                  "drill with a cheating node")] = False) -> None:
    """Three hospitals compute joint readmission statistics on secret shares (or, with
    --two-party, two banks their joint account statistics; with --four-party, four
    hospitals under rep4, then a cheating node's run aborts)."""
    if four_party:
        from concilium.demo_four import main as run_four

        raise typer.Exit(run_four())
    if two_party:
        from concilium.demo_banks import main as run_banks

        raise typer.Exit(run_banks())
    from concilium.demo import main as run_demo

    raise typer.Exit(run_demo())

