"""The ``concilium`` command.

    concilium init NODE_DIR --name hospital-a --mpc-address 127.0.0.1:7001
    concilium consortium create consortium.toml --name hospitals --protocol rep3
    concilium consortium add consortium.toml NODE_DIR --roles data_owner,compute
    concilium consortium show consortium.toml
    concilium launch consortium.toml NODE_DIR... --program package.module:function
    concilium explain "SELECT ..." --catalog tables.toml
    concilium audit verify audit.sqlite [--manifest consortium.toml]
    concilium audit export NODE_DIR --out bundle.json [--manifest consortium.toml]
    concilium audit verify bundle.json [--manifest consortium.toml]
    concilium incidents --node NODE_DIR
    concilium user add NODE_DIR NAME --role analyst        (prints the API token once)
    concilium node start NODE_DIR [--manifest consortium.toml]
    concilium dataset add NAME FILE --schema columns.toml --node NODE_DIR
    concilium propose "SELECT ..." --dataset NAME --recipient NAME --node NODE_DIR
    concilium model add model.onnx --node VENDOR_NODE_DIR
    concilium propose --evaluate model.onnx --vendor NAME --dataset NAME --features a,b,c \
        --label y --metric accuracy --metric roc_auc --recipient NAME --node NODE_DIR
    concilium approve|reject ID --node NODE_DIR
    concilium status [ID] --node NODE_DIR
    concilium retry ID --node NODE_DIR
    concilium result ID --node NODE_DIR [--format table|csv|json]
    concilium budget show DATASET --node NODE_DIR
    concilium demo [--two-party | --four-party]
    concilium consortium propose-change NEW.toml --reason WHY --node NODE_DIR
    concilium consortium approve-change ID --node NODE_DIR
    concilium consortium history --node NODE_DIR
    concilium keys rotate NODE_DIR --tls | --signing

Errors print one line saying what went wrong and what to do, and exit with
status 2; nothing is half-written.

The commands live in :mod:`concilium.cli.nodes` (nodes, consortia, users,
launching, audit, the demos), :mod:`concilium.cli.datasets` (datasets, budgets,
``explain``) and :mod:`concilium.cli.computations` (proposals, decisions,
status, results), :mod:`concilium.cli.incidents` (a node's incidents), over
what :mod:`concilium.cli.common` shares.
"""

from __future__ import annotations

from concilium.cli import (  # noqa: F401  (register the commands)
    amendments,
    computations,
    datasets,
    incidents,
    nodes,
)
from concilium.cli.common import app

__all__ = ["app", "main"]


def main() -> None:
    app()


if __name__ == "__main__":
    main()
