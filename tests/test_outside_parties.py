"""Owners and recipients that are not compute parties: every plan kind with five
owners into three compute parties, and results delivered to an outside party
only."""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
import pytest

from concilium import simulate
from concilium.data.dataset import Dataset
from concilium.data.schema import Schema
from concilium.governance.policy import OutputPolicy
from concilium.query import TableEntry, plan_query
from concilium.query.execute import run_plan
from concilium.query.outside import take_part
from concilium.testing import run_parties
from tests.test_joins import ACCOUNTS, CUSTOMERS
from tests.test_queries import SCHEMA, VISITS, _assert_same, _owner_frame

FIVE = [_owner_frame(np.random.default_rng(20 + k), rows)
        for k, rows in enumerate((120, 80, 200, 60, 90))]


def _duckdb(sql: str, tables: dict[str, list[pd.DataFrame]]) -> pd.DataFrame:
    connection = duckdb.connect()
    for name, frames in tables.items():
        connection.register(name, pd.concat(frames, ignore_index=True))
    return connection.sql(sql).df()


@pytest.mark.parametrize("sql", [
    "SELECT MEDIAN(stay) AS m, COUNT(*) AS n FROM admissions WHERE condition = 'copd'",
    "SELECT condition, COUNT(DISTINCT age) AS d, PERCENTILE_CONT(0.9) WITHIN GROUP "
    "(ORDER BY cost) AS p FROM admissions GROUP BY condition ORDER BY condition",
    "SELECT condition, MIN(age) AS lo, MAX(stay) AS hi, STDDEV(cost) AS sd "
    "FROM admissions GROUP BY condition ORDER BY condition",
])
def test_row_plans_with_five_owners_match_duckdb(sql: str, protocol: str) -> None:
    tables = {"admissions": FIVE}
    _assert_same(simulate(sql, tables, {"admissions": SCHEMA},
                          protocol=protocol, compute_parties=protocol.parties),
                 _duckdb(sql, tables))


def test_secret_key_groups_with_five_owners_match_duckdb(protocol: str) -> None:
    rng = np.random.default_rng(9)
    frames = [pd.DataFrame({"patient": rng.integers(0, 30, 40) * 7919,
                            "cost": np.round(rng.uniform(0, 100, 40)),
                            "ward": rng.choice(["a", "b"], 40)}) for _ in range(5)]
    sql = ("SELECT patient, COUNT(*) AS n, SUM(cost) AS s FROM visits WHERE ward = 'a' "
           "GROUP BY patient ORDER BY patient")
    tables = {"visits": frames}
    _assert_same(simulate(sql, tables, {"visits": VISITS}, protocol=protocol,
                          compute_parties=protocol.parties), _duckdb(sql, tables))


def test_a_join_with_outside_owners_on_both_sides_matches_duckdb(protocol: str) -> None:
    rng = np.random.default_rng(12)
    ids = rng.permutation(5000)[:400]
    customers = [pd.DataFrame({"id": part, "age": rng.integers(18, 90, len(part)),
                               "segment": rng.choice(["retail", "business"], len(part))})
                 for part in np.array_split(ids, 5)]
    accounts = [pd.DataFrame({"customer": rng.choice(ids, 60),
                              "balance": np.round(rng.normal(100, 50, 60)),
                              "kind": rng.choice(["savings", "checking"], 60)})
                for _ in range(4)]
    tables = {"customers": customers, "accounts": accounts}
    sql = ("SELECT COUNT(*) AS n, SUM(a.balance) AS s, AVG(c.age) AS age FROM customers c "
           "JOIN accounts a ON c.id = a.customer WHERE c.segment = 'retail'")
    got = simulate(sql, tables, {"customers": CUSTOMERS, "accounts": ACCOUNTS}, protocol=protocol,
                   compute_parties=protocol.parties)
    _assert_same(got, _duckdb(sql, tables))


def test_a_result_for_an_outside_recipient_is_opened_to_it_alone(protocol: str) -> None:
    schema = Schema.from_mapping(SCHEMA)
    frames = FIVE[:4]  # parties 0-2 compute, party 3 owns data, party 4 receives
    sql = ("SELECT condition, COUNT(*) AS n, AVG(stay) AS s, MEDIAN(age) AS m "
           "FROM admissions GROUP BY condition ORDER BY n DESC")
    union = pd.concat(frames)
    counts = union.groupby("condition").size()
    threshold = int(counts.sort_values().iloc[1])  # the smallest group falls below
    policy = OutputPolicy(min_cohort=threshold)
    plan = plan_query(sql, {"admissions": TableEntry(schema, (0, 1, 2, 3))})
    datasets = [{"admissions": Dataset.from_frame("admissions", f, schema)} for f in frames]

    def compute(session: object) -> object:
        return run_plan(session, plan, datasets[session.party],  # type: ignore[attr-defined]
                        to=[4], policy=policy)

    # on four compute parties (rep4) party 3 computes too, and party 4 still receives
    computing = max(3, getattr(protocol, "parties", 3))
    owner = [] if computing == 4 else [
        lambda party: take_part(party, plan, datasets[3], recipient=False)]
    results = run_parties(computing, compute, outside=[
        *owner, lambda party: take_part(party, plan, {}, recipient=True)], protocol=protocol)
    assert results[:4] == [None, None, None, None]
    got = results[4]
    hidden = {c["group"]["condition"] for c in got.attrs["suppressed"]}
    small = {c["group"]["condition"] for c in got.attrs["suppressed"]
             if c["rule"].startswith("min_cohort")}
    assert small == set(counts[counts < threshold].index) and len(hidden) == 2
    expected = _duckdb(sql, {"admissions": frames})
    _assert_same(got, expected[~expected["condition"].isin(hidden)].reset_index(drop=True))
    # the same query at a compute recipient gives the same frame
    inside = run_parties(computing, lambda s: run_plan(s, plan, datasets[s.party], to=[0],
                                                       policy=policy),
                         outside=owner, protocol=protocol)
    pd.testing.assert_frame_equal(inside[0], got)
    assert inside[0].attrs["suppressed"] == got.attrs["suppressed"]
