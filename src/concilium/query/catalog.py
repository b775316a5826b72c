"""The catalog of a query: each table's public schema and the parties that hold it."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from concilium.data.schema import Schema, load_schemas

__all__ = ["Catalog", "TableEntry", "load_catalog"]


@dataclass(frozen=True)
class TableEntry:
    """A table of the catalog: its public schema and the parties that hold its rows."""

    schema: Schema
    owners: tuple[int, ...]


@dataclass(frozen=True)
class Catalog:
    """Tables by name, and the names of the parties that own them."""

    tables: dict[str, TableEntry]
    names: dict[int, str]


def load_catalog(path: str | Path) -> Catalog:
    """Schemas and owners from TOML: ``[tables.<name>]`` with ``owners = [...]`` (node
    names, in party order) and ``[tables.<name>.columns.<column>]`` sections."""
    schemas = load_schemas(path)
    document = tomllib.loads(Path(path).read_text())
    names: dict[int, str] = {}
    tables = {}
    for table, spec in document["tables"].items():
        owners = spec.get("owners", [0, 1, 2])
        indices = []
        for owner in owners:
            if isinstance(owner, int):
                indices.append(owner)
                continue
            known = {v: k for k, v in names.items()}
            if owner not in known:
                known[owner] = len(names)
                names[len(names)] = str(owner)
            indices.append(known[owner])
        tables[table] = TableEntry(schemas[table], tuple(indices))
    return Catalog(tables, names)
