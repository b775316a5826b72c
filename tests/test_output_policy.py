"""Output policies: enforced inside MPC (cohorts, rounding) and at planning (the rest)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from concilium import simulate
from concilium.data.schema import Schema
from concilium.errors import ConfigurationError, PolicyViolation
from concilium.governance.policy import OutputPolicy
from concilium.query import TableEntry, plan_query
from tests.test_joins import DATA, SCHEMAS
from tests.test_queries import OWNERS, SCHEMA, UNION, VISITS, _visits

SQL = "SELECT condition, COUNT(*) AS n, AVG(stay) AS s FROM admissions WHERE age < {age} " \
      "GROUP BY condition ORDER BY condition"


def test_small_cells_are_suppressed_and_listed_without_opening_their_counts(protocol: str) -> None:
    sql = SQL.format(age=12)  # small groups: a few dozen rows each
    counts = UNION[UNION["age"] < 12].groupby("condition").size()
    threshold = int(counts.sort_values().iloc[1])  # the smallest group falls below
    got = simulate(sql, {"admissions": OWNERS}, {"admissions": SCHEMA},
                   policy={"min_cohort": threshold}, protocol=protocol,
                   compute_parties=protocol.parties)
    small = set(counts[counts < threshold].index)
    assert small and all(n >= threshold for n in got["n"])
    assert list(got["n"]) == list(counts[got["condition"]])
    suppressed = got.attrs["suppressed"]
    primary = {c["group"]["condition"] for c in suppressed if c["rule"].startswith("min_co")}
    assert primary == small
    shown = set(got["condition"])
    assert shown | {c["group"]["condition"] for c in suppressed} == set(counts.index)


def test_a_whole_table_result_below_the_cohort_is_suppressed(protocol: str) -> None:
    got = simulate("SELECT COUNT(*) AS n, AVG(stay) AS s FROM admissions WHERE age < 2",
                   {"admissions": OWNERS}, {"admissions": SCHEMA}, policy={"min_cohort": 100},
                   protocol=protocol, compute_parties=protocol.parties)
    assert got.empty and got.attrs["suppressed"][0]["rule"].startswith("min_cohort")
    joined = simulate("SELECT COUNT(*) AS n FROM customers c JOIN accounts a "
                      "ON c.id = a.customer", DATA, SCHEMAS, policy={"min_cohort": 10**6},
                      protocol=protocol, compute_parties=protocol.parties)
    assert joined.empty and len(joined.attrs["suppressed"]) == 1


def test_released_values_are_rounded_on_shares(protocol: str) -> None:
    got = simulate(SQL.format(age=200), {"admissions": OWNERS}, {"admissions": SCHEMA},
                   policy={"rounding": 5}, protocol=protocol, compute_parties=protocol.parties)
    exact = UNION.groupby("condition").agg(n=("age", "size"), s=("stay", "mean"))
    assert np.array_equal(got["n"], np.round(exact["n"] / 5) * 5)
    assert np.allclose(got["s"], np.round(exact["s"] / 5) * 5)
    assert all(v % 5 == 0 for v in got["s"])


def test_secret_key_groups_below_the_cohort_are_dropped_unlisted(protocol: str) -> None:
    frames = _visits()
    got = simulate("SELECT patient, COUNT(*) AS n FROM visits GROUP BY patient",
                   {"visits": frames}, {"visits": VISITS}, policy={"min_cohort": 8},
                   protocol=protocol, compute_parties=protocol.parties)
    sizes = pd.concat(frames).groupby("patient").size()
    assert sorted(got["patient"]) == sorted(sizes[sizes >= 8].index)
    assert "not listed" in got.attrs["suppressed"][0]["group"]


@pytest.mark.parametrize(("policy", "sql", "message"), [
    ({"allowed_aggregates": ["count"]}, "SELECT AVG(stay) FROM admissions", "AVG\\(stay\\)"),
    ({"allowed_aggregates": ["count", "median"]}, "SELECT MEDIAN(stay) FROM admissions",
     None),
    ({"allowed_columns": ["condition", "stay"]},
     "SELECT condition, AVG(stay) FROM admissions WHERE age > 3 GROUP BY condition", "age"),
    ({"metrics_only": True}, "SELECT patient, COUNT(*) FROM visits GROUP BY patient",
     "metrics only"),
])
def test_planning_refuses_what_the_policy_forbids(policy: dict, sql: str,
                                                  message: str | None, protocol: str) -> None:
    tables = ({"visits": _visits()} if "visits" in sql else {"admissions": OWNERS})
    schemas = {"visits": VISITS, "admissions": SCHEMA}
    if message is None:
        simulate(sql, tables, schemas, policy=policy, protocol=protocol,
                 compute_parties=protocol.parties)
        return
    with pytest.raises(PolicyViolation, match=message):
        simulate(sql, tables, schemas, policy=policy, protocol=protocol,
                 compute_parties=protocol.parties)


def test_policies_combine_to_the_strictest_and_refuse_nonsense() -> None:
    a = OutputPolicy.from_mapping({"policy": {"min_cohort": 5, "allowed_columns": ["x", "y"],
                                              "rounding": 1}})
    b = OutputPolicy.from_mapping({"min_cohort": 10, "allowed_columns": ["y", "z"],
                                   "metrics_only": True})
    both = a.combine(b)
    assert both.min_cohort == 10 and both.allowed_columns == frozenset({"y"})
    assert both.metrics_only and both.rounding == 1
    assert both.as_dict()["allowed_columns"] == ["y"]
    for bad, message in [({"min_cohort": -1}, "negative"), ({"rounding": 0}, "positive"),
                         ({"k_anonymity": 3}, "unknown policy settings"),
                         ({"allowed_columns": "x"}, "list of names")]:
        with pytest.raises(ConfigurationError, match=message):
            OutputPolicy.from_mapping(bad)


def test_a_suppressed_cell_cannot_be_recomputed_from_totals(protocol: str) -> None:
    sql = SQL.format(age=12)
    counts = UNION[UNION["age"] < 12].groupby("condition").size()
    threshold = int(counts.min()) + 1  # exactly one cell is small
    policy = {"min_cohort": threshold}
    tables, schemas = {"admissions": OWNERS}, {"admissions": SCHEMA}
    grouped = simulate(sql, tables, schemas, policy=policy, protocol=protocol,
                       compute_parties=protocol.parties)
    total = simulate("SELECT COUNT(*) AS n FROM admissions WHERE age < 12", tables, schemas,
                     policy=policy, protocol=protocol, compute_parties=protocol.parties)["n"][0]
    rules = [cell["rule"] for cell in grouped.attrs["suppressed"]]
    assert len(rules) == 2 and sum(rule.startswith("min_cohort") for rule in rules) == 1
    assert sum(rule.startswith("complementary") for rule in rules) == 1
    # the attack: the total minus the released cells is the sum of two hidden cells,
    # not the small one
    small = int(counts.min())
    assert total - grouped["n"].sum() != small and total - grouped["n"].sum() > small


def test_complementary_suppression_protects_every_line_of_a_two_way_table(protocol: str) -> None:
    sql = ("SELECT condition, urgent, COUNT(*) AS n FROM admissions WHERE age < 20 "
           "GROUP BY condition, urgent")
    counts = UNION[UNION["age"] < 20].groupby(["condition", "urgent"]).size()
    threshold = int(counts.min()) + 1
    got = simulate(sql, {"admissions": OWNERS}, {"admissions": SCHEMA},
                   policy={"min_cohort": threshold}, protocol=protocol,
                   compute_parties=protocol.parties)
    hidden = {(c["group"]["condition"], c["group"]["urgent"]) for c in got.attrs["suppressed"]}
    assert len(hidden) >= 4  # one small cell forces its row, its column, and their corner
    for axis in range(2):  # every line holds zero or at least two hidden cells
        lines: dict = {}
        for cell in counts.index:
            lines.setdefault(cell[1 - axis], []).append(cell in hidden)
        assert all(sum(flags) != 1 for flags in lines.values())


def test_the_dominance_rule_suppresses_sums_led_by_a_few_contributors(protocol: str) -> None:
    rng = np.random.default_rng(11)
    schema = {"ward": {"type": "category", "domain": ["a", "b", "c", "d"]},
              "cost": {"type": "fixed", "low": 0, "high": 100000}}
    frames = []
    for _ in range(3):
        ward = rng.choice(["a", "b", "c", "d"], 40)
        cost = np.round(rng.uniform(10, 100, 40))
        frames.append(pd.DataFrame({"ward": ward, "cost": cost}))
    frames[1].loc[0, ["ward", "cost"]] = ["b", 20000.0]  # one dominant payer in ward b
    frames[2].loc[0, ["ward", "cost"]] = ["c", 1500.0]   # a large but not dominant one in c
    union = pd.concat(frames)
    n, k = 2, 85.0
    ordered = union.groupby("ward")["cost"]
    dominated = {w for w, costs in ordered if costs.nlargest(n).sum() > k / 100 * costs.sum()}
    got = simulate("SELECT ward, SUM(cost) AS total FROM t GROUP BY ward ORDER BY ward",
                   {"t": frames}, {"t": schema}, policy={"dominance": [n, k]}, protocol=protocol,
                   compute_parties=protocol.parties)
    rules = {c["group"]["ward"]: c["rule"] for c in got.attrs["suppressed"]}
    assert dominated == {"b"}
    assert {w for w, r in rules.items() if r.startswith("dominance")} == dominated
    assert "b" not in set(got["ward"]) and len(rules) == 2  # plus a complementary cell
    shown = got.set_index("ward")["total"]
    assert np.allclose(shown, ordered.sum()[shown.index])


def test_a_min_cohort_releases_an_extreme_only_when_enough_rows_hold_it(protocol: str) -> None:
    # MAX(cost) is one patient's cost; MAX(age) is held by many patients
    tables, schemas = {"admissions": OWNERS}, {"admissions": SCHEMA}
    top_age = int(UNION["age"].max())
    holders = int((UNION["age"] == top_age).sum())
    assert holders >= 3 and (UNION["cost"] == UNION["cost"].max()).sum() == 1
    got = simulate("SELECT MAX(cost) AS c FROM admissions", tables, schemas,
                   policy={"min_cohort": 3}, protocol=protocol, compute_parties=protocol.parties)
    assert got.empty and "rows hold the value of MAX(cost)" in got.attrs["suppressed"][0][
        "rule"]
    got = simulate("SELECT MAX(age) AS a, MIN(age) AS b FROM admissions", tables, schemas,
                   policy={"min_cohort": holders}, protocol=protocol,
                   compute_parties=protocol.parties)
    holders_min = int((UNION["age"] == UNION["age"].min()).sum())
    if holders_min >= holders:
        assert got["a"].tolist() == [top_age] and got["b"].tolist() == [UNION["age"].min()]
    else:
        assert got.empty
    got = simulate("SELECT MAX(age) AS a FROM admissions", tables, schemas,
                   policy={"min_cohort": holders + 1}, protocol=protocol,
                   compute_parties=protocol.parties)
    assert got.empty
    # per group: each cell's extreme is checked on its own rows
    grouped = simulate("SELECT condition, MAX(age) AS a FROM admissions GROUP BY condition "
                       "ORDER BY condition", tables, schemas, policy={"min_cohort": 2},
                       protocol=protocol, compute_parties=protocol.parties)
    for condition, rows in UNION.groupby("condition"):
        held = int((rows["age"] == rows["age"].max()).sum())
        assert (condition in set(grouped["condition"])) == (held >= 2 and len(rows) >= 2)


def test_a_min_cohort_checks_the_extremes_of_a_join(protocol: str) -> None:
    frames = DATA
    joined = pd.concat(frames["accounts"]).merge(frames["customers"][0], left_on="customer",
                                                 right_on="id")
    assert (joined["balance"] == joined["balance"].min()).sum() < 3
    got = simulate("SELECT MIN(a.balance) AS lo, COUNT(*) AS n FROM customers c JOIN "
                   "accounts a ON c.id = a.customer", frames, SCHEMAS,
                   policy={"min_cohort": 3}, protocol=protocol, compute_parties=protocol.parties)
    assert got.empty and "MIN(a.balance)" in got.attrs["suppressed"][0]["rule"]
    age = joined["age"].max()
    held = int((joined["age"] == age).sum())
    got = simulate("SELECT MAX(c.age) AS hi FROM customers c JOIN accounts a "
                   "ON c.id = a.customer", frames, SCHEMAS, policy={"min_cohort": held},
                   protocol=protocol, compute_parties=protocol.parties)
    assert got["hi"].tolist() == [age]


def _top_share(contributions: pd.Series, n: int) -> float:
    whole = contributions.sum()
    return contributions.nlargest(n).sum() / whole if whole else 0.0


def test_the_dominance_rule_holds_over_a_join_weighting_each_row_by_its_matches(
        protocol: str) -> None:
    # a contribution is a row of the summed column's table, times its matches in the join
    rng = np.random.default_rng(21)
    customers = pd.DataFrame({"id": np.arange(60), "income": rng.integers(20, 60, 60),
                              "segment": rng.choice(["retail", "business"], 60)})
    customers.loc[0, ["income", "segment"]] = [900, "business"]  # one dominant earner ...
    accounts = pd.DataFrame({"customer": np.r_[np.zeros(5), rng.integers(1, 60, 150)],
                             "kind": rng.choice(["savings", "checking"], 155)})
    accounts.loc[:4, "kind"] = "checking"  # ... with five accounts
    schemas = {"customers": {"id": {"type": "key", "unique": True},
                             "income": {"type": "int", "low": 0, "high": 1000},
                             "segment": {"type": "category", "domain": ["retail", "business"]}},
               "accounts": {"customer": {"type": "key"},
                            "kind": {"type": "category", "domain": ["savings", "checking"]}}}
    tables = {"customers": [customers], "accounts": [accounts[:80], accounts[80:]]}
    joined = accounts.merge(customers, left_on="customer", right_on="id")
    n, k = 2, 50.0
    got = simulate("SELECT c.segment, SUM(c.income) AS s FROM customers c JOIN accounts a "
                   "ON c.id = a.customer GROUP BY c.segment ORDER BY c.segment", tables,
                   schemas, policy={"dominance": [n, k]}, protocol=protocol,
                   compute_parties=protocol.parties)
    per_customer = joined.groupby(["segment", "id"])["income"].sum()
    shares = {segment: _top_share(per_customer[segment], n) for segment in ("business", "retail")}
    assert shares["business"] > k / 100 > shares["retail"]
    rules = {c["group"]["segment"]: c["rule"] for c in got.attrs["suppressed"]}
    assert rules["business"].startswith("dominance") and "SUM(c.income)" in rules["business"]
    # two cells on one line: hiding one alone would expose it as the total minus the other
    assert rules["retail"].startswith("complementary") and got.empty
    # grouped by the other table's column, a customer contributes to each kind its
    # income times its accounts of that kind: the dominant earner's five checking
    # accounts lead that cell
    by_kind = simulate("SELECT a.kind, SUM(c.income) AS s, COUNT(*) AS n FROM customers c "
                       "JOIN accounts a ON c.id = a.customer GROUP BY a.kind ORDER BY a.kind",
                       tables, schemas, policy={"dominance": [1, 40]}, protocol=protocol,
                       compute_parties=protocol.parties)
    per_kind = joined.groupby(["kind", "id"])["income"].sum()
    assert _top_share(per_kind["checking"], 1) > 0.4 > _top_share(per_kind["savings"], 1)
    hidden = {c["group"]["kind"]: c["rule"] for c in by_kind.attrs["suppressed"]}
    assert hidden["checking"].startswith("dominance") and by_kind.empty
    loose = simulate("SELECT a.kind, SUM(c.income) AS s, COUNT(*) AS n FROM customers c "
                     "JOIN accounts a ON c.id = a.customer GROUP BY a.kind ORDER BY a.kind",
                     tables, schemas, policy={"dominance": [1, 80]}, protocol=protocol,
                     compute_parties=protocol.parties)
    expected = joined.groupby("kind").agg(s=("income", "sum"), n=("income", "size"))
    assert loose["kind"].tolist() == ["checking", "savings"]
    assert loose["s"].tolist() == expected["s"].tolist()
    assert loose["n"].tolist() == expected["n"].tolist() and not loose.attrs["suppressed"]


def test_the_dominance_rule_holds_over_secret_key_groups(protocol: str) -> None:
    frames = _visits()
    frames[0].loc[:2, "cost"] = 9999.0  # a few very expensive visits lead their patients
    union = pd.concat(frames)
    n, k = 1, 60.0
    got = simulate("SELECT patient, SUM(cost) AS s, COUNT(*) AS v FROM visits "
                   "GROUP BY patient", {"visits": frames}, {"visits": VISITS},
                   policy={"dominance": [n, k]}, protocol=protocol,
                   compute_parties=protocol.parties)
    costs = union.groupby("patient")["cost"]
    dominated = {p for p, c in costs if _top_share(c.dropna(), n) > k / 100}
    assert len(dominated) >= 2
    assert set(got["patient"]) == set(costs.groups) - dominated
    sums = costs.sum()
    assert np.allclose(got.set_index("patient")["s"], sums[got["patient"]])
    assert "not listed" in got.attrs["suppressed"][0]["group"]


def test_secret_key_groups_never_hide_exactly_one_group(protocol: str) -> None:
    frames = _visits()
    sizes = pd.concat(frames).groupby("patient").size()
    threshold = int(sizes.min()) + 1
    assert (sizes < threshold).sum() == 1  # exactly one small patient
    got = simulate("SELECT patient, COUNT(*) AS n FROM visits GROUP BY patient",
                   {"visits": frames}, {"visits": VISITS}, policy={"min_cohort": threshold},
                   protocol=protocol, compute_parties=protocol.parties)
    hidden = set(sizes.index) - set(got["patient"])
    # the small one and the released group with the fewest rows: the total of all
    # patients minus the released ones is the sum of two groups, never one
    smallest_kept = sizes[sizes >= threshold].sort_values()
    assert len(hidden) == 2 and sizes.idxmin() in hidden
    (partner,) = hidden - {sizes.idxmin()}
    assert sizes[partner] == smallest_kept.iloc[0]  # ties: any of the smallest


@pytest.mark.parametrize(("sql", "message"), [
    ("SELECT patient, SUM(cost) FROM visits GROUP BY patient", "never grouped by"),
    ("SELECT SUM(cost) FROM visits WHERE patient = 4", "never filtered on"),
    ("SELECT MAX(patient) FROM visits", "except by COUNT"),
    ("SELECT MEDIAN(patient) FROM visits", "except by COUNT"),
    ("SELECT SUM(a.balance) FROM customers c JOIN accounts a ON c.id = a.customer "
     "WHERE c.id > 5", "never filtered on"),
    ("SELECT MIN(c.id) FROM customers c JOIN accounts a ON c.id = a.customer",
     "except by COUNT"),
])
def test_key_columns_are_only_joined_on_or_counted(sql: str, message: str) -> None:
    keyed = {**VISITS, "patient": {"type": "key"}}
    tables = {"visits": TableEntry(Schema.from_mapping(keyed), (0, 1, 2)),
              "customers": TableEntry(Schema.from_mapping(SCHEMAS["customers"]), (0,)),
              "accounts": TableEntry(Schema.from_mapping(SCHEMAS["accounts"]), (1, 2))}
    with pytest.raises(PolicyViolation, match=message):
        plan_query(sql, tables)
    # counting keys is allowed
    plan_query("SELECT COUNT(DISTINCT patient) AS p, COUNT(patient) AS q FROM visits", tables)


def test_a_min_cohort_checks_the_extremes_of_secret_key_groups(protocol: str) -> None:
    # a patient's MAX(grade) is released only when at least k of their visits hold it
    rng = np.random.default_rng(8)
    frames = [pd.DataFrame({"patient": rng.integers(0, 25, rows) * 7919 + 3,
                            "grade": rng.integers(0, 4, rows)}) for rows in (90, 70, 60)]
    schemas = {"visits": {"patient": {"type": "int"},
                          "grade": {"type": "int", "low": 0, "high": 3}}}
    union, k = pd.concat(frames), 3
    got = simulate("SELECT patient, MAX(grade) AS top, MIN(grade) AS low, COUNT(*) AS n "
                   "FROM visits GROUP BY patient", {"visits": frames}, schemas,
                   policy={"min_cohort": k}, protocol=protocol, compute_parties=protocol.parties)
    grades = union.groupby("patient")["grade"]
    top_held = grades.apply(lambda g: int((g == g.max()).sum()))
    low_held = grades.apply(lambda g: int((g == g.min()).sum()))
    released = set(top_held[(top_held >= k) & (low_held >= k) & (grades.size() >= k)].index)
    hidden = set(grades.groups) - released
    assert released and len(hidden) >= 2
    assert set(got["patient"]) == released
    expected = grades.agg(["max", "min", "size"]).loc[sorted(released)]
    shown = got.set_index("patient").loc[sorted(released)]
    assert shown["top"].tolist() == expected["max"].tolist()
    assert shown["low"].tolist() == expected["min"].tolist()
    assert shown["n"].tolist() == expected["size"].tolist()
    assert "not listed" in got.attrs["suppressed"][0]["group"]
