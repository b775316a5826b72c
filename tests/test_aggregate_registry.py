"""Every aggregate of the registry on every plan kind that supports it, with three
and with five owners, differentially against DuckDB on the plaintext union; every
aggregate a kind does not support refused at planning; and the cases users
reported, exactly as written."""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
import pytest
import sqlglot

from concilium import simulate
from concilium.data.schema import Schema
from concilium.errors import UnsupportedQuery
from concilium.governance.policy import OutputPolicy
from concilium.query import TableEntry, plan_query
from concilium.query.aggregates import (
    AGGREGATES,
    JOIN,
    KINDS,
    PARTIAL,
    ROWS,
    SECRET_GROUPS,
    supported_by,
)
from tests.test_queries import _assert_same

T = {"x": {"type": "fixed", "low": 0, "high": 1000, "decimals": 2, "nullable": True},
     "y": {"type": "int", "low": 0, "high": 100},
     "z": {"type": "fixed", "low": -50, "high": 50},
     "c": {"type": "category", "domain": ["a", "b", "c"]},
     "g": {"type": "category", "domain": ["u", "v"]},
     "p": {"type": "int"},  # no public domain: GROUP BY p groups by a secret key
     "k": {"type": "key"}}
PEOPLE = {"id": {"type": "key", "unique": True}, "w": {"type": "int", "low": 0, "high": 10},
          "band": {"type": "category", "domain": ["low", "high"]}}
SCHEMAS = {"t": T, "people": PEOPLE}


def _tables(owners: int) -> dict[str, list[pd.DataFrame]]:
    frames = []
    for owner in range(owners):
        rng = np.random.default_rng(100 + owner)
        rows = int(rng.integers(40, 90))
        x = np.round(rng.uniform(0, 1000, rows), 2)
        x[rng.random(rows) < 0.1] = np.nan
        frames.append(pd.DataFrame({
            "x": x, "y": rng.integers(0, 101, rows),
            # z follows x (noisily), on the fixed-point grid
            "z": np.round(np.clip(np.nan_to_num(x, nan=500) / 25 - 20
                                  + rng.normal(0, 5, rows), -50, 50) * 64) / 64,
            # skewed categories: the mode is never a tie
            "c": rng.choice(["a", "b", "c"], rows, p=[0.55, 0.3, 0.15]),
            "g": rng.choice(["u", "v"], rows), "p": rng.integers(0, 12, rows) * 7919,
            "k": rng.integers(0, 80, rows).astype(float)}))
    rng = np.random.default_rng(7)
    ids = rng.permutation(80)[:60]
    people = pd.DataFrame({"id": ids, "w": rng.integers(0, 11, 60),
                           "band": rng.choice(["low", "high"], 60)})
    return {"t": frames, "people": [people[:35], people[35:]]}


def _duckdb(sql: str, tables: dict[str, list[pd.DataFrame]]) -> pd.DataFrame:
    connection = duckdb.connect()
    for name, frames in tables.items():
        connection.register(name, pd.concat(frames, ignore_index=True))
    return connection.sql(sql).df()


#: Per plan kind, queries that together use every aggregate the kind supports.
QUERIES = {
    PARTIAL: [
        "SELECT g, COUNT(*) AS n, COUNT(x) AS nx, SUM(x) AS s, AVG(x) AS a, MIN(y) AS lo, "
        "MAX(x) AS hi, VAR_SAMP(x) AS v, VAR_POP(y) AS vp, STDDEV_SAMP(z) AS sd, "
        "STDDEV_POP(x) AS sp FROM t GROUP BY g ORDER BY g",
        "SELECT g, CORR(z, x) AS r, COVAR_POP(z, x) AS cp, COVAR_SAMP(y, x) AS cs, "
        "REGR_SLOPE(z, x) AS b, REGR_INTERCEPT(z, x) AS a, REGR_R2(z, x) AS r2, "
        "REGR_COUNT(z, x) AS rc, MODE(c) AS m FROM t GROUP BY g ORDER BY g",
        "SELECT COUNT(*) FILTER (WHERE y > 50) AS f, "
        "SUM(CASE WHEN c = 'a' THEN x ELSE 0 END) AS sc, AVG(x) FILTER (WHERE g = 'u') AS af, "
        "MAX(z) FILTER (WHERE c <> 'a') AS mz FROM t",
    ],
    ROWS: [
        "SELECT g, MEDIAN(x) AS med, QUANTILE_CONT(y, 0.25) AS q, COUNT(DISTINCT y) AS d, "
        "COUNT(*) AS n, SUM(x) AS s, AVG(y) AS a, MIN(z) AS lo, MAX(y) AS hi, "
        "VAR_SAMP(z) AS v, STDDEV_POP(x) AS sp, CORR(z, x) AS r, MODE(c) AS m "
        "FROM t GROUP BY g ORDER BY g",
        "SELECT VAR_POP(x) AS vp, STDDEV_SAMP(y) AS sd, COVAR_POP(z, x) AS cp, "
        "COVAR_SAMP(z, y) AS cs, REGR_SLOPE(z, x) AS b, REGR_INTERCEPT(z, x) AS i, "
        "REGR_R2(z, x) AS r2, REGR_COUNT(z, x) AS rc, MEDIAN(z) AS m FROM t",
    ],
    SECRET_GROUPS: [
        "SELECT p, COUNT(*) AS n, COUNT(x) AS nx, SUM(x) AS s, AVG(y) AS a, MIN(x) AS lo, "
        "MAX(z) AS hi FROM t GROUP BY p ORDER BY p",
    ],
    JOIN: [
        "SELECT pe.band, COUNT(*) AS n, SUM(t.x) AS s, AVG(pe.w) AS a, MIN(t.y) AS lo, "
        "MAX(t.x) AS hi, COUNT(DISTINCT t.y) AS d FROM t JOIN people pe ON t.k = pe.id "
        "GROUP BY pe.band ORDER BY pe.band",
    ],
}


def _plan(sql: str, tables: dict[str, list[pd.DataFrame]]) -> object:
    entries = {name: TableEntry(Schema.from_mapping(SCHEMAS[name]), tuple(range(len(f))))
               for name, f in tables.items()}
    return plan_query(sql, entries)


def test_the_queries_cover_every_aggregate_on_every_kind_that_supports_it() -> None:
    tables = _tables(3)
    for kind in KINDS:
        used: set[str] = set()
        for sql in QUERIES[kind]:
            plan = _plan(sql, tables)
            assert plan.kind == kind, sql  # type: ignore[attr-defined]
            used |= {a.function for a in plan.query.aggregates}  # type: ignore[attr-defined]
        assert set(supported_by(kind)) <= used, (kind, set(supported_by(kind)) - used)


@pytest.mark.parametrize("owners", [3, 5])
@pytest.mark.parametrize(("kind", "sql"), [(kind, sql) for kind, queries in QUERIES.items()
                                           for sql in queries])
def test_every_aggregate_matches_duckdb(kind: str, sql: str, owners: int,
                                        protocol: str) -> None:
    tables = _tables(owners)
    got = simulate(sql, tables, SCHEMAS, protocol=protocol, compute_parties=protocol.parties)
    want = _duckdb(sql, tables)
    if kind == SECRET_GROUPS:  # groups come out in a secret order unless ordered
        got = got.sort_values("p").reset_index(drop=True)
    _assert_same(got, want)


#: One call of each aggregate, over columns x, y, z, c ({t} qualifies them in a join).
CALLS = {"count": "COUNT({t}x)", "sum": "SUM({t}x)", "avg": "AVG({t}x)", "min": "MIN({t}x)",
         "max": "MAX({t}x)", "var_samp": "VAR_SAMP({t}x)", "var_pop": "VAR_POP({t}x)",
         "stddev_samp": "STDDEV_SAMP({t}x)", "stddev_pop": "STDDEV_POP({t}x)",
         "corr": "CORR({t}z, {t}x)", "covar_pop": "COVAR_POP({t}z, {t}x)",
         "covar_samp": "COVAR_SAMP({t}z, {t}x)", "regr_slope": "REGR_SLOPE({t}z, {t}x)",
         "regr_intercept": "REGR_INTERCEPT({t}z, {t}x)", "regr_r2": "REGR_R2({t}z, {t}x)",
         "regr_count": "REGR_COUNT({t}z, {t}x)", "mode": "MODE({t}c)",
         "quantile": "MEDIAN({t}x)", "count_distinct": "COUNT(DISTINCT {t}y)"}
TEMPLATES = {SECRET_GROUPS: "SELECT p, {call} FROM t GROUP BY p",
             JOIN: "SELECT {call} FROM t JOIN people pe ON t.k = pe.id"}


def test_every_aggregate_has_a_test_call() -> None:
    assert set(CALLS) == {spec.name for spec in AGGREGATES}


@pytest.mark.parametrize(("kind", "name"), [
    (kind, spec.name) for kind in TEMPLATES for spec in AGGREGATES if kind not in spec.kinds])
def test_an_aggregate_a_kind_does_not_support_is_refused_naming_it(kind: str,
                                                                   name: str) -> None:
    call = CALLS[name].format(t="t." if kind == JOIN else "")
    with pytest.raises(UnsupportedQuery) as caught:
        _plan(TEMPLATES[kind].format(call=call), _tables(3))
    spelled = sqlglot.parse_one(call, dialect="duckdb").sql(dialect="duckdb")
    assert caught.value.construct is not None
    assert spelled.split("(")[0].lower() in caught.value.construct.lower()


# -- the cases users reported, exactly as written -------------------------------------
def test_a_median_with_four_owners(protocol: str) -> None:
    rng = np.random.default_rng(4)
    frames = [pd.DataFrame({"length_of_stay": rng.integers(0, 40, 200),
                            "condition": rng.choice(["I50", "J44", "E11"], 200)})
              for _ in range(4)]
    schemas = {"admissions": {
        "length_of_stay": {"type": "int", "low": 0, "high": 365},
        "condition": {"type": "category", "domain": ["I50", "J44", "E11"]}}}
    sql = "SELECT MEDIAN(length_of_stay) FROM admissions WHERE condition = 'I50'"
    got = simulate(sql, {"admissions": frames}, schemas, protocol=protocol,
                   compute_parties=protocol.parties)
    _assert_same(got, _duckdb(sql, {"admissions": frames}))
    los = pd.DataFrame({"los": pd.concat(frames)["length_of_stay"]})
    short = simulate("SELECT MEDIAN(los) AS m FROM t", {"t": [los[:200], los[200:400],
                                                             los[400:600], los[600:]]},
                     {"t": {"los": schemas["admissions"]["length_of_stay"]}},
                     protocol=protocol, compute_parties=protocol.parties)
    assert short["m"].tolist() == [float(np.median(los["los"]))]


def test_money_averages_deviations_and_maxima_need_no_rescaling(protocol: str) -> None:
    rng = np.random.default_rng(5)
    frames = [pd.DataFrame({"age": rng.integers(0, 100, rows),
                            "cost": np.round(rng.uniform(0, 1_000_000, rows), 2)})
              for rows in (3000, 2500, 4000)]
    schemas = {"admissions": {"age": {"type": "int", "low": 0, "high": 120},
                              "cost": {"type": "fixed", "low": 0, "high": 1_000_000}}}
    sql = "SELECT AVG(cost), STDDEV_SAMP(cost), MAX(cost) FROM admissions WHERE age >= 75"
    got = simulate(sql, {"admissions": frames}, schemas, protocol=protocol,
                   compute_parties=protocol.parties)
    want = _duckdb(sql, {"admissions": frames})
    assert abs(got.iloc[0, 0] - want.iloc[0, 0]) < 1e-3
    assert abs(got.iloc[0, 1] - want.iloc[0, 1]) < 1e-2  # of ~288,000
    assert abs(got.iloc[0, 2] - want.iloc[0, 2]) < 1e-4


def test_a_join_grouped_by_a_column_of_the_other_table(protocol: str) -> None:
    rng = np.random.default_rng(6)
    accounts = pd.DataFrame({"customer_id": np.arange(400),
                             "country": rng.choice(["DE", "FR", "NL", "BE", "LU"], 400)})
    flags = pd.DataFrame({"customer_id": rng.choice(np.arange(500), 300),
                          "risk_score": np.round(rng.uniform(0, 1, 300) * 1024) / 1024})
    schemas = {"accounts": {"customer_id": {"type": "key", "unique": True},
                            "country": {"type": "category",
                                        "domain": ["DE", "FR", "NL", "BE", "LU"]}},
               "flags": {"customer_id": {"type": "key"},
                         "risk_score": {"type": "fixed", "low": 0, "high": 1}}}
    tables = {"accounts": [accounts[:250], accounts[250:]], "flags": [flags]}
    sql = ("SELECT a.country, AVG(f.risk_score), COUNT(*) FROM accounts a JOIN flags f "
           "ON a.customer_id = f.customer_id GROUP BY a.country")
    got = simulate(sql, tables, schemas, protocol=protocol, compute_parties=protocol.parties)
    want = _duckdb(sql, tables).sort_values("country").reset_index(drop=True)
    _assert_same(got.sort_values("country").reset_index(drop=True), want)


# -- value ranges ----------------------------------------------------------------------
def test_money_in_cents_near_its_bound_over_a_million_rows_is_exact_to_the_cent() -> None:
    rng = np.random.default_rng(8)
    cents = [rng.integers(99_900_000, 100_000_001, rows) for rows in (400_000, 350_000, 250_000)]
    frames = [pd.DataFrame({"cost": c / 100}) for c in cents]
    schemas = {"t": {"cost": {"type": "fixed", "low": 0, "high": 1_000_000, "decimals": 2}}}
    got = simulate("SELECT SUM(cost) AS s, AVG(cost) AS a, VAR_POP(cost) AS v, "
                   "STDDEV_SAMP(cost) AS d, MIN(cost) AS lo, MAX(cost) AS hi, COUNT(*) AS n "
                   "FROM t", {"t": frames}, schemas, protocol="rep3")
    every = np.concatenate(cents)
    total = int(every.sum())  # exact, in cents: about 10^14
    assert total > 2**46  # beyond the fixed-point range by far
    assert round(got["s"][0] * 100) == total
    assert abs(got["a"][0] - total / len(every) / 100) < 1e-4
    exact_variance = float(np.var(every.astype(np.float64) / 100))
    assert abs(got["v"][0] - exact_variance) < 1e-6 * exact_variance
    assert abs(got["d"][0] - np.std(every / 100, ddof=1)) < 1e-3
    assert round(got["lo"][0] * 100) == every.min() and round(got["hi"][0] * 100) == every.max()
    assert got["n"][0] == len(every)


def test_a_sum_that_cannot_fit_is_refused_at_planning_naming_column_and_bound() -> None:
    schema = Schema.from_mapping({"cost": {"type": "fixed", "low": 0, "high": 1e9}})
    tables = {"t": TableEntry(schema, (0, 1, 2))}
    with pytest.raises(UnsupportedQuery, match=r"SUM\(cost\) could reach .*bound 1e\+09"):
        plan_query("SELECT SUM(cost) FROM t", tables, policy=OutputPolicy())
    # stating the rows each owner may hold makes it fit
    bounded = Schema.from_mapping({"columns": {"cost": {"type": "fixed", "low": 0,
                                                        "high": 1e9}}, "max_rows": 10_000})
    plan_query("SELECT SUM(cost) FROM t", {"t": TableEntry(bounded, (0, 1, 2))})
