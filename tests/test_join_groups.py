"""GROUP BY a secret column over a join, differentially against DuckDB."""

from __future__ import annotations

import itertools

import duckdb
import numpy as np
import pandas as pd
import pytest

from concilium import simulate
from concilium.data.schema import Schema
from concilium.errors import PolicyViolation, UnsupportedQuery
from concilium.governance.policy import OutputPolicy
from concilium.query import TableEntry, plan_query
from concilium.query.policy_check import check_policy
from tests.test_queries import _assert_same

SCHEMAS = {
    "customers": {"id": {"type": "key", "unique": True},
                  "age": {"type": "int", "low": 0, "high": 120},
                  "postcode": {"type": "int"}},  # no public domain: a secret group key
    "accounts": {"columns": {"customer": {"type": "key", "nullable": True},
                             "balance": {"type": "fixed", "low": -100000, "high": 100000,
                                         "nullable": True},
                             "branch": {"type": "int"}}, "max_rows": 1000},
    "loans": {"columns": {"customer": {"type": "key"},
                          "amount": {"type": "fixed", "low": 0, "high": 50000,
                                     "decimals": 2}}, "max_rows": 1000},
}


def _split(frame: pd.DataFrame, parts: int) -> list[pd.DataFrame]:
    edges = np.linspace(0, len(frame), parts + 1).astype(int)
    return [frame.iloc[a:b].reset_index(drop=True) for a, b in itertools.pairwise(edges)]


def _data(account_owners: int) -> dict[str, list[pd.DataFrame]]:
    rng = np.random.default_rng(17)
    ids = rng.permutation(900)[:200]
    customers = pd.DataFrame({"id": ids, "age": rng.integers(18, 90, 200),
                              "postcode": rng.integers(0, 6, 200) * 1009 + 75000})
    accounts = pd.DataFrame({
        "customer": rng.choice(np.r_[ids, np.arange(2000, 2040)], 300).astype(float),
        "balance": np.round(rng.normal(1000, 3000, 300) * 64) / 64,
        "branch": rng.integers(0, 8, 300) * 7 - 20})
    accounts.loc[::19, "customer"] = np.nan
    accounts.loc[::13, "balance"] = np.nan
    loans = pd.DataFrame({
        "customer": rng.choice(np.r_[ids, np.arange(3000, 3020)], 120).astype(float),
        "amount": np.round(rng.uniform(0, 50000, 120), 2)})
    return {"customers": [customers], "accounts": _split(accounts, account_owners),
            "loans": [loans]}


QUERIES = [
    # grouped by the many side's secret column, aggregates of both tables
    "SELECT a.branch, COUNT(*) AS n, SUM(c.age) AS s, AVG(a.balance) AS b, "
    "MAX(a.balance) AS hi, COUNT(a.balance) AS m FROM customers c JOIN accounts a "
    "ON c.id = a.customer GROUP BY a.branch ORDER BY a.branch",
    # grouped by the unique side's secret column, with filters on both sides and HAVING
    "SELECT c.postcode, COUNT(*) AS n, SUM(a.balance) AS s, MIN(c.age) AS young "
    "FROM customers c JOIN accounts a ON c.id = a.customer WHERE c.age > 25 "
    "AND a.balance > 0 GROUP BY c.postcode HAVING COUNT(*) > 5 ORDER BY c.postcode",
    # three tables on one key
    "SELECT c.postcode, COUNT(*) AS n, SUM(l.amount) AS lent, AVG(a.balance) AS b "
    "FROM customers c JOIN accounts a ON c.id = a.customer JOIN loans l "
    "ON c.id = l.customer GROUP BY c.postcode ORDER BY c.postcode",
    # many-to-many: pairs of accounts of one customer
    "SELECT a.branch, COUNT(*) AS n, SUM(b.balance) AS s FROM accounts a JOIN accounts b "
    "ON a.customer = b.customer GROUP BY a.branch ORDER BY a.branch",
    # LEFT JOIN from the grouping table: customers without accounts count once
    "SELECT c.postcode, COUNT(*) AS n, COUNT(a.balance) AS m, SUM(a.balance) AS s "
    "FROM customers c LEFT JOIN accounts a ON c.id = a.customer GROUP BY c.postcode "
    "ORDER BY c.postcode",
]


def _duckdb(sql: str, data: dict[str, list[pd.DataFrame]]) -> pd.DataFrame:
    connection = duckdb.connect()
    for name, frames in data.items():
        connection.register(name, pd.concat(frames, ignore_index=True))
    return connection.sql(sql).df()


@pytest.mark.parametrize("owners", [2, 4])
@pytest.mark.parametrize("sql", QUERIES)
def test_secret_group_keys_over_joins_match_duckdb(sql: str, owners: int,
                                                   protocol: str) -> None:
    data = _data(owners)  # 4 or 6 owners in all, most of them outside parties
    got = simulate(sql, data, SCHEMAS, protocol=protocol, compute_parties=protocol.parties)
    want = _duckdb(sql, data)
    assert len(want) >= 4
    _assert_same(got, want)


def test_a_min_cohort_over_secret_groups_of_a_join_counts_joined_rows(protocol: str) -> None:
    data = _data(2)
    sql = ("SELECT a.branch, COUNT(*) AS n, MAX(a.balance) AS hi FROM customers c "
           "JOIN accounts a ON c.id = a.customer GROUP BY a.branch ORDER BY a.branch")
    want = _duckdb("SELECT a.branch, COUNT(*) AS n FROM customers c JOIN accounts a "
                   "ON c.id = a.customer GROUP BY a.branch", data)
    threshold = int(want["n"].sort_values().iloc[2])
    got = simulate(sql.replace(", MAX(a.balance) AS hi", ""), data, SCHEMAS,
                   policy={"min_cohort": threshold}, protocol=protocol,
                   compute_parties=protocol.parties)
    kept = want[want["n"] >= threshold]
    assert sorted(got["branch"]) == sorted(kept["branch"]) and len(kept) < len(want)
    # a branch's MAX(balance) is one account's: under a cohort of 2 it is never released
    extremes = simulate(sql, data, SCHEMAS, policy={"min_cohort": 2}, protocol=protocol,
                        compute_parties=protocol.parties)
    assert extremes.empty and "not listed" in extremes.attrs["suppressed"][0]["group"]


def test_dominance_over_secret_groups_of_a_join(protocol: str) -> None:
    data = _data(2)
    customers = data["customers"][0].copy()
    top = customers["id"].iloc[0]
    customers.loc[0, "age"] = 119
    data["customers"] = [customers]
    accounts = pd.concat(data["accounts"], ignore_index=True)
    accounts.loc[:5, "customer"] = float(top)  # six accounts of the oldest customer
    data["accounts"] = _split(accounts, 2)
    sql = ("SELECT c.postcode, SUM(c.age) AS s, COUNT(*) AS n FROM customers c "
           "JOIN accounts a ON c.id = a.customer GROUP BY c.postcode")
    joined = accounts.merge(customers, left_on="customer", right_on="id")
    per_customer = joined.groupby(["postcode", "id"])["age"].sum()
    shares = {p: per_customer[p].max() / per_customer[p].sum()
              for p in per_customer.index.levels[0]}
    n, k = 1, 20.0
    dominated = {p for p, share in shares.items() if share > k / 100}
    assert 0 < len(dominated) < len(shares) - 1
    got = simulate(sql, data, SCHEMAS, policy={"dominance": [n, k]}, protocol=protocol,
                   compute_parties=protocol.parties)
    assert not dominated & set(got["postcode"])
    assert len(set(shares) - set(got["postcode"])) >= 2  # never exactly one hidden
    expected = joined.groupby("postcode")["age"].sum()
    assert got.set_index("postcode")["s"].to_dict() == {
        p: expected[p] for p in got["postcode"]}


def _tables() -> dict[str, TableEntry]:
    return {"customers": TableEntry(Schema.from_mapping(SCHEMAS["customers"]), (0,)),
            "accounts": TableEntry(Schema.from_mapping(SCHEMAS["accounts"]), (1, 2)),
            "loans": TableEntry(Schema.from_mapping(SCHEMAS["loans"]), (2,))}


@pytest.mark.parametrize(("sql", "construct"), [
    ("SELECT a.branch, MIN(c.age) FROM customers c JOIN accounts a ON c.id = a.customer "
     "GROUP BY a.branch", "MIN(c.age)"),
    ("SELECT a.branch, COUNT(DISTINCT c.age) FROM customers c JOIN accounts a "
     "ON c.id = a.customer GROUP BY a.branch", "c.age"),
    ("SELECT a.balance, COUNT(*) FROM customers c JOIN accounts a ON c.id = a.customer "
     "GROUP BY a.balance", "balance"),
    ("SELECT a.branch, COUNT(*) FROM customers c LEFT JOIN accounts a "
     "ON c.id = a.customer GROUP BY a.branch", "GROUP BY"),
    ("SELECT a.branch, COUNT(*) FROM customers c JOIN accounts a ON c.id = a.customer "
     "GROUP BY a.branch ORDER BY a.branch LIMIT 2", "LIMIT"),
])
def test_what_secret_groups_of_a_join_cannot_do_is_refused(sql: str, construct: str) -> None:
    with pytest.raises(UnsupportedQuery) as caught:
        plan_query(sql, _tables())
    assert caught.value.construct is not None and construct in caught.value.construct


def test_a_joined_sum_that_could_overflow_is_refused_at_planning() -> None:
    tables = _tables()
    tables["accounts"] = TableEntry(Schema.from_mapping(
        {**SCHEMAS["accounts"], "max_rows": 10**7}), (1, 2))
    sql = ("SELECT a.branch, SUM(b.balance) FROM accounts a JOIN accounts b "
           "ON a.customer = b.customer GROUP BY a.branch")
    with pytest.raises(UnsupportedQuery, match=r"bound 100000 times .* rows") as caught:
        plan_query(sql, tables)
    assert caught.value.construct is not None and "balance" in caught.value.construct
    plan_query(sql.replace("SUM(b.balance)", "COUNT(*)"), tables)  # counts fit


def test_dominance_on_another_tables_sum_is_refused_not_skipped() -> None:
    plan = plan_query("SELECT c.postcode, SUM(a.balance) FROM customers c JOIN accounts a "
                      "ON c.id = a.customer GROUP BY c.postcode", _tables())
    with pytest.raises(PolicyViolation, match="dominance rule cannot be enforced"):
        check_policy(plan, OutputPolicy(dominance=(1, 50.0)))
    with pytest.raises(PolicyViolation, match="metrics only"):
        check_policy(plan, OutputPolicy(metrics_only=True))
