"""Joins on secret keys across owners (vertical data), differentially against DuckDB."""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
import pytest

from concilium import simulate
from concilium.data.schema import Schema
from concilium.errors import PolicyViolation, QueryError, UnsupportedQuery
from concilium.query import TableEntry, plan_query
from concilium.query.explain import explain
from tests.test_queries import _assert_same

CUSTOMERS = {"id": {"type": "key", "unique": True},
             "age": {"type": "int", "low": 0, "high": 120},
             "segment": {"type": "category", "domain": ["retail", "business"]}}
# tables whose keys repeat state their most rows: a joined sum's range follows from them
ACCOUNTS = {"columns": {"customer": {"type": "key", "nullable": True},
                        "balance": {"type": "fixed", "low": -100000, "high": 100000,
                                    "nullable": True},
                        "kind": {"type": "category", "domain": ["savings", "checking"]}},
            "max_rows": 1000}
LOANS = {"columns": {"customer": {"type": "key"},
                     "amount": {"type": "fixed", "low": 0, "high": 50000, "decimals": 2}},
         "max_rows": 1000}
SCHEMAS = {"customers": CUSTOMERS, "accounts": ACCOUNTS, "loans": LOANS}


def _data() -> dict[str, list[pd.DataFrame]]:
    rng = np.random.default_rng(5)
    ids = rng.permutation(1000)[:300]
    customers = pd.DataFrame({"id": ids, "age": rng.integers(18, 90, 300),
                              "segment": rng.choice(["retail", "business"], 300)})
    # bank A's accounts: some customers unknown to the other bank, missing keys and values,
    # duplicate keys (many accounts per customer)
    accounts = pd.DataFrame({
        "customer": rng.choice(np.r_[ids, np.arange(2000, 2050)], 400).astype(float),
        "balance": np.round(rng.normal(1000, 3000, 400) * 64) / 64,
        "kind": rng.choice(["savings", "checking"], 400)})
    accounts.loc[::17, "customer"] = np.nan
    accounts.loc[::23, "balance"] = np.nan
    second = accounts.sample(frac=0.5, random_state=1).reset_index(drop=True)
    # a lender's loans: several per customer, some customers unknown to the banks
    loans = pd.DataFrame({
        "customer": rng.choice(np.r_[ids, np.arange(3000, 3020)], 150).astype(float),
        "amount": np.round(rng.uniform(0, 50000, 150), 2)})
    return {"customers": [customers], "accounts": [accounts, second], "loans": [loans]}


DATA = _data()
QUERIES = [
    "SELECT COUNT(*) AS n, SUM(a.balance) AS s, AVG(c.age) AS age, MIN(a.balance) AS lo, "
    "MAX(c.age) AS hi, COUNT(a.balance) AS nb FROM customers c JOIN accounts a "
    "ON c.id = a.customer WHERE c.segment = 'retail' AND a.kind = 'savings'",
    "SELECT COUNT(*) AS n, COUNT(c.age) AS m, AVG(c.age) AS age, SUM(a.balance) AS s "
    "FROM accounts a LEFT JOIN customers c ON a.customer = c.id",
    "SELECT COUNT(*) AS n, SUM(balance) AS s FROM accounts LEFT JOIN customers "
    "ON customer = id WHERE age > 50",
    "SELECT COUNT(*) AS n FROM accounts a JOIN customers c ON a.customer = c.id "
    "HAVING COUNT(*) > 5",
    "SELECT SUM(a.balance) / COUNT(*) AS per_account, MIN(c.age) AS youngest "
    "FROM customers c INNER JOIN accounts a ON c.id = a.customer WHERE c.age < 0",
    # many-to-many (a self-join of the accounts: pairs of accounts of one customer)
    "SELECT COUNT(*) AS n, SUM(a.balance) AS s FROM accounts a JOIN accounts b "
    "ON a.customer = b.customer",
    # LEFT JOIN from the unique side: customers without accounts count once, with NULLs
    "SELECT COUNT(*) AS n, SUM(a.balance) AS s, COUNT(a.balance) AS m "
    "FROM customers c LEFT JOIN accounts a ON c.id = a.customer",
    # grouped by either table's public-domain columns, or both
    "SELECT c.segment, COUNT(*) AS n, SUM(a.balance) AS s, AVG(c.age) AS age, "
    "MIN(a.balance) AS lo FROM accounts a JOIN customers c ON a.customer = c.id "
    "GROUP BY c.segment ORDER BY c.segment",
    "SELECT a.kind, c.segment, COUNT(*) AS n, MAX(c.age) AS hi FROM accounts a "
    "JOIN customers c ON a.customer = c.id GROUP BY a.kind, c.segment "
    "HAVING COUNT(*) > 10 ORDER BY a.kind, c.segment",
    "SELECT c.segment, SUM(a.balance) AS s FROM customers c LEFT JOIN accounts a "
    "ON c.id = a.customer GROUP BY c.segment ORDER BY c.segment",
    "SELECT COUNT(DISTINCT a.customer) AS d, COUNT(DISTINCT c.age) AS e "
    "FROM accounts a JOIN customers c ON a.customer = c.id",
    # three tables on one key (the key equalities may chain through any table)
    "SELECT COUNT(*) AS n, SUM(l.amount) AS s, AVG(a.balance) AS b FROM customers c "
    "JOIN accounts a ON c.id = a.customer JOIN loans l ON c.id = l.customer",
    "SELECT c.segment, COUNT(*) AS n, SUM(l.amount) AS s FROM customers c "
    "JOIN accounts a ON c.id = a.customer JOIN loans l ON a.customer = l.customer "
    "GROUP BY c.segment ORDER BY c.segment",
    # FILTER and conditional sums, and a WITH table inlined into the join
    "SELECT COUNT(*) FILTER (WHERE a.kind = 'savings') AS n, "
    "SUM(CASE WHEN c.age > 40 THEN 1 ELSE 0 END) AS old "
    "FROM customers c JOIN accounts a ON c.id = a.customer",
    "WITH rich AS (SELECT * FROM accounts WHERE balance > 0) "
    "SELECT COUNT(*) AS n, AVG(r.balance) AS b FROM rich r JOIN customers c "
    "ON r.customer = c.id",
]


def _duckdb(sql: str) -> pd.DataFrame:
    connection = duckdb.connect()
    for name, frames in DATA.items():
        connection.register(name, pd.concat(frames, ignore_index=True))
    return connection.sql(sql).df()


@pytest.mark.parametrize("sql", QUERIES)
def test_joins_match_duckdb(sql: str, protocol: str) -> None:
    got = simulate(sql, DATA, SCHEMAS, protocol=protocol, compute_parties=protocol.parties)
    _assert_same(got, _duckdb(sql))


def _tables() -> dict[str, TableEntry]:
    return {"customers": TableEntry(Schema.from_mapping(CUSTOMERS), (0,)),
            "accounts": TableEntry(Schema.from_mapping(ACCOUNTS), (1, 2)),
            "loans": TableEntry(Schema.from_mapping(LOANS), (2,))}


@pytest.mark.parametrize(("sql", "construct"), [
    ("SELECT COUNT(*) FROM accounts a JOIN customers c ON a.customer > c.id", "JOIN"),
    ("SELECT COUNT(*) FROM accounts a FULL JOIN customers c ON a.customer = c.id", "JOIN"),
    ("SELECT COUNT(*) FROM customers c JOIN accounts a ON c.id = a.customer "
     "LEFT JOIN loans l ON c.id = l.customer", "JOIN"),
    ("SELECT COUNT(*) FROM customers c JOIN accounts a ON c.id = a.customer "
     "JOIN loans l ON c.age = l.customer", "c.age"),
    ("SELECT COUNT(*) FROM accounts a JOIN customers c ON a.customer = c.id "
     "WHERE a.balance > c.age", "a.balance > c.age"),
    ("SELECT SUM(a.balance * c.age) FROM accounts a JOIN customers c ON a.customer = c.id",
     "a.balance * c.age"),
    ("SELECT COUNT(*) FILTER (WHERE c.age > 3) FROM accounts a JOIN customers c "
     "ON a.customer = c.id WHERE a.balance > 0 GROUP BY a.balance", "balance"),
    ("SELECT VARIANCE(c.age) FROM accounts a JOIN customers c ON a.customer = c.id",
     "VARIANCE"),
])
def test_unsupported_joins_are_refused_naming_the_construct(sql: str, construct: str) -> None:
    with pytest.raises(UnsupportedQuery) as caught:
        plan_query(sql, _tables())
    assert caught.value.construct is not None and construct in caught.value.construct


def test_join_columns_are_checked() -> None:
    with pytest.raises(QueryError, match="no column 'idd'"):
        plan_query("SELECT COUNT(*) FROM accounts a JOIN customers c ON a.customer = c.idd",
                   _tables())
    with pytest.raises(QueryError, match="must be an integer or key"):
        plan_query("SELECT COUNT(*) FROM accounts a JOIN customers c ON a.kind = c.id",
                   _tables())
    with pytest.raises(PolicyViolation, match="never grouped by"):
        plan_query("SELECT c.id, COUNT(*) FROM accounts a JOIN customers c "
                   "ON a.customer = c.id GROUP BY c.id", _tables())


def test_explain_a_join() -> None:
    plan = plan_query(QUERIES[0], _tables())
    text = explain(plan, {0: "bank-a", 1: "bank-b", 2: "bank-c"})
    assert "customers AS c (key unique; owners bank-a (party 0))" in text
    assert "accounts AS a (owners bank-b (party 1), bank-c (party 2))" in text
    flat = " ".join(text.split())
    assert "segmented scan" in flat and "each table's row count is revealed" in flat
    assert "which of the" not in text  # no groups, nothing revealed about them
    grouped = " ".join(explain(plan_query(QUERIES[8], _tables()),
                               {0: "a", 1: "b", 2: "c"}).split())
    assert "inner join per group of kind, segment (4 public groups)" in grouped
    assert "which of the 4 public groups appear (have a joined row passing HAVING)" in grouped

