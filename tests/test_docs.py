"""The README's example runs and prints what it says; the demo runs end to end."""

from __future__ import annotations

import contextlib
import io
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_example_prints_what_the_comment_promises() -> None:
    readme = (ROOT / "README.md").read_text()
    code = re.search(r"## Ten lines of Python\n\n```python\n(.*?)```", readme, re.S).group(1)
    assert len(code.strip().splitlines()) <= 11
    promised = re.search(r"print\(.*\)  # (.*)\n", code).group(1)
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        exec(compile(code, "README.md", "exec"), {})
    printed = [float(v) for v in re.findall(r"[-\d.]+", output.getvalue().split("\n")[0])]
    assert printed == [float(v) for v in re.findall(r"[-\d.]+", promised)]


def test_demo_runs_three_nodes_and_matches_the_plaintext_check() -> None:
    completed = subprocess.run([sys.executable, "-m", "concilium.demo"], capture_output=True,
                               text=True, timeout=180, check=False,
                               env={**os.environ, "COLUMNS": "120"})
    assert completed.returncode == 0, completed.stdout + completed.stderr
    out = completed.stdout
    for hospital in ("hospital-a", "hospital-b", "hospital-c"):
        assert re.search(rf"{hospital} registered [\d,]+ admissions", out)
        assert f"approved by {hospital}'s officer" in out
        assert re.search(rf"audit log of {hospital}: \d+ entries, .* verified", out)
    rows = re.findall(r"│ ([a-z ]+?) +│ (\d+) +│ ([\d.]+) +│ ([\d.]+) +│ ([\d.]+) / ([\d.]+)",
                      out)
    assert len(rows) == 4
    for _, _, rate, stay, plain_rate, plain_stay in rows:
        assert abs(float(rate) - float(plain_rate)) < 1e-3
        assert abs(float(stay) - float(plain_stay)) < 1e-2
    assert "(min_cohort)" in out and "(complementary" in out
    assert "Threat model (from the run): rep3: semi-honest, honest majority; 3 compute " \
        "parties, tolerates 1 corrupted" in " ".join(out.split())

def test_operations_doc_states_every_documented_bound() -> None:
    from concilium.ops.accuracy import ACCURACY

    text = (ROOT / "docs" / "ops-library.md").read_text()
    for spec in ACCURACY:
        row = re.search(rf"^\| {spec.function} \| (.*?) \| (.*?) \|", text, re.M)
        assert row is not None, spec.function
        assert row.group(1) == spec.domain
        assert row.group(2).startswith(f"{spec.units:g} units")


def test_docstring_examples_run() -> None:
    import doctest
    import importlib

    # concilium.simulate is also the name of the function the package exports
    for name in ("concilium.simulate", "concilium.testing"):
        module = importlib.import_module(name)
        failures, tried = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
        assert tried > 0 and failures == 0, name


def test_queries_doc_lists_every_registry_aggregate_with_its_plan_kinds() -> None:
    from concilium.query.aggregates import AGGREGATES, KINDS

    short = dict(zip(KINDS, ("partial", "rows", "secret groups", "join"), strict=True))
    text = (ROOT / "docs" / "queries.md").read_text()
    for spec in AGGREGATES:
        row = re.search(rf"^\| {spec.name} \| (.*?) \| (.*?) \| (.*?) \| (.*?) \|$", text, re.M)
        assert row is not None, spec.name
        assert row.group(2) == spec.policy_name
        assert row.group(3) == ", ".join(short[k] for k in KINDS if k in spec.kinds)
        assert row.group(4) == spec.explain


def test_the_two_party_demo_runs_two_banks_and_matches_the_plaintext_check() -> None:
    completed = subprocess.run([sys.executable, "-m", "concilium.demo_banks"],
                               capture_output=True, text=True, timeout=180, check=False,
                               env={**os.environ, "COLUMNS": "120"})
    assert completed.returncode == 0, completed.stdout + completed.stderr
    out = completed.stdout
    rows = re.findall(r"│ ([a-z]+) +│ (\d+) +│ ([\d,.]+) +│ \d+ +│ \d+ +│ (\d+) / ([\d,.]+) +│",
                      out)
    assert len(rows) == 4
    for _, accounts, mean, check_accounts, check_mean in rows:
        assert accounts == check_accounts and mean == check_mean
    # the overlap of the two books: a join between the banks, equal to the plain merge
    overlap = {label: (got, want) for label, got, want in re.findall(
        r"│ ((?:shared|flagged|balances)[a-z -]*?) +│ +(-?[\d,]+) +│ +(-?[\d,]+) +│", out)}
    assert len(overlap) == 5 and overlap["shared customers"][0] != "0", out
    assert all(got == want for got, want in overlap.values()), overlap
    assert out.count("verified True") == 2 and "2 compute parties, tolerates 1" in out
