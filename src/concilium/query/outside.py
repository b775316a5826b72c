"""Owners and recipients that are not compute parties (the outsourced model).

An outside owner runs its part of a plan alone (DuckDB over its own rows) and
secret-shares exactly what a compute party owning the same data would input,
in the same order: partial statistics, shared rows for quantiles, distinct
counts and dominance, rows for secret-key groups, and each side of a join it
holds. An outside recipient receives the result (:mod:`concilium.query.delivery`).

The compute parties run :func:`concilium.query.execute.run_plan` with
``to`` naming the outside recipients; every outside party of the run calls
:func:`take_part` with the same plan.

Reveals: what the plan reveals (each owner's row count where rows are shared);
the result to the recipients only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from concilium.data.dataset import Dataset
from concilium.data.outside import OutsideParty
from concilium.errors import QueryError
from concilium.query.delivery import receive_delivery
from concilium.query.execute import contribute_statistics, result_frame
from concilium.query.join import JoinPlan, local_side_rows
from concilium.query.rows import local_rows
from concilium.query.secret_groups import local_group_rows

__all__ = ["contribute_inputs", "receive_result", "take_part"]


def _share(outside: OutsideParty, rows: tuple[np.ndarray, list[np.ndarray]],
           fixed: list[bool] | tuple[bool, ...]) -> None:
    """The owner's side of :func:`concilium.query.local.share_rows`."""
    flags, values = rows
    outside.contribute(flags)
    for column, kind in zip(values, fixed, strict=True):
        outside.contribute(column, fixed=kind)


def _dataset(outside: OutsideParty, datasets: Mapping[str, Dataset], table: str) -> Dataset:
    if table not in datasets:
        raise QueryError(f"party {outside.party} owns part of {table!r} but has no dataset "
                         "for it")
    return datasets[table]


def contribute_inputs(outside: OutsideParty, plan: Any, datasets: Mapping[str, Dataset]
                      ) -> None:
    """Secret-share this outside owner's part of ``plan`` into the compute parties.

    Reveals: this owner's row count to the compute parties where the plan shares rows.
    """
    me = outside.party
    if isinstance(plan, JoinPlan):
        for side in (plan.unique, plan.many):
            if me in side.entry.owners:
                _share(outside, local_side_rows(side, _dataset(outside, datasets,
                                                               side.table)), side.fixed)
        return
    if me not in plan.entry.owners:
        return
    dataset = _dataset(outside, datasets, plan.query.table)
    fixed = [plan.argument_fixed[i] for i in plan.row_arguments]
    if plan.query.secret_group:
        _share(outside, local_group_rows(plan, dataset), fixed)
        return
    contribute_statistics(outside, plan, dataset)
    if plan.row_arguments:
        _share(outside, local_rows(plan, dataset), fixed)


def receive_result(outside: OutsideParty, plan: Any) -> pd.DataFrame:
    """The result, at an outside recipient (the compute parties revealed it to it).

    Reveals: the result to this party only.
    """
    return result_frame(plan, receive_delivery(outside))


def take_part(outside: OutsideParty, plan: Any, datasets: Mapping[str, Dataset],
              recipient: bool) -> pd.DataFrame | None:
    """Everything an outside party does in a run: contribute, then receive."""
    contribute_inputs(outside, plan, datasets)
    return receive_result(outside, plan) if recipient else None
