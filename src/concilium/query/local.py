"""The owner's local engine: DuckDB over the owner's own validated table.

Everything an owner computes alone (partial statistics, flagged rows) runs
through :func:`run_local`, on the owner's machine, over its own data only;
nothing it reads leaves except through the secret sharing that follows.
"""

from __future__ import annotations

import duckdb
import pyarrow as pa

from concilium.data.dataset import Dataset
from concilium.errors import QueryError

__all__ = ["run_local"]


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
