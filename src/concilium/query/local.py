"""The owner's local engine: DuckDB over the owner's own validated table.

Everything an owner computes alone (partial statistics, flagged rows) runs
through :func:`run_local`, on the owner's machine, over its own data only;
nothing it reads leaves except through the secret sharing that follows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import duckdb
import numpy as np
import pyarrow as pa

from concilium.data.dataset import Dataset
from concilium.data.secret_array import SecretArray
from concilium.data.session import Session
from concilium.errors import QueryError

__all__ = ["run_local", "share_rows"]


def run_local(sql: str, dataset: Dataset) -> pa.Table:
    """Run ``sql`` over the owner's table (named ``data``) in a fresh DuckDB."""
    connection = duckdb.connect()
    connection.register("data", dataset.table)
    try:
        return connection.sql(sql).to_arrow_table()
    except duckdb.Error as error:
        raise QueryError(f"the owner's local part of the query failed: "
                         f"{str(error).splitlines()[0]}") from None
    finally:
        connection.close()


def share_rows(session: Session, owners: Sequence[int], table: str,
               produce: Callable[[], tuple[np.ndarray, list[np.ndarray]]] | None,
               fixed: Sequence[bool]) -> tuple[SecretArray, list[SecretArray]]:
    """Every owner secret-shares its rows: an integer matrix of flags (one row per
    flag) and one column per value (fixed point where ``fixed``); the compute parties
    get them concatenated over the owners, in owner order.

    ``produce`` computes this party's own rows (None when it holds no data).
    Reveals: each owner's row count (the size of what it shares).
    """
    flags, values = [], []
    for owner in owners:
        local = None
        if session.party == owner:
            if produce is None:
                raise QueryError(f"party {owner} owns part of {table!r} but has no dataset "
                                 "for it")
            local = produce()
        flags.append(session.input(owner, local[0] if local else None))
        values.append([session.input(owner, local[1][k] if local else None, fixed=kind)
                       for k, kind in enumerate(fixed)])
    every = SecretArray.concatenate(flags, axis=-1)
    return every, [SecretArray.concatenate([v[k] for v in values], axis=-1)
                   for k in range(len(fixed))]
