"""``simulate``: run a SQL query over a whole consortium in one process.

    >>> import pandas as pd
    >>> from concilium import simulate
    >>> schema = {"age": {"type": "int", "low": 0, "high": 120},
    ...           "ward": {"type": "category", "domain": ["a", "b"]}}
    >>> hospitals = [pd.DataFrame({"age": [30, 41], "ward": ["a", "b"]}),
    ...              pd.DataFrame({"age": [52, 67], "ward": ["a", "a"]})]
    >>> result = simulate("SELECT ward, COUNT(*) AS n, AVG(age) AS mean_age "
    ...                   "FROM admissions GROUP BY ward ORDER BY ward",
    ...                   {"admissions": hospitals}, {"admissions": schema})
    >>> result.round(3)  # fixed point: within a few units of 2^-16
      ward  n  mean_age
    0    a  3    49.667
    1    b  1    41.000

Each owner's DataFrame (pandas, polars or pyarrow) is checked against the
schema, the three compute parties run as threads over the in-memory
transport (owners beyond the third are outside data owners, who share their
partial statistics or rows into the compute parties), and the result
comes back as a pandas DataFrame. It works in Jupyter: nothing here needs
its own event loop or process.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from concilium.data.dataset import Dataset
from concilium.data.schema import Schema
from concilium.data.secret_array import Rounding
from concilium.data.session import Session
from concilium.errors import ConfigurationError
from concilium.governance.policy import OutputPolicy
from concilium.mpc.protocols import protocol as registry
from concilium.query.capabilities import check_capabilities
from concilium.query.catalog import TableEntry
from concilium.query.execute import run_plan
from concilium.query.outside import contribute_inputs
from concilium.query.planner import plan_query
from concilium.query.policy_check import check_policy
from concilium.testing import run_parties

__all__ = ["simulate"]


def _schema(value: Schema | Mapping[str, Any]) -> Schema:
    return value if isinstance(value, Schema) else Schema.from_mapping(value)


def simulate(sql: str, tables: Mapping[str, Sequence[Any]],
             schemas: Mapping[str, Schema | Mapping[str, Any]], *,
             policy: OutputPolicy | Mapping[str, Any] | None = None,
             truncation: Rounding = "reliable", protocol: str = "rep3",
             compute_parties: int | None = None, timeout: float = 300.0) -> pd.DataFrame:
    """Run ``sql`` securely over ``tables`` ({name: [one frame per owner]}) and return
    the result as a DataFrame. Every owner's rows are checked against ``schemas``
    before anything is shared. ``policy``: an output policy (or its TOML mapping),
    checked when planning and enforced on secret shares; ``result.attrs["suppressed"]``
    lists the cells it suppressed and why, ``result.attrs["threat_model"]`` what the
    result's security rests on. ``protocol``: any registered protocol;
    ``compute_parties``: how many of the owners compute (default: the protocol's own
    number); owners beyond them share as outside parties.

    Reveals: what :func:`concilium.query.execute.run_plan` reveals (the result, and
    which public groups it has), to the caller only.
    """
    owners = max((len(frames) for frames in tables.values()), default=0)
    if not owners:
        raise ConfigurationError("give at least one table with at least one owner's data")
    entries, datasets = {}, {}
    for name, frames in tables.items():
        if name not in schemas:
            raise ConfigurationError(f"table {name!r} has no schema")
        schema = _schema(schemas[name])
        entries[name] = TableEntry(schema, tuple(range(len(frames))))
        datasets[name] = [frame if isinstance(frame, Dataset)  # with its releases, say
                          else Dataset.from_frame(name, frame, schema) for frame in frames]
    rules = policy if isinstance(policy, OutputPolicy) else OutputPolicy.from_mapping(
        policy or {})
    spec = registry(protocol)
    compute = spec.default_parties if compute_parties is None else int(compute_parties)
    problem = spec.parties_problem(compute)
    if problem:
        raise ConfigurationError(problem)
    plan = plan_query(sql, entries, policy=rules)
    check_policy(plan, rules)
    check_capabilities(plan, spec, truncation, outside=owners > compute, policy=rules)

    def held(party: int) -> dict[str, Dataset]:
        return {name: tables_[party] for name, tables_ in datasets.items()
                if party < len(tables_)}

    def run(session: Session) -> pd.DataFrame | None:
        return run_plan(session, plan, held(session.party), policy=rules)

    def outside(index: int) -> Any:
        return lambda party: contribute_inputs(party, plan, held(index))

    outsiders = [outside(k) for k in range(compute, owners)]
    results = run_parties(compute, run, outside=outsiders, protocol=protocol,
                          truncation=truncation, timeout=timeout)
    frame = results[0]
    assert isinstance(frame, pd.DataFrame)
    return frame

