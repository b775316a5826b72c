"""``GROUP BY`` on a secret key (no public domain): groups found by a secure sort.

Each owner shares all its rows: the key, a 0/1 flag (the row passes
``WHERE``), and the aggregate arguments with their not-NULL flags. The
compute parties then

1. sort the rows by (does not count, key), so that every group's rows are
   adjacent (:mod:`concilium.ops.sort`: shuffle, then opened comparisons of
   distinct shuffled rows);
2. mark where a group starts (the key or the flag changes: secure equality)
   and run a segmented scan (:func:`concilium.ops.sort.segmented_scan`) of the
   counts and sums, so that each group's last row holds its totals;
3. finish ``AVG`` and the ``SELECT`` and ``HAVING`` expressions on every row,
   and flag the rows to output: a group's last row, of counted rows, passing
   ``HAVING``;
4. shuffle those rows again with a fresh secret permutation, open the flags,
   and open the selected columns of the flagged rows only.

Reveals: each owner's row count; the number of groups in the result and
their selected values (the result itself); nothing about which rows formed
which group (the second shuffle hides the positions). Supported aggregates:
``COUNT(*)``, ``COUNT``, ``SUM``, ``AVG``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.compute as pc

from concilium.data.dataset import Dataset
from concilium.data.secret_array import SecretArray
from concilium.data.session import Session
from concilium.governance.policy import OutputPolicy
from concilium.ops import sort as sorting
from concilium.query.delivery import OutputColumn, deliver, result_frame
from concilium.query.disclosure import round_to
from concilium.query.expressions import evaluate
from concilium.query.local import run_local, share_rows
from concilium.query.plan import Plan

__all__ = ["SECRET_GROUP_FUNCTIONS", "local_group_rows", "run_secret_groups"]

SECRET_GROUP_FUNCTIONS = ("count", "sum", "avg")


def local_group_rows(plan: Plan, dataset: Dataset) -> tuple[np.ndarray, list[np.ndarray]]:
    """(key, passes WHERE, arguments not NULL) as integers, and the arguments."""
    assert plan.row_sql is not None
    table = run_local(plan.row_sql, dataset)
    flags = [np.asarray(table.column("g0").to_numpy(), dtype=np.int64),
             np.asarray(table.column("w").to_numpy(), dtype=np.int64)]
    values = []
    for i in plan.row_arguments:
        column = table.column(f"a{i}")
        flags.append((~np.asarray(column.is_null().to_numpy(), dtype=bool)).astype(np.int64))
        values.append(np.asarray(pc.fill_null(column, 0).to_numpy(),
                                 dtype=np.float64 if plan.argument_fixed[i] else np.int64))
    return np.stack(flags), values


def _input(session: Session, plan: Plan, dataset: Dataset | None
           ) -> tuple[SecretArray, list[SecretArray]]:
    return share_rows(session, plan.entry.owners, plan.query.table,
                      None if dataset is None else (lambda: local_group_rows(plan, dataset)),
                      [plan.argument_fixed[i] for i in plan.row_arguments])


def run_secret_groups(session: Session, plan: Plan, datasets: Mapping[str, Dataset],
                      to: Sequence[int] | None,
                      policy: OutputPolicy | None = None) -> pd.DataFrame | None:
    policy = policy or OutputPolicy()
    backend = session.backend
    flags, values = _input(session, plan, datasets.get(plan.query.table))
    keys, counted = flags[0], flags[1]
    present = [counted * flags[2 + k] for k in range(len(values))]
    sums = [p * v for p, v in zip(present, values, strict=True)]
    columns = [counted, *present, *sums]
    outcome = sorting.sort(backend, [sorting.SortKey((1 - counted).shares, full_range=False),
                                     sorting.SortKey(keys.shares, full_range=True)],
                           [c.shares for c in columns])
    key = SecretArray(session, outcome.keys[1], 0)
    rows = [SecretArray(session, shares, c.fractional_bits)
            for shares, c in zip(outcome.payload, columns, strict=True)]
    length = key.shape[0]
    if length == 0:
        return _frame(session, plan, {}, {}, key, key, to, [])
    one = session.constant(np.ones(1, dtype=np.int64))
    same = (key[1:] == key[:-1]) * (rows[0][1:] == rows[0][:-1])
    starts = SecretArray.concatenate([one, 1 - same], axis=-1)
    totals_shares, _ = sorting.segmented_scan(backend, starts.shares,
                                              np.stack([r.shares for r in rows], axis=1))
    totals = [SecretArray(session, totals_shares[:, k], r.fractional_bits)
              for k, r in enumerate(rows)]
    last = SecretArray.concatenate([starts[1:], one], axis=-1)
    count = len(values)
    aggregates: dict[str, SecretArray] = {}
    defined: dict[str, Any] = {}
    for aggregate in plan.query.aggregates:
        if not aggregate.arguments:
            aggregates[aggregate.sql], defined[aggregate.sql] = totals[0], True
            continue
        k = plan.row_arguments.index(plan.arguments[aggregate.arguments[0].sql(
            dialect="duckdb")])
        non_null, total = totals[1 + k], totals[1 + count + k]
        if aggregate.function == "count":
            aggregates[aggregate.sql], defined[aggregate.sql] = non_null, True
        elif aggregate.function == "sum":
            aggregates[aggregate.sql], defined[aggregate.sql] = total, non_null >= 1
        else:
            aggregates[aggregate.sql] = total.as_fixed() / non_null
            defined[aggregate.sql] = non_null >= 1
    include = last * rows[0]
    suppressed = []
    if policy.min_cohort > 1:  # small groups are dropped; their secret keys are not listed
        include = include * (totals[0] >= policy.min_cohort)
        suppressed.append({"group": "groups with secret keys are not listed",
                           "rule": f"min_cohort: fewer than {policy.min_cohort} rows"})
    if policy.rounding is not None:
        aggregates = {text: round_to(value, policy.rounding)
                      for text, value in aggregates.items()}
    group_values = {plan.query.group_by[0].lower(): key,
                    "sql:" + plan.query.group_expressions[0].sql(dialect="duckdb"): key}
    if plan.query.having is not None:
        passed, passed_ok = evaluate(plan.query.having, aggregates, defined, group_values,
                                     session)
        include = include * passed * (passed_ok if isinstance(passed_ok, SecretArray)
                                      else 1)
    return _frame(session, plan, aggregates, defined, include, key, to, suppressed)


def _frame(session: Session, plan: Plan, aggregates: Mapping[str, SecretArray],
           defined: Mapping[str, Any], include: SecretArray, key: SecretArray,
           to: Sequence[int] | None, suppressed: list[dict[str, Any]]
           ) -> pd.DataFrame | None:
    group_values = {plan.query.group_by[0].lower(): key,
                    "sql:" + plan.query.group_expressions[0].sql(dialect="duckdb"): key}
    outputs = []
    for node, name in plan.query.select:
        value, ok = evaluate(node, aggregates, defined, group_values, session)
        if not isinstance(value, SecretArray):
            value = key * 0 + value
        known = ok if isinstance(ok, SecretArray) else key * 0 + 1
        outputs.append((name, value, known))
    columns = [include] + [v for _, v, _ in outputs] + [k for _, _, k in outputs]
    if key.shape[0] == 0:
        shuffled = columns
    else:  # hide which sorted positions are group ends
        moved, _ = sorting.shuffle(session.backend, [c.shares for c in columns])
        shuffled = [SecretArray(session, m, c.fractional_bits)
                    for m, c in zip(moved, columns, strict=True)]
    chosen = np.flatnonzero(np.atleast_1d(shuffled[0].reveal()))
    released = [OutputColumn(name, shuffled[1 + k][chosen],
                             shuffled[1 + len(outputs) + k][chosen])
                for k, (name, _, _) in enumerate(outputs)]
    delivery = deliver(session, released, len(chosen), to, suppressed)
    return None if delivery is None else result_frame(plan, delivery, session.threat_model)
