"""Every output-policy rule on every plan kind, against the plaintext: a rule that
applies is enforced (each released cell obeys it, and a cell the plaintext says it
must hide is hidden) or the query is refused at planning; never skipped."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from concilium import simulate
from concilium.data.schema import Schema
from concilium.errors import PolicyViolation
from concilium.query import TableEntry, plan_query
from concilium.query.aggregates import JOIN, KINDS, PARTIAL, ROWS, SECRET_GROUPS
from concilium.query.rules import RULES

# five groups, each built to trip one rule: "a" is small, "b" is led by one row
# (whose value is also its only maximum); in "c", "d" and "e" the maximum is held by
# 2, 3 and 7 rows and no row leads
VALUES = {"a": [10, 12], "b": [900, 10, 10, 10, 10, 10],
          "c": [50, 50, 40, 40, 30, 30, 20, 20], "d": [60, 60, 60, 10, 10, 10, 10, 10],
          "e": [5] * 7}
LABELS = sorted(VALUES)
CODE = {label: 1009 * k + 7 for k, label in enumerate(LABELS)}  # a secret group key
ROWS_OF = pd.DataFrame([(label, x) for label in LABELS for x in VALUES[label]],
                       columns=["g", "x"])
SCHEMAS = {
    "t": {"k": {"type": "key", "unique": True},
          "g": {"type": "category", "domain": LABELS},
          "pid": {"type": "int"}, "x": {"type": "int", "low": 0, "high": 1000}},
    "u": {"k": {"type": "key", "unique": True},
          "seg": {"type": "category", "domain": LABELS}},
}
SELECT = "COUNT(*) AS n, SUM(x) AS s, MAX(x) AS hi"
QUERIES = {  # (plan kind, SQL, the result's group column)
    "partial": (PARTIAL, f"SELECT g, {SELECT} FROM t GROUP BY g", "g"),
    "rows": (ROWS, f"SELECT g, {SELECT}, MEDIAN(x) AS m FROM t GROUP BY g", "g"),
    "secret groups": (SECRET_GROUPS, f"SELECT pid, {SELECT} FROM t GROUP BY pid", "pid"),
    "join": (JOIN, "SELECT u.seg, COUNT(*) AS n, SUM(t.x) AS s, MAX(t.x) AS hi FROM u "
                   "JOIN t ON u.k = t.k GROUP BY u.seg", "seg"),
    "join, secret groups": (SECRET_GROUPS, "SELECT t.pid, COUNT(*) AS n, SUM(t.x) AS s, "
                            "MAX(t.x) AS hi FROM u JOIN t ON u.k = t.k GROUP BY t.pid", "pid"),
}
POLICIES = {
    "min_cohort": {"min_cohort": 4},
    "extremes": {"min_cohort": 2},
    "dominance": {"dominance": [1, 60]},
    "complementary": {"min_cohort": 4},
    "rounding": {"rounding": 5},
    "dp": {"dp": {"rho": 1.0}},
    "min_difference": {"min_difference": 3},
}
#: the rules enforced on one plan kind only; refused at planning on the others
ONE_KIND = {"dp", "min_difference"}


def _tables() -> dict[str, list[pd.DataFrame]]:
    t = pd.DataFrame({"k": np.arange(len(ROWS_OF)), "g": ROWS_OF["g"],
                      "pid": ROWS_OF["g"].map(CODE), "x": ROWS_OF["x"]})
    u = pd.DataFrame({"k": np.arange(len(ROWS_OF)), "seg": ROWS_OF["g"]})
    owners = [t.iloc[k::3].reset_index(drop=True) for k in range(3)]  # three hospitals
    return {"t": owners, "u": [u]}


def _released(result: pd.DataFrame, column: str) -> dict[str, pd.Series]:
    names = {code: label for label, code in CODE.items()}
    return {names.get(key, key): row for key, row in result.set_index(column).iterrows()}


def _plaintext() -> pd.DataFrame:
    groups = ROWS_OF.groupby("g")["x"]
    return pd.DataFrame({"n": groups.size(), "s": groups.sum(), "hi": groups.max(),
                         "held": groups.apply(lambda x: int((x == x.max()).sum())),
                         "top": groups.max() / groups.sum()})


def test_the_matrix_covers_every_rule_and_every_plan_kind() -> None:
    assert {rule.name for rule in RULES} == set(POLICIES)
    assert {kind for kind, _, _ in QUERIES.values()} == set(KINDS)


@pytest.mark.parametrize(("rule", "query"), list(itertools.product(POLICIES, QUERIES)))
def test_every_rule_is_enforced_on_every_plan_kind(rule: str, query: str) -> None:
    kind, sql, column = QUERIES[query]
    entries = {name: TableEntry(Schema.from_mapping(SCHEMAS[name]), tuple(range(len(frames))))
               for name, frames in _tables().items()}
    assert plan_query(sql, entries).kind == kind
    if rule in ONE_KIND and kind != PARTIAL:
        with pytest.raises(PolicyViolation, match=f"{rule} rule cannot be enforced on {kind}|"
                           "under dp, only COUNT, SUM and AVG"):
            simulate(sql, _tables(), SCHEMAS, policy=POLICIES[rule], protocol="reference")
        return
    if rule == "dp":  # noise: COUNT and SUM only, each within its stated interval
        with pytest.raises(PolicyViolation, match="only COUNT, SUM and AVG"):
            simulate(sql, _tables(), SCHEMAS, policy=POLICIES[rule], protocol="reference")
        sql = "SELECT g, COUNT(*) AS n, SUM(x) AS s FROM t GROUP BY g"
        got = simulate(sql, _tables(), SCHEMAS, policy=POLICIES[rule], protocol="reference")
        widths = got.attrs["privacy"]["columns"]
        plain = _plaintext()
        assert sorted(got["g"]) == LABELS  # every public group, noised
        for _, row in got.iterrows():
            assert abs(row["n"] - plain.loc[row["g"], "n"]) <= 3 * widths["n"]["interval95"][0]
            if pd.isna(row["s"]):  # a sum over no rows is NULL: the noisy count says so
                assert row["n"] < 1
            else:
                assert abs(row["s"] - plain.loc[row["g"], "s"]) <= 3 * widths["s"][
                    "interval95"][0]
        return
    got = simulate(sql, _tables(), SCHEMAS, policy=POLICIES[rule], protocol="reference")
    released, plain = _released(got, column), _plaintext()
    hidden = set(LABELS) - set(released)
    if rule == "rounding":
        assert not hidden
        for label, row in released.items():
            assert row["n"] == round(plain.loc[label, "n"] / 5) * 5
            assert row["s"] == round(plain.loc[label, "s"] / 5) * 5
        return
    if rule == "min_difference":  # no earlier release: the result is exact and whole
        assert not hidden
    for label, row in released.items():  # what is released is exact and obeys the rule
        assert (row["n"], row["s"], row["hi"]) == tuple(plain.loc[label, ["n", "s", "hi"]])
    if rule == "min_cohort":
        assert "a" in hidden and all(plain.loc[label, "n"] >= 4 for label in released)
    elif rule == "extremes":
        assert {"a", "b"} <= hidden and all(plain.loc[g, "held"] >= 2 for g in released)
    elif rule == "dominance":
        assert "b" in hidden and all(plain.loc[g, "top"] <= 0.6 for g in released)
    assert len(hidden) != 1  # never exactly one hidden cell: it is the total minus the rest
    if rule == "complementary":
        assert len(hidden) >= 2
