"""What every ``concilium`` subcommand shares: the typer apps, the ``--node`` and
``--token`` options, the consoles, friendly errors, the node client, TOML reading
and how rules are printed."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from concilium.errors import ConciliumError, ConfigurationError

__all__ = ["NodeOption", "TokenOption", "app", "console", "consortium_app", "errors",
           "friendly", "model_app", "node_client", "policy_text", "print_rules", "read_toml"]

app = typer.Typer(help="Concilium: governed secure multiparty computation.",
                  no_args_is_help=True, add_completion=False)
consortium_app = typer.Typer(help="Create, inspect and amend the consortium manifest.",
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
model_app = typer.Typer(help="Register a vendor's models at its node.", no_args_is_help=True)
app.add_typer(model_app, name="model")
budget_app = typer.Typer(help="Privacy budgets of a node's datasets.", no_args_is_help=True)
app.add_typer(budget_app, name="budget")
NodeOption = Annotated[Path, typer.Option("--node", help="The node's directory")]
TokenOption = Annotated[str | None, typer.Option(envvar="CONCILIUM_TOKEN",
                                                 help="Your API token at that node")]
console = Console(soft_wrap=True)
errors = Console(stderr=True, soft_wrap=True)



@contextmanager
def friendly() -> Iterator[None]:
    try:
        yield
    except ConciliumError as error:
        errors.print(f"[bold red]error:[/] {error}", highlight=False)
        raise typer.Exit(2) from None



def node_client(node: Path, token: str | None) -> Any:
    from concilium.node.client import NodeClient

    return NodeClient(node, token)



def read_toml(path: Path, what: str) -> dict[str, Any]:
    import tomllib

    try:
        return tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise ConfigurationError(f"cannot read the {what} {path}: {error}") from None



def policy_text(policy: dict[str, Any]) -> str:
    shown = {k: v for k, v in policy.items() if v not in (None, False, 0)}
    return ", ".join(f"{k}={v}" for k, v in sorted(shown.items())) or "none"


def print_rules(rules: dict[str, Any]) -> None:
    console.print(f"  policy: {policy_text(rules['policy'])}; approvals per use: "
                  f"{rules['approval']['required']}", highlight=False, markup=False)

