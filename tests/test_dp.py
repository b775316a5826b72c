"""Differential privacy in one process: the exact Skellam sampler against scipy, the
noise summed over three parties on shares (values, costs, what a party sees), the
zCDP bound of the Skellam mechanism, the stated 95% intervals against their real
coverage, red-team differencing attacks and refusals under dp, and the ledger.

numpy.random makes test data only; the code under test draws its noise from its
own PRG (``Prg.from_urandom``)."""

from __future__ import annotations

import dataclasses
import datetime
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from scipy.optimize import minimize_scalar

from concilium.data.dataset import Dataset
from concilium.data.schema import Schema
from concilium.data.session import Session
from concilium.errors import BudgetExhausted, ConfigurationError, PolicyViolation, RateLimited
from concilium.governance.budget import DELTA, Ledger, PrivacyBudget, epsilon_of
from concilium.governance.policy import OutputPolicy
from concilium.governance.proposal import DatasetRules
from concilium.mpc.noise import skellam_mu, skellam_rho, skellam_table
from concilium.mpc.protocols import protocol
from concilium.net import MemoryNetwork
from concilium.query.aggregates import ROWS_KEY, count_of
from concilium.query.catalog import TableEntry
from concilium.query.planner import plan_query
from concilium.query.privacy import honest_parties
from concilium.query.statistics import StatisticKey
from concilium.ring.arithmetic import RING_DTYPE, to_signed
from concilium.ring.prg import Prg
from concilium.simulate import simulate
from concilium.testing import run_parties

MUS = (0.7, 12.5, 400.0)
N = 10_000


def _chi_square_p(draws: np.ndarray, mu: float) -> float:
    """Goodness of fit of integer ``draws`` to Skellam(mu, mu), adjacent values merged
    (tails included) until every bin expects at least 5."""
    support = np.arange(draws.min() - 1, draws.max() + 2)
    expected = stats.skellam.pmf(support, mu, mu)
    expected[0] += stats.skellam.cdf(support[0] - 1, mu, mu)  # the tails beyond the draws
    expected[-1] += stats.skellam.sf(support[-1], mu, mu)
    expected *= draws.size / expected.sum()
    observed = np.bincount(draws - support[0], minlength=support.size).astype(float)
    bins_e, bins_o, acc_e, acc_o = [], [], 0.0, 0.0
    for e, o in zip(expected, observed, strict=True):
        acc_e, acc_o = acc_e + e, acc_o + o
        if acc_e >= 5:
            bins_e.append(acc_e)
            bins_o.append(acc_o)
            acc_e = acc_o = 0.0
    bins_e[-1] += acc_e
    bins_o[-1] += acc_o
    return float(stats.chisquare(bins_o, bins_e).pvalue)


# -- 1. the sampler --------------------------------------------------------------------------
@pytest.mark.parametrize("mu", MUS)
def test_skellam_draws_match_scipy(mu: float) -> None:
    """10^4 draws of the table fit Skellam(mu) and have variance 2 mu (within 10%);
    the same draws do not fit a Skellam 30% wider (the test has power)."""
    draws = skellam_table(mu).sample(Prg.from_urandom(), (N,))
    assert draws.dtype == np.int64 and draws.shape == (N,)
    assert _chi_square_p(draws, mu) > 1e-3
    assert abs(draws.var() / (2 * mu) - 1) < 0.10
    assert abs(draws.mean()) < 5 * math.sqrt(2 * mu / N)
    assert _chi_square_p(draws, 1.3 * mu) < 1e-3


@pytest.mark.parametrize("mu", MUS)
def test_skellam_table_probabilities_and_quantile(mu: float) -> None:
    """The table's probabilities are scipy's pmf to 1e-12 in total variation, its
    stated distance is tiny, and quantile95 is the smallest q with P(|Z| <= q) >= 0.95."""
    table = skellam_table(mu)
    support = np.arange(-table.cut, table.cut + 1)
    p = table.probabilities()
    assert p.shape == support.shape and abs(p.sum() - 1) < 1e-12
    assert 0.5 * np.abs(p - stats.skellam.pmf(support, mu, mu)).sum() < 1e-12
    assert 0 < table.distance < 1e-12
    inside = [p[np.abs(support) <= q].sum() for q in range(table.cut)]
    q = table.quantile95
    assert inside[q] >= 0.95 and (q == 0 or inside[q - 1] < 0.95)
    scipy_inside = stats.skellam.cdf(q, mu, mu) - stats.skellam.cdf(-q - 1, mu, mu)
    assert scipy_inside >= 0.95 > stats.skellam.cdf(q - 1, mu, mu) - stats.skellam.cdf(-q, mu, mu)


# -- 2. noise summed on shares ---------------------------------------------------------------
def test_summed_party_noise_is_skellam_of_the_sum() -> None:
    """Each rep3 party adds Sk(mu/2) from its own PRG; the revealed sum is exactly the
    sum of the three private draws and is distributed as Sk(1.5 mu)."""
    mu = 12.5
    table = skellam_table(mu / 2)

    def program(session: Session) -> tuple[np.ndarray, np.ndarray]:
        draws = table.sample(Prg.from_urandom(), (N,))
        shares = session.backend.sum_of_private(draws.view(RING_DTYPE))
        return draws, to_signed(session.backend.reveal(shares))

    results = run_parties(3, program)
    total = results[0][1]
    assert all(np.array_equal(r[1], total) for r in results)
    assert np.array_equal(total, sum(r[0] for r in results))
    assert not np.array_equal(results[0][0], results[1][0])  # independent PRGs
    assert abs(total.var() / (2 * 1.5 * mu) - 1) < 0.10
    assert _chi_square_p(total, 1.5 * mu) > 1e-3


@pytest.mark.parametrize("name", ["rep3", "reference"])
def test_sum_of_private_adds_the_private_arrays(name: str) -> None:
    """Party i passes arange + i (as signed words, some negative): the sum is exact."""
    n = 1000
    base = np.arange(n, dtype=np.int64) - 500

    def program(session: Session) -> np.ndarray:
        mine = (base * (session.party + 1) + session.party).view(RING_DTYPE)
        return to_signed(session.backend.reveal(session.backend.sum_of_private(mine)))

    for result in run_parties(3, program, protocol=name):
        assert np.array_equal(result, 6 * base + 3)


@pytest.mark.rep3
def test_sum_of_private_costs_one_round_and_eight_bytes() -> None:
    """Under rep3: one round on the critical path, 8 bytes per element per party."""
    n = 30_000

    def program(session: Session) -> tuple[int, int, int]:
        backend = session.backend
        before = backend.stats()
        backend.sum_of_private(np.ones(n, RING_DTYPE))
        after = backend.stats()
        return after.bytes_sent - before.bytes_sent, before.rounds, after.rounds

    per_party = run_parties(3, program)
    assert [p[0] for p in per_party] == [8 * n] * 3
    assert max(p[2] for p in per_party) - max(p[1] for p in per_party) == 1


@pytest.mark.rep3
def test_reshare_message_does_not_show_the_private_draws() -> None:
    """The word party 0 sends for its noise is masked: it is never the draw, its top
    byte is uniform (a draw's is 0 or 255) and it is uncorrelated with the draws."""
    network = MemoryNetwork(3, record=True)
    table = skellam_table(400.0)

    def program(session: Session) -> np.ndarray:
        draws = table.sample(Prg.from_urandom(), (N,))
        session.backend.sum_of_private(draws.view(RING_DTYPE))
        return draws

    draws = run_parties(3, program, network=network)[0]
    sent = [m.array for c in network.channels for m in c.received_log
            if m.sender == 0 and m.array.shape == (N,)]
    assert len(sent) == 1
    message = np.asarray(sent[0], dtype=RING_DTYPE)
    assert np.mean(message == draws.view(RING_DTYPE)) < 0.01
    top = np.bincount((message >> np.uint64(56)).astype(np.int64), minlength=256)
    assert stats.chisquare(top).pvalue > 1e-4
    own = np.bincount((draws.view(RING_DTYPE) >> np.uint64(56)).astype(np.int64),
                      minlength=256)
    assert stats.chisquare(own).pvalue < 1e-4  # the same check catches an unmasked draw
    correlation = np.corrcoef(draws.astype(float), to_signed(message).astype(float))[0, 1]
    assert abs(correlation) < 0.05  # sd 0.01 at N = 10^4


# -- 3. the Skellam zCDP bound ---------------------------------------------------------------
@pytest.mark.parametrize("rho", [0.001, 0.05, 0.5, 3.0])
@pytest.mark.parametrize("sensitivity", [1, 7, 100, 4096])
def test_skellam_mu_inverts_the_bound(rho: float, sensitivity: int) -> None:
    """mu(rho, d) is the smallest mu meeting rho: rho(mu) <= rho, within 1e-6."""
    mu = skellam_mu(rho, sensitivity)
    achieved = skellam_rho(mu, sensitivity)
    assert achieved <= rho and achieved > rho * (1 - 1e-6)
    assert skellam_rho(mu * (1 - 1e-5), sensitivity) > rho


def test_skellam_rho_formula_and_monotonicity() -> None:
    """rho(mu, d) = d^2/(4 mu) + (d^2 + 3 d)/(8 mu^2); larger d needs larger mu; bad
    arguments are refused."""
    for mu, d in [(0.5, 1), (3.8, 1), (250.0, 30), (1e6, 100)]:
        assert skellam_rho(mu, d) == pytest.approx(d**2 / (4 * mu) + (d**2 + 3 * d)
                                                   / (8 * mu**2), rel=1e-14)
    mus = [skellam_mu(0.1, d) for d in (1, 2, 5, 30, 100)]
    assert mus == sorted(mus) and len(set(mus)) == len(mus)
    assert skellam_mu(0.01, 1) > skellam_mu(0.1, 1)  # less rho, more noise
    for rho, d in [(0, 1), (-1, 1), (0.1, 0)]:
        with pytest.raises(ConfigurationError):
            skellam_mu(rho, d)


# -- 4. the stated intervals against their coverage ------------------------------------------
SCHEMA = {"ward": {"type": "category", "domain": ["a", "b", "c"]},
          "age": {"type": "int", "low": 0, "high": 100},
          "stay": {"type": "int", "low": 1, "high": 30}}
GROUPED = ("SELECT ward, COUNT(*) AS n, SUM(stay) AS s, AVG(stay) AS m FROM t "
           "GROUP BY ward ORDER BY ward")
RHO = 0.5
RUNS = 4000  # vectorized runs per group (3 groups)


def _frame(rows: int, seed: int) -> pd.DataFrame:
    data = np.random.default_rng(seed)  # test data
    return pd.DataFrame({"ward": data.choice(["a", "b", "c"], rows, p=[0.5, 0.3, 0.2]),
                         "age": data.integers(0, 101, rows),
                         "stay": data.integers(1, 31, rows)})


def _noise_of_plan() -> tuple[dict[StatisticKey, object], int, int]:
    """The grouped query's noised statistics (count, sum and the average's count)."""
    plan = plan_query(GROUPED, {"t": TableEntry(Schema.from_mapping(SCHEMA), (0, 1))},
                      policy=OutputPolicy.from_mapping({"dp": {"rho": RHO}}))
    threat = protocol("rep3").threat_model(3)
    honest = honest_parties(threat)
    assert (threat.compute_parties, honest) == (3, 2)
    noise = plan.noise.by_key()
    stay = plan.arguments["stay"]
    found = {"rows": noise[ROWS_KEY], "sum": noise[StatisticKey("sum", (stay,))],
             "count": noise[count_of(stay)]}
    assert sum(s.rho for s in plan.noise.statistics) <= RHO
    for statistic in found.values():
        assert statistic.grid_bits == 0 and statistic.grid == 1.0  # no grid rounding here
    return found, threat.compute_parties, honest


def _variance(statistic, parties: int, honest: int) -> float:
    """The total noise's variance: every party draws Sk(mu / honest)."""
    return 2 * parties * statistic.party_mu(honest)


def _half_width(statistic, parties: int, honest: int) -> float:
    return float(skellam_table(parties * statistic.party_mu(honest)).quantile95)


def _total_noise(statistic, parties: int, honest: int, shape: tuple[int, ...]) -> np.ndarray:
    """What the mechanism adds: one draw per party from its own table and PRG, summed."""
    table = skellam_table(statistic.party_mu(honest))
    return sum(table.sample(Prg.from_urandom(), shape) for _ in range(parties))


def test_simulated_intervals_are_the_plans() -> None:
    """Under rep3 the intervals in attrs["privacy"] are the plan's: the count's and the
    sum's are the 95% quantile of the three parties' total noise; each average's is
    1.96 sd / noisy count, and the noisy count it implies is a whole number near the
    truth that makes average x count the released noisy sum."""
    noise, parties, honest = _noise_of_plan()
    frames = [_frame(150, 1), _frame(150, 2)]
    truth = pd.concat(frames).groupby("ward")["stay"].agg(["size", "sum", "mean"])
    seen = []
    for _ in range(5):
        result = simulate(GROUPED, {"t": frames}, {"t": SCHEMA}, policy={"dp": {"rho": RHO}})
        privacy = result.attrs["privacy"]
        assert (privacy["parties"], privacy["honest_parties"], privacy["rho"]) == (3, 2, RHO)
        assert list(result.columns) == ["ward", "n", "s", "m"]
        columns = privacy["columns"]
        assert columns["n"]["interval95"] == [_half_width(noise["rows"], parties, honest)] * 3
        assert columns["s"]["interval95"] == [_half_width(noise["sum"], parties, honest)] * 3
        spread_s = _variance(noise["sum"], parties, honest)
        spread_c = _variance(noise["count"], parties, honest)
        for average, width, size, total in zip(result["m"], columns["m"]["interval95"],
                                               truth["size"], result["s"], strict=True):
            count = 1.96 * math.sqrt(spread_s + average**2 * spread_c) / width
            assert abs(count - round(count)) < 1e-6
            assert abs(count - size) < 6 * math.sqrt(spread_c)
            assert abs(average * count - total) < 0.02  # the same noisy sum as s
        assert np.all(np.abs(result["n"].to_numpy() - truth["size"].to_numpy()) < 30)
        seen.append(result["s"].to_numpy())
    assert len({tuple(s) for s in seen}) > 1  # fresh noise every run


def test_average_interval_covers_about_95_percent() -> None:
    """4000 vectorized runs of the mechanism's own noise on three groups: the true
    average lies within the stated half-width (computed as annotate does) in 93-97%."""
    noise, parties, honest = _noise_of_plan()
    sizes = np.array([600, 350, 200])
    sums = np.array([9300, 5600, 3100])
    shape = (RUNS, sizes.size)
    noisy_count = sizes + _total_noise(noise["count"], parties, honest, shape)
    noisy_sum = sums + _total_noise(noise["sum"], parties, honest, shape)
    average = noisy_sum / noisy_count
    spread = (_variance(noise["sum"], parties, honest)
              + average**2 * _variance(noise["count"], parties, honest))
    width = 1.96 * np.sqrt(spread) / np.maximum(noisy_count, 1)
    covered = np.abs(average - sums / sizes) <= width
    assert 0.93 <= covered.mean() <= 0.97
    per_group = covered.mean(axis=0)
    assert np.all((per_group >= 0.92) & (per_group <= 0.98))


@pytest.mark.parametrize("kind", ["rows", "sum"])
def test_count_and_sum_intervals_cover_at_least_95_percent(kind: str) -> None:
    """The count's and sum's half-width covers the total noise with probability in
    [0.95, 0.99] exactly (from the table of the sum of the parties' draws), and 10^4
    simulated runs agree with that probability."""
    noise, parties, honest = _noise_of_plan()
    statistic = noise[kind]
    width = _half_width(statistic, parties, honest)
    total = skellam_table(parties * statistic.party_mu(honest))
    support = np.arange(-total.cut, total.cut + 1)
    exact = total.probabilities()[np.abs(support) <= width].sum()
    assert 0.95 <= exact <= 0.99
    draws = _total_noise(statistic, parties, honest, (N,))
    coverage = np.mean(np.abs(draws) <= width)
    assert abs(coverage - exact) < 5 * math.sqrt(exact * (1 - exact) / N)


# -- 5. red team -----------------------------------------------------------------------------
RED = Schema.from_mapping({"ward": {"type": "category", "domain": ["a", "b", "c"]},
                           "age": {"type": "int", "low": 0, "high": 100}})
TRUE = ("a" * 64, "TRUE")


def _patients(rows: int, seed: int, special: dict[tuple[int, str], int]) -> pd.DataFrame:
    """Random ages 40..100 in wards a, b, c, plus ``special`` rows {(age, ward): count}."""
    data = np.random.default_rng(seed)  # test data
    frame = pd.DataFrame({"ward": data.choice(["a", "b", "c"], rows),
                          "age": data.integers(40, 101, rows)})
    extra = [{"ward": w, "age": a} for (a, w), k in special.items() for _ in range(k)]
    return pd.concat([frame, pd.DataFrame(extra)], ignore_index=True)


def _owners(frames: list[pd.DataFrame], releases: list[tuple]) -> list[Dataset]:
    return [dataclasses.replace(Dataset.from_frame("t", f, RED), releases=tuple(r))
            for f, r in zip(frames, releases, strict=True)]


def _count(where: str, datasets: list, policy: dict) -> int:
    result = simulate(f"SELECT COUNT(*) AS n FROM t {where}", {"t": datasets}, {"t": RED},
                      policy=policy, protocol="reference")
    return int(result["n"].iloc[0])


def test_all_but_one_is_refused_by_min_difference() -> None:
    """COUNT over everyone was released; COUNT over everyone but the one 37-year-old of
    ward c differs by one row and is refused. Without the earlier release it runs and
    would give that patient away (the exact difference is 1)."""
    frames = [_patients(200, 1, {(37, "c"): 1}), _patients(200, 2, {})]
    one_out = "WHERE NOT (age = 37 AND ward = 'c')"
    with pytest.raises(PolicyViolation, match="min_difference"):
        _count(one_out, _owners(frames, [[TRUE], [TRUE]]), {"min_difference": 5})
    fresh = _owners(frames, [[], []])
    everyone = _count("", fresh, {"min_difference": 5})
    assert everyone == 401
    assert everyone - _count(one_out, fresh, {"min_difference": 5}) == 1
    assert _count("", _owners(frames, [[TRUE], [TRUE]]), {"min_difference": 5}) == 401


def test_all_but_one_under_dp_is_noise_dominated() -> None:
    """Under dp (rho 0.1) without min_difference both counts run, but their difference
    has a standard deviation of several rows (plan and 25 runs), not the exact 1."""
    frames = _owners([_patients(200, 1, {(37, "c"): 1}), _patients(200, 2, {})], [[], []])
    policy = {"dp": {"rho": 0.1}}
    differences = np.array([_count("", frames, policy)
                            - _count("WHERE NOT (age = 37 AND ward = 'c')", frames, policy)
                            for _ in range(25)])
    plan = plan_query("SELECT COUNT(*) AS n FROM t", {"t": TableEntry(RED, (0, 1))},
                      policy=OutputPolicy.from_mapping(policy))
    (statistic,) = plan.noise.statistics
    threat = protocol("reference").threat_model(1)
    stated = math.sqrt(2 * _variance(statistic, threat.compute_parties,
                                     honest_parties(threat)))
    assert stated > 3.5
    assert 2.0 < differences.std(ddof=1) < 1.8 * stated
    assert np.mean(differences == 1) < 0.5


def test_tracker_is_refused_when_its_small_set_is_small() -> None:
    """A tracker (a small set padded with its large complement) against the released
    TRUE: refused when the left-out set has 2 rows, run when it has 6."""
    frames = [_patients(200, 3, {(37, "a"): 1, (38, "a"): 3}),
              _patients(200, 4, {(37, "b"): 1, (37, "c"): 4, (38, "b"): 3})]
    released = _owners(frames, [[TRUE], [TRUE]])
    policy = {"min_difference": 5}
    with pytest.raises(PolicyViolation, match="min_difference"):
        _count("WHERE age <> 37 OR ward = 'c'", released, policy)
    assert _count("WHERE age <> 38 OR ward = 'c'", released, policy) == 400 + 12 - 6


def test_owners_with_different_release_lists() -> None:
    """Owner 0 took part in release A (age > 90), owner 1 did not: owner 1's whole new
    row set counts as different. One row differs at owner 0; the query runs only when
    owner 1 brings 4 or more rows (1 + 6 >= 5), and is refused with 2 (1 + 2 < 5)."""
    release = [("b" * 64, "age > 90")]
    owner0 = _patients(0, 5, {(30, "a"): 50, (90, "a"): 1, (95, "b"): 3})
    for rows, allowed in [(6, True), (2, False)]:
        owner1 = _patients(0, 6, {(30, "b"): 50, (92, "c"): rows})
        datasets = _owners([owner0, owner1], [release, []])
        if allowed:
            assert _count("WHERE age > 89", datasets, {"min_difference": 5}) == 4 + rows
        else:
            with pytest.raises(PolicyViolation, match="min_difference"):
                _count("WHERE age > 89", datasets, {"min_difference": 5})
    # the same rows with release A known to both owners: 1 row differs, refused
    both = _owners([owner0, _patients(0, 6, {(30, "b"): 50, (92, "c"): 6})],
                   [release, release])
    with pytest.raises(PolicyViolation, match="min_difference"):
        _count("WHERE age > 89", both, {"min_difference": 5})


@pytest.mark.parametrize(("sql", "words"), [
    ("SELECT MEDIAN(age) FROM t", "only COUNT, SUM and AVG"),
    ("SELECT MAX(age) FROM t", "MAX(age) is refused"),
    ("SELECT ward, SUM(age) / 2 AS half FROM t GROUP BY ward", "half is an expression"),
    ("SELECT SUM(w) FROM t", "public bounds"),
])
def test_dp_refuses_what_it_cannot_noise_at_planning(sql: str, words: str) -> None:
    """Under dp these are refused when planned, saying why; without dp they plan."""
    schema = Schema.from_mapping({**SCHEMA, "w": {"type": "int"}})
    entries = {"t": TableEntry(schema, (0, 1))}
    with pytest.raises(PolicyViolation, match="under dp") as refused:
        plan_query(sql, entries, policy=OutputPolicy.from_mapping({"dp": {"rho": 0.5}}))
    assert words in str(refused.value)
    assert plan_query(sql, entries, policy=OutputPolicy()) is not None


# -- 6. the ledger ---------------------------------------------------------------------------
T0 = datetime.datetime(2024, 3, 1, 9, 0, tzinfo=datetime.UTC)
DAY = datetime.timedelta(days=1)


def test_ledger_shared_budget_idempotence_refund_and_restart(tmp_path) -> None:
    """Two analysts draw on one budget; charging a released computation again spends
    nothing; the charge that would exceed the budget names what is left; a refund
    gives rho back; a released charge is final; a new Ledger on the file keeps all."""
    path = tmp_path / "ledger.sqlite"
    budget = PrivacyBudget(1.0, "row")
    ledger = Ledger(path)
    assert ledger.charge("c1", "admissions", budget, "alice", 0.4, "TRUE", now=T0)
    assert ledger.charge("c2", "admissions", budget, "bob", 0.4, "age > 50", now=T0)
    assert ledger.spent("admissions", budget, T0) == pytest.approx(0.8)
    assert ledger.release("c1") == ["admissions"]
    assert not ledger.charge("c1", "admissions", budget, "alice", 0.4, "TRUE", now=T0)
    assert ledger.spent("admissions", budget, T0) == pytest.approx(0.8)
    with pytest.raises(BudgetExhausted, match=r"0\.2 of 1 is left"):
        ledger.charge("c3", "admissions", budget, "carol", 0.3, "TRUE", now=T0)
    assert ledger.spent("admissions", budget, T0) == pytest.approx(0.8)
    assert ledger.charge("other", "vitals", budget, "carol", 0.9, "TRUE", now=T0)  # own budget
    assert ledger.refund("c2") == ["admissions"]
    assert ledger.spent("admissions", budget, T0) == pytest.approx(0.4)
    assert ledger.charge("c3", "admissions", budget, "carol", 0.3, "TRUE", now=T0)
    assert ledger.refund("c1") == [] and ledger.release("c1") == []  # final
    ledger.close()

    restarted = Ledger(path)
    assert restarted.spent("admissions", budget, T0) == pytest.approx(0.7)
    assert restarted.releases("admissions") == [("c1", "TRUE")]
    assert {c.computation: c.state for c in restarted.charges("admissions")} == {
        "c1": "released", "c2": "refunded", "c3": "charged"}
    with pytest.raises(BudgetExhausted):
        restarted.charge("c4", "admissions", budget, "alice", 0.31, "TRUE", now=T0)
    restarted.close()


def test_ledger_rate_limit_and_refresh(tmp_path) -> None:
    """queries_per_day limits each analyst; refresh_days starts a new period (and
    status warns that periods add up); without it the budget is spent for good."""
    ledger = Ledger(tmp_path / "ledger.sqlite")
    limited = PrivacyBudget(10.0, queries_per_day=2)
    for k in range(2):
        ledger.charge(f"q{k}", "d", limited, "alice", 0.1, "TRUE", now=T0 + k * DAY / 100)
    with pytest.raises(RateLimited, match="allows 2"):
        ledger.charge("q2", "d", limited, "alice", 0.1, "TRUE", now=T0 + DAY / 10)
    assert ledger.charge("q3", "d", limited, "bob", 0.1, "TRUE", now=T0 + DAY / 10)
    assert ledger.charge("q4", "d", limited, "alice", 0.1, "TRUE", now=T0 + 1.1 * DAY)

    yearly = PrivacyBudget(1.0, refresh_days=30)
    ledger.charge("r1", "e", yearly, "alice", 1.0, "TRUE", now=T0 + DAY)
    with pytest.raises(BudgetExhausted, match="starts again every 30 days"):
        ledger.charge("r2", "e", yearly, "alice", 0.5, "TRUE", now=T0 + 20 * DAY)
    assert ledger.charge("r2", "e", yearly, "alice", 0.5, "TRUE", now=T0 + 31 * DAY)
    assert ledger.spent("e", yearly, T0 + 31 * DAY) == pytest.approx(0.5)
    status = ledger.status("e", yearly)
    assert "add up" in status["warning"] and "period_start" in status
    assert status["total_epsilon"] == pytest.approx(epsilon_of(1.0))

    forever = PrivacyBudget(1.0)
    ledger.charge("f1", "g", forever, "alice", 1.0, "TRUE", now=T0)
    with pytest.raises(BudgetExhausted):
        ledger.charge("f2", "g", forever, "alice", 0.1, "TRUE", now=T0 + 3650 * DAY)
    plain = ledger.status("g", forever)
    assert "warning" not in plain and plain["left_rho"] == 0.0
    ledger.close()


def _epsilon_cks(rho: float, delta: float = DELTA) -> float:
    """Canonne, Kamath & Steinke (2020), Corollary 13: the zCDP -> approxDP conversion."""
    def bound(a: float) -> float:
        return rho * a + (math.log(1 / delta) + (a - 1) * math.log(1 - 1 / a)
                          - math.log(a)) / (a - 1)
    return float(minimize_scalar(bound, bounds=(1 + 1e-9, 1e6), method="bounded",
                                 options={"xatol": 1e-12}).fun)


def test_epsilon_of_matches_opendp_and_grows() -> None:
    """epsilon_of(rho) is OpenDP's conversion (via another mechanism of the same rho)
    and the CKS 2020 bound, below rho + 2 sqrt(rho log 1/delta), increasing in rho."""
    import opendp.prelude as dp

    dp.enable_features("contrib")
    rhos = [0.01, 0.1, 0.5, 1.0, 3.0]
    for rho in rhos:
        scale = 2.0 / math.sqrt(2 * rho)  # sensitivity 2: rho = 2^2 / (2 scale^2)
        gaussian = dp.m.make_gaussian(dp.atom_domain(T=float, nan=False),
                                      dp.absolute_distance(T=float), scale=scale)
        opendp = dp.c.make_zCDP_to_approxDP(gaussian).map(2.0).epsilon(DELTA)
        assert epsilon_of(rho) == pytest.approx(opendp, rel=1e-9)
        assert epsilon_of(rho) == pytest.approx(_epsilon_cks(rho), rel=1e-6)
        assert epsilon_of(rho) < rho + 2 * math.sqrt(rho * math.log(1 / DELTA))
    values = [epsilon_of(r) for r in rhos]
    assert values == sorted(values) and len(set(values)) == len(values)
    assert epsilon_of(0.0) == 0.0


@pytest.mark.parametrize("mapping", [
    {"rho": 1.0, "units": "row"}, {"unit": "row"}, {"rho": "1"}, {"rho": True},
    {"rho": 1.0, "queries_per_day": 2.5}, {"rho": 1.0, "unit": 3}, {"rho": -1.0},
    {"rho": 1.0, "refresh_days": 0}, {"rho": float("inf")},
])
def test_budget_from_mapping_refuses_bad_settings(mapping: dict) -> None:
    with pytest.raises(ConfigurationError, match=r"\[budget\]"):
        PrivacyBudget.from_mapping(mapping)


def test_budget_from_mapping_and_unit_check() -> None:
    """Good settings parse; the unit must be "row" or a column declared unique; a
    [budget] needs dp in the dataset's policy."""
    budget = PrivacyBudget.from_mapping({"rho": 2, "unit": "pid", "refresh_days": 365,
                                         "queries_per_day": 20})
    assert budget == PrivacyBudget(2.0, "pid", 365.0, 20)
    schema = Schema.from_mapping({"pid": {"type": "key", "unique": True},
                                  "visit": {"type": "key"}, **SCHEMA})
    budget.check_unit(schema)
    PrivacyBudget(1.0).check_unit(schema)
    with pytest.raises(ConfigurationError, match="unique"):
        PrivacyBudget(1.0, "visit").check_unit(schema)
    with pytest.raises(ConfigurationError, match="not a column"):
        PrivacyBudget(1.0, "patient").check_unit(schema)
    with pytest.raises(ConfigurationError, match="dp"):
        DatasetRules.from_mapping({"budget": {"rho": 1.0}})
    rules = DatasetRules.from_mapping({"policy": {"dp": {"rho": 0.1}},
                                       "budget": {"rho": 1.0, "unit": "row"}})
    assert rules.budget == PrivacyBudget(1.0) and rules.policy.dp_rho == 0.1
