"""Row-level secure steps: quantiles (``MEDIAN``, ``PERCENTILE_CONT``) and
``COUNT(DISTINCT ...)``.

A quantile cannot be assembled from partial statistics, so each owner shares
its rows of the argument: *all* of its rows, with a secret flag saying
whether the row passes ``WHERE`` and is not NULL (so the number of shared rows
is the owner's table size, never the filter's selectivity), and a secret
group code. The compute parties then

1. sort all rows by (group code, or past the last group if the row does not
   count; value), with the shuffle-then-sort of :mod:`concilium.ops.sort`;
2. locate each group's quantile: group ``g`` starts at ``sum_(h<g) n_h`` (the
   per-group counts come from the owners' partial statistics), and quantile
   ``p`` sits at position ``p (n_g - 1)`` within it, as in DuckDB's
   ``quantile_cont``; the floor of that position is an exact truncation;
3. select the two neighbouring values with a secret one-hot row (equality
   tests against the public positions, then one matrix product) and
   interpolate.

A distinct count marks where (group, value) changes between neighbours of the
sorted rows (secure equality), and counts those run starts within each group
from their prefix sums at the group's two ends (the same selection).

Reveals: the number of rows each owner holds (the size of its shared
column), and what the sort reveals (see :mod:`concilium.ops.sort`: nothing
about the data). The quantiles themselves stay secret until the plan's
final reveal.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from concilium.data.dataset import Dataset
from concilium.data.secret_array import SecretArray
from concilium.data.session import Session
from concilium.ops import sort as sorting
from concilium.ops.truncation import exact_truncate
from concilium.query.catalog import TableEntry
from concilium.query.local import run_local, share_rows
from concilium.query.sql import Query

__all__ = ["RowData", "RowPlan", "SortedRows", "count_distinct", "grid_codes", "group_codes",
           "input_rows", "largest", "local_rows", "quantile", "sorted_values"]


class RowPlan(Protocol):
    """What the row-level steps need of a plan (:class:`~concilium.query.aggregate_plan.
    AggregatePlan` has it)."""

    @property
    def query(self) -> Query: ...

    @property
    def entry(self) -> TableEntry: ...

    @property
    def domains(self) -> tuple[tuple[Any, ...], ...]: ...

    @property
    def row_arguments(self) -> tuple[int, ...]: ...

    @property
    def argument_fixed(self) -> tuple[bool, ...]: ...

    @property
    def row_sql(self) -> str | None: ...


def group_codes(plan: RowPlan, table: pa.Table) -> np.ndarray:
    """Each row's index in the plan's public group grid (row-major, as the grid)."""
    if not plan.query.group_by:
        return np.zeros(table.num_rows, dtype=np.int64)
    return grid_codes(table, plan.domains)


def grid_codes(table: pa.Table, domains: Sequence[Sequence[Any]]) -> np.ndarray:
    """Each row's index in the grid of its group columns ``g0, g1, ...`` over their
    public ``domains`` (row-major; a domain's None is the NULL group)."""
    codes, sizes = [], []
    for k, domain in enumerate(domains):
        known = [v for v in domain if v is not None]
        values = table.column(f"g{k}").to_pandas()
        code = pd.Categorical(values, categories=known).codes.astype(np.int64)
        if None in domain:
            code = np.where(code < 0, len(known), code)
        codes.append(code)
        sizes.append(len(domain))
    return np.ravel_multi_index(codes, sizes).astype(np.int64)


def local_rows(plan: RowPlan, dataset: Dataset) -> tuple[np.ndarray, list[np.ndarray]]:
    """The owner's rows for the quantile arguments: (codes and flags, values)."""
    assert plan.row_sql is not None
    table = run_local(plan.row_sql, dataset)
    passes = np.asarray(table.column("w").to_numpy(), dtype=np.int64)
    flags = [group_codes(plan, table)]
    values = []
    for i in plan.row_arguments:
        column = table.column(f"a{i}")
        present = ~np.asarray(column.is_null().to_numpy(), dtype=bool)
        flags.append(passes * present)
        kind = np.float64 if plan.argument_fixed[i] else np.int64
        values.append(np.asarray(pc.fill_null(column, 0).to_numpy(), dtype=kind))
    return np.stack(flags), values


@dataclass
class RowData:
    """All owners' shared rows, concatenated (secret)."""

    codes: SecretArray
    counted: dict[int, SecretArray]  # argument -> 0/1: passes WHERE and is not NULL
    values: dict[int, SecretArray]


def input_rows(session: Session, plan: RowPlan, dataset: Dataset | None) -> RowData:
    every, columns = share_rows(
        session, plan.entry.owners, plan.query.table,
        None if dataset is None else (lambda: local_rows(plan, dataset)),
        [plan.argument_fixed[i] for i in plan.row_arguments])
    return RowData(codes=every[0],
                   counted={i: every[1 + k] for k, i in enumerate(plan.row_arguments)},
                   values=dict(zip(plan.row_arguments, columns, strict=True)))


_VALUE_BITS = 48  # fixed-point values lie in (-2^47, 2^47) as ring integers


@dataclass
class SortedRows:
    """An argument's rows sorted by (group, value); two neighbours are the same
    (group, value) exactly when all their ``identity`` arrays are equal."""

    values: SecretArray
    identity: list[SecretArray]


def sorted_values(rows: RowData, groups: int, argument: int) -> SortedRows:
    """The argument's values sorted by (group, value), rows that do not count last.

    For fixed-point values and fewer than 2^14 groups both keys fit one signed
    word, ``group * 2^48 + value + 2^47``, and the sort compares one key."""
    value = rows.values[argument]
    order_key = rows.codes + (1 - rows.counted[argument]) * groups
    backend = value.session.backend
    if value.is_fixed and 2 * groups + 1 < 2**14:
        shifted = backend.add_public(value.shares, np.asarray(1 << (_VALUE_BITS - 1),
                                                              dtype=np.uint64))
        composite = backend.add(backend.mul_public(order_key.shares, np.asarray(
            1 << _VALUE_BITS, dtype=np.uint64)), shifted)
        outcome = sorting.sort(backend, [sorting.SortKey(composite)], [value.shares])
        return SortedRows(SecretArray(value.session, outcome.payload[0],
                                      value.fractional_bits),
                          [SecretArray(value.session, outcome.keys[0], 0)])
    outcome = sorting.sort(backend, [sorting.SortKey(order_key.shares, full_range=False),
                                     sorting.SortKey(value.shares,
                                                     full_range=not value.is_fixed)])
    ordered = SecretArray(value.session, outcome.keys[1], value.fractional_bits)
    return SortedRows(ordered, [SecretArray(value.session, outcome.keys[0], 0),
                                SecretArray(value.session, outcome.keys[1], 0)])


_POSITION_BITS = 30


def _pick(table: SecretArray, positions: SecretArray) -> SecretArray:
    """``table[positions]`` for secret positions (nothing where a position is outside):
    secret one-hot rows by equality with the public indices, then one product."""
    one_hot = positions.reshape(-1, 1) == np.arange(table.shape[0])
    return one_hot @ table


def count_distinct(ordered: SortedRows, counts: SecretArray) -> SecretArray:
    """Per group, the number of distinct values among its counted rows: a run starts
    where (group, value) changes; the runs of group ``g`` are the prefix sums of run
    starts at its last row minus those before its first row."""
    session = ordered.values.session
    length = ordered.values.shape[0]
    if length == 0:
        return counts * 0
    same = None
    for identity in ordered.identity:
        equal = identity[1:] == identity[:-1]
        same = equal if same is None else same * equal
    assert same is not None
    starts_run = SecretArray.concatenate([session.constant(np.ones(1, dtype=np.int64)),
                                          1 - same], axis=-1)
    runs = starts_run.cumsum()
    first = counts.cumsum() - counts
    picked = _pick(runs, SecretArray.stack([first + counts - 1, first - 1])).reshape(2, -1)
    return picked[0] - picked[1]


def largest(ordered: SortedRows, counts: SecretArray, n: int) -> SecretArray:
    """Per group, the sum of its ``n`` largest counted values (all of them if fewer):
    the last ``n`` rows of each group in the sorted order."""
    first = counts.cumsum() - counts
    last = first + counts - 1
    positions = SecretArray.stack([last - j for j in range(n)])
    picked = _pick(ordered.values, positions).reshape(n, -1)
    present = SecretArray.stack([counts > j for j in range(n)])
    return (picked * present).sum(axis=0)


def quantile(ordered: SecretArray, counts: SecretArray, fraction: float) -> SecretArray:
    """Per group, DuckDB's ``quantile_cont``: interpolate at ``fraction * (n_g - 1)``.

    The position is an integer product ``(n_g - 1) * round(fraction * 2^30)`` (exact,
    no truncation), its floor an exact truncation, and the interpolation weight its
    low 30 bits, so that neighbouring ranks are never confused."""
    session = ordered.session
    backend = session.backend
    starts = counts.cumsum() - counts
    scaled = (counts - 1) * round(fraction * 2**_POSITION_BITS)
    floor = SecretArray(session, exact_truncate(backend, scaled.shares, _POSITION_BITS), 0)
    remainder = scaled - floor * (1 << _POSITION_BITS)  # in [0, 2^30)
    bits = session.codec.fractional_bits
    weight = SecretArray(session, backend.trunc(remainder.shares, _POSITION_BITS - bits,
                                                "reliable"), bits)
    low = starts + floor
    picked = _pick(ordered, SecretArray.stack([low, low + 1])).reshape(2, -1)
    return picked[0] + weight * (picked[1] - picked[0])
