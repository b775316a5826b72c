"""One table of a join as its owners see it (:class:`Side`), and the rows each
owner computes alone and shares for it (:func:`local_side_rows`); see
:mod:`concilium.query.join` for how the join runs.

Reveals: nothing (local work at each owner).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from sqlglot import exp

from concilium.data.dataset import Dataset
from concilium.errors import QueryError
from concilium.query import rows as rows_module
from concilium.query.catalog import TableEntry
from concilium.query.local import run_local
from concilium.query.statistics import ArgumentRange

__all__ = ["KEY_LIMIT", "Side", "local_side_rows"]

KEY_LIMIT = 2**61  # |key| below this


@dataclass(frozen=True)
class Side:
    """One table of the join, as its owners see it."""

    table: str
    alias: str
    entry: TableEntry
    key: str
    where: exp.Expr | None
    arguments: tuple[str, ...]  # local SQL of each aggregate argument on this side
    ranges: tuple[ArgumentRange, ...]
    group_keys: tuple[tuple[int, str], ...] = ()  # (GROUP BY position, local SQL)
    domains: tuple[tuple[Any, ...], ...] = ()
    secret_key: str | None = None  # a secret column that groups the join (join_groups)

    @property
    def fixed(self) -> tuple[bool, ...]:
        return tuple(not r.integral for r in self.ranges)

    @property
    def grid_size(self) -> int:
        size = 1
        for domain in self.domains:
            size *= len(domain)
        return size

    def local_sql(self) -> str:
        passes = "1" if self.where is None else (
            f"CASE WHEN ({self.where.sql(dialect='duckdb')}) THEN 1 ELSE 0 END")
        columns = [f'CAST("{self.key}" AS BIGINT) AS k', f"{passes} AS w",
                   f'CASE WHEN "{self.key}" IS NOT NULL THEN 1 ELSE 0 END AS kn']
        columns += [f"({text}) AS g{k}" for k, (_, text) in enumerate(self.group_keys)]
        columns += [f"CAST(({text}) AS {'DOUBLE' if fixed else 'BIGINT'}) AS a{i}"
                    for i, (text, fixed) in enumerate(zip(self.arguments, self.fixed,
                                                          strict=True))]
        if self.secret_key is not None:
            columns.append(f'CAST("{self.secret_key}" AS BIGINT) AS s')
        return f"SELECT {', '.join(columns)}\nFROM data"

    def part_of(self, group: tuple[Any, ...]) -> int:
        """The index in this table's own group grid of a group of the query."""
        index = 0
        for (position, _), domain in zip(self.group_keys, self.domains, strict=True):
            index = index * len(domain) + domain.index(group[position])
        return index


def local_side_rows(side: Side, dataset: Dataset) -> tuple[np.ndarray, list[np.ndarray]]:
    """The owner's rows: (key, key not NULL, passes WHERE, arguments not NULL, group
    indicators) as integers, and the arguments."""
    table = run_local(side.local_sql(), dataset)
    keys = np.asarray(pc.fill_null(table.column("k"), 0).to_numpy(), dtype=np.int64)
    if np.any(np.abs(keys) >= KEY_LIMIT):
        raise QueryError(f"join keys of {side.table!r} must lie within +-2^61")
    flags = [keys, np.asarray(table.column("kn").to_numpy(), dtype=np.int64),
             np.asarray(table.column("w").to_numpy(), dtype=np.int64)]
    values = []
    for i, fixed in enumerate(side.fixed):
        column = table.column(f"a{i}")
        flags.append((~np.asarray(column.is_null().to_numpy(), dtype=bool)).astype(np.int64))
        values.append(np.asarray(pc.fill_null(column, 0).to_numpy(),
                                 dtype=np.float64 if fixed else np.int64))
    flags += list(_indicators(side, table))
    if side.secret_key is not None:
        flags.append(np.asarray(table.column("s").to_numpy(), dtype=np.int64))
    return np.stack(flags), values


def _indicators(side: Side, table: pa.Table) -> np.ndarray:
    """One-hot rows of the table's group parts (none if it has no group keys)."""
    if not side.group_keys:
        return np.zeros((0, table.num_rows), dtype=np.int64)
    flat = rows_module.grid_codes(table, side.domains)
    return (flat[None, :] == np.arange(side.grid_size)[:, None]).astype(np.int64)
