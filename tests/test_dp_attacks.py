"""Two red-team scenarios against differential privacy, each failing for the attacker:
averaging one noisy release many times (the budget runs out long before the
average pins anyone down), and a suppressed cell recomputed from its margins
(under noise the reconstruction is noise, not the cell)."""

from __future__ import annotations

import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from concilium import simulate
from concilium.data.schema import Schema
from concilium.errors import BudgetExhausted
from concilium.governance.budget import Ledger, PrivacyBudget
from concilium.governance.policy import OutputPolicy
from concilium.mpc.noise import skellam_table
from concilium.query import TableEntry, plan_query
from concilium.ring.prg import Prg

SCHEMA = {"ward": {"type": "category", "domain": ["a", "b", "c", "d"]},
          "age": {"type": "int", "low": 0, "high": 100}}


def test_averaging_a_noisy_count_a_thousand_times_runs_out_of_budget(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "budget.sqlite")
    budget = PrivacyBudget(rho=1.0)
    start = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    granted = 0
    with pytest.raises(BudgetExhausted, match="is left"):
        for attempt in range(1000):  # the attacker's plan: the same count 1,000 times
            ledger.charge(f"{attempt:064x}", "admissions", budget, "mallory", 0.01, "TRUE",
                          now=start + datetime.timedelta(minutes=attempt))
            ledger.release(f"{attempt:064x}")
            granted += 1
    assert granted == 100  # 1.0 / 0.01: refused at the 101st
    # what the 100 allowed releases give: the noise of COUNT(*) at rho 0.01 (rep3: each
    # of three parties draws Sk(mu / 2)), averaged over 100 releases, 2,000 times
    plan = plan_query("SELECT COUNT(*) AS n FROM admissions",
                      {"admissions": TableEntry(Schema.from_mapping(SCHEMA), (0, 1, 2))},
                      policy=OutputPolicy(dp_rho=0.01))
    [statistic] = plan.noise.statistics
    table = skellam_table(statistic.party_mu(2))
    draws = table.sample(Prg.from_urandom(), (2000, 100, 3)).sum(axis=2)
    averages = draws.mean(axis=1)
    assert np.std(averages) > 0.5  # the average still misses by more than half a person
    assert np.mean(np.abs(averages) < 0.5) < 0.6  # so one person's presence stays unsure
    ledger.close()


def _margin_attack(owners: dict[str, list[pd.DataFrame]], policy: dict[str, object],
                   truth: pd.Series) -> float:
    """Total minus the released cells: the attacker's estimate of the hidden cells' sum,
    minus their true sum."""
    cells = simulate("SELECT ward, COUNT(*) AS n FROM t GROUP BY ward", owners,
                     {"t": SCHEMA}, policy=policy, protocol="reference")
    total = simulate("SELECT COUNT(*) AS n FROM t", owners, {"t": SCHEMA}, policy=policy,
                     protocol="reference")
    released = cells.dropna(subset=["n"]).set_index("ward")["n"]
    if "dp" not in policy:  # exactly: 2 rows are suppressed (and a partner, complementary);
        assert "d" not in released  # under noise it is the noisy count that decides
    hidden = [ward for ward in truth.index if ward not in released]
    return float(total["n"].iloc[0]) - float(released.sum()) - float(truth[hidden].sum())


def test_a_suppressed_cell_recomputed_from_its_margins_is_noise() -> None:
    data = np.random.default_rng(3)  # test data, not a secret
    frame = pd.DataFrame({"ward": ["a"] * 40 + ["b"] * 35 + ["c"] * 30 + ["d"] * 2,
                          "age": data.integers(0, 101, 107)})
    owners = {"t": [frame.iloc[0::2], frame.iloc[1::2]]}
    truth = frame.groupby("ward").size()
    exact = _margin_attack(owners, {"min_cohort": 5}, truth)
    assert exact == 0  # without noise the margins give the hidden cells' sum exactly
    errors = [_margin_attack(owners, {"dp": {"rho": 0.5}, "min_cohort": 5}, truth)
              for _ in range(12)]
    assert np.std(errors) > 1.0  # under noise they give noise
    # what each reconstruction carries: four noisy counts (rep3 accounting: 3 parties
    # drawing Sk(mu / 2) each), a spread larger than the 2-row cell it would expose
    plan = plan_query("SELECT COUNT(*) AS n FROM t",
                      {"t": TableEntry(Schema.from_mapping(SCHEMA), (0, 1))},
                      policy=OutputPolicy(dp_rho=0.5))
    [statistic] = plan.noise.statistics
    assert np.sqrt(4 * statistic.variance(3, 2, 2)) > 2
