"""``concilium incidents``: a node's aborts, refusals, audit alerts and incidents (a
peer request whose signature failed, an MPC certificate, frame or connection
refused), newest first, from its audit log (``GET /incidents``)."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from concilium.cli.common import NodeOption, TokenOption, app, console, friendly, node_client


def incidents_table(rows: list[dict[str, Any]]) -> Table:
    """The incidents as a table: entry, time, kind, computation, peers, reason."""
    table = Table("entry", "time", "kind", "computation", "peers", "reason",
                  title=f"{len(rows)} incident(s), newest first")
    for column in table.columns[:4]:
        column.no_wrap = True
    for row in rows:
        table.add_row(str(row["entry"]), str(row["time"])[:19].replace("T", " "), row["kind"],
                      (row["computation"] or "-")[:12], ", ".join(row["peers"]) or "-",
                      row["reason"])
    return table


@app.command()
def incidents(
    node: NodeOption, token: TokenOption = None,
    kind: Annotated[str | None, typer.Option(
        help="Only incidents of this kind (bad_signature, refused_certificate, abort, "
             "cheating_detected, budget_refusal, ...)")] = None,
) -> None:
    """Show the node's incidents, newest first: every abort, refusal (budget ones
    included), audit alert, failed peer signature and refused MPC certificate, frame
    or connection, with the reason, the peers involved and the computation (admins
    and approvers)."""
    with friendly():
        rows = node_client(node, token).request("GET", "/incidents")
    if kind is not None:
        rows = [row for row in rows if row["kind"] == kind]
    if not rows:
        console.print("no incidents", highlight=False)
        return
    console.print(incidents_table(rows))
