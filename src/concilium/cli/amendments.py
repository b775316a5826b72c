"""``concilium consortium propose-change | approve-change | history`` and ``concilium keys
rotate``: changing the consortium by signed manifest amendments
(:mod:`concilium.governance.amendments`), through a running node's API."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from concilium.cli.common import (
    NodeOption,
    TokenOption,
    app,
    console,
    consortium_app,
    friendly,
    node_client,
)

__all__ = ["keys_app"]

keys_app = typer.Typer(help="Rotate a node's keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


def _show(answer: dict[str, Any]) -> None:
    console.print(f"amendment {answer['id'][:16]}...: {answer.get('change') or ''}",
                  highlight=False, markup=False)
    console.print(f"  {answer['status']}; signed by {', '.join(answer['signed']) or 'nobody'}"
                  f"; needs {', '.join(answer.get('required') or []) or '-'}",
                  highlight=False, markup=False)
    if answer["status"] == "applied":
        console.print(f"  the manifest is now {answer['manifest']}: computations approved "
                      "under the old one must be proposed and approved again",
                      highlight=False, markup=False)


@consortium_app.command("propose-change")
def propose_change(
    manifest: Annotated[Path, typer.Argument(help="The new manifest (TOML)")],
    node: NodeOption, token: TokenOption = None,
    reason: Annotated[str, typer.Option(help="Why (signed and logged)")] = "",
    revoke: Annotated[str, typer.Option(
        help="A party whose key is compromised: the others sign, it cannot")] = "",
) -> None:
    """Propose replacing the consortium's manifest; this node signs it and sends it to
    every member, who must approve it (a key rotation needs only the rotating node)."""
    from concilium.governance.consortium import load_manifest

    with friendly():
        new = load_manifest(manifest)
        answer = node_client(node, token).request("POST", "/consortium/amendments", json={
            "manifest": new.as_dict(), "reason": reason, "revoke": revoke})
    _show(answer)


@consortium_app.command("approve-change")
def approve_change(
    identifier: Annotated[str, typer.Argument(help="The amendment's id (or its start)")],
    node: NodeOption, token: TokenOption = None,
) -> None:
    """Sign an amendment at this node (after reading it: concilium consortium history)."""
    with friendly():
        answer = node_client(node, token).request(
            "POST", f"/consortium/amendments/{identifier}/approve")
    _show(answer)


@consortium_app.command("history")
def history(node: NodeOption, token: TokenOption = None) -> None:
    """The amendments this node knows: applied ones are the consortium's history."""
    with friendly():
        client = node_client(node, token)
        rows = client.request("GET", "/consortium/amendments")
        current = client.request("GET", "/consortium")["hash"]
    table = Table(title=f"manifest in force: {current}")
    for column in ("amendment", "status", "change", "proposer", "reason", "signed",
                   "received", "applied"):
        table.add_column(column)
    for row in rows:
        table.add_row(row["id"][:12], row["status"], row.get("change", ""), row["proposer"],
                      row["reason"], ", ".join(row["signed"]), row["received"],
                      row["applied"] or "")
    console.print(table)


@keys_app.command("rotate")
def rotate(
    node_dir: Annotated[Path, typer.Argument(help="The node's directory (on its host)")],
    tls: Annotated[bool, typer.Option("--tls", help="A new TLS key and certificate")] = False,
    signing: Annotated[bool, typer.Option("--signing", help="A new Ed25519 signing key")] = False,
    token: TokenOption = None,
) -> None:
    """Make new keys, announce them in an amendment signed with the old signing key,
    and switch the running node to them once it is applied (connections already
    open finish on the old keys)."""
    from concilium.governance.amendments import manifest_from_dict
    from concilium.governance.identity import load_node, prepare_rotation

    with friendly():
        identity = load_node(node_dir)
        client = node_client(node_dir, token)
        current = manifest_from_dict(client.request("GET", "/consortium")["manifest"])
        entry = prepare_rotation(identity, tls=tls, signing=signing)
        changes: dict[str, Any] = dict(entry)
        parties = tuple(dataclasses.replace(p, **changes) if p.name == identity.name else p
                        for p in current.parties)
        new = dataclasses.replace(current, parties=parties)
        try:
            answer = client.request("POST", "/consortium/amendments", json={
                "manifest": new.as_dict(), "reason": "key rotation"})
        except BaseException:
            for path in (node_dir / "tls").glob("node.next.*"):
                path.unlink()
            for path in (node_dir / "keys").glob("signing.next.*"):
                path.unlink()
            raise
    _show(answer)
