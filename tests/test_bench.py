"""bench/engine.py keeps producing well-formed records (format only, never timing)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
KEYS = {"op", "n", "protocol", "transport", "parties", "seconds", "numpy_seconds", "rounds",
        "bytes_per_party"}


def _records(script: str, *options: str, timeout: float = 300) -> list[dict[str, Any]]:
    """The JSON records of ``bench/<script> --json <options>``; it must exit cleanly."""
    completed = subprocess.run([sys.executable, str(ROOT / "bench" / script), "--json",
                                *options], capture_output=True, text=True, timeout=timeout,
                               check=False)
    assert completed.returncode == 0, completed.stderr
    return list(json.loads(completed.stdout))


def test_engine_benchmark_emits_the_documented_records() -> None:
    records = {r["op"]: r for r in _records("engine.py", "--sizes", "1500", "--repeats", "1",
                                            "--warmup", "0", "--ops",
                                            "mul_int,mul_fxp,mul_fxp_reliable")}
    assert set(records) == {"mul_int", "mul_fxp", "mul_fxp_reliable"}
    for record in records.values():
        assert set(record) >= KEYS
        assert record["n"] == 1500 and record["parties"] == 3
        assert record["transport"] == "memory" and record["protocol"] == "rep3"
        assert record["seconds"] > 0 and record["numpy_seconds"] > 0
    assert records["mul_int"]["bytes_per_party"] == 8 * 1500
    assert records["mul_int"]["rounds"] == 1
    assert records["mul_fxp"]["bytes_per_party"] == 8 * 1500
    assert records["mul_fxp"]["rounds"] == 1 and records["mul_fxp"]["truncation"] == "fast"
    reliable = records["mul_fxp_reliable"]
    assert reliable["rounds"] == 2 and reliable["truncation"] == "reliable"


def test_operations_benchmark_emits_engine_records_with_adder_counts() -> None:
    ops = "lt,eq,div_fxp,sigmoid,sort,shuffle"
    records = {r["op"]: r for r in _records("ops.py", "--sizes", "512", "--repeats", "1",
                                            "--warmup", "0", "--ops", ops)}
    assert set(records) == set(ops.split(","))
    for record in records.values():
        assert set(record) >= KEYS and record["n"] == 512 and record["seconds"] > 0
    lt = records["lt"]
    # the carry tree's count is what the docs say, to the byte
    assert lt["theory_bytes_per_element"] == 49.0 and lt["bytes_per_party"] == 49 * 512
    assert lt["kogge_stone_bytes_per_element"] == 120.0
    assert records["eq"]["bytes_per_party"] == 34 * 512
    assert records["shuffle"]["bytes_per_element"] == 16.0


def test_query_benchmark_emits_records_with_a_duckdb_baseline() -> None:
    records = {r["op"]: r for r in _records("queries.py", "--rows", "2000", "--repeats", "1")}
    assert set(records) == {"grouped_avg_count", "grouped_stats", "median", "join_count",
                            "grouped_join", "sum_money", "count_all"}
    for record in records.values():
        assert set(record) >= KEYS and record["n"] == 2000 and record["owners"] == 3
        assert record["plaintext_seconds"] == record["numpy_seconds"] > 0
        assert 0 < record["secure_seconds"] <= record["seconds"]


def _queries(*options: str) -> list[dict[str, Any]]:
    """bench/queries.py's JSON records, on 2,000 rows per owner, one repeat."""
    return _records("queries.py", "--rows", "2000", "--repeats", "1", *options)


def test_noise_costs_at_most_one_round_and_16_bytes_per_released_cell() -> None:
    records = {r["op"]: r for r in _queries("--dp", "0.5", "--queries",
                                             "grouped_avg_count,sum_money,count_all")}
    assert records["grouped_avg_count"]["released_cells"] == 20
    for record in records.values():  # bytes and rounds are exact counts, not timings
        assert record["policy"]["dp"] == {"rho": 0.5, "mechanism": "skellam"}
        assert 0 <= record["noise_rounds"] <= 1
        assert 0 < record["noise_bytes_per_cell"] <= 16


def test_the_differencing_benchmark_reports_what_the_check_adds() -> None:
    [record] = _queries("--differencing", "10", "--queries", "count_all")
    assert record["releases"] == 10 and record["policy"]["min_difference"] == 5
    assert record["rounds"] > record["baseline_rounds"]
    assert record["secure_seconds"] > 0 and "added_seconds" in record


def test_transport_benchmark_measures_every_layer_against_memory() -> None:
    records = {r["transport"]: r for r in _records("transport.py", "--sizes", "1500",
                                                   "--repeats", "1", "--warmup", "0")}
    assert list(records) == ["memory", "tcp", "tcp+sha256", "tls-no-transcript", "tls"]
    memory = records["memory"]["seconds"]
    for record in records.values():
        assert record["op"] == "mul_fxp" and record["n"] == 1500 and record["parties"] == 3
        # every variant runs the same protocol: the same payload bytes per party
        assert record["bytes_per_party"] == 8 * 1500
        assert record["memory_seconds"] == memory
        assert record["over_memory"] == record["seconds"] / memory
        assert record["cpu_seconds_per_party"] > 0


def test_transport_benchmark_refuses_an_unknown_variant() -> None:
    completed = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "transport.py"), "--variants", "udp"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert completed.returncode == 2 and "unknown variants ['udp']" in completed.stderr


def test_concurrency_benchmark_runs_computations_one_after_another_and_at_once() -> None:
    (record,) = _records("concurrency.py", "--computations", "2")
    assert record["op"] == "concurrent_computations" and record["n"] == 2
    assert record["sequential_seconds"] > 0 and record["concurrent_seconds"] > 0
    assert record["concurrent_over_sequential"] == (
        record["concurrent_seconds"] / record["sequential_seconds"])


def test_memory_benchmark_samples_every_node_after_the_baseline_and_at_the_end() -> None:
    (record,) = _records("memory.py", "--computations", "21", "--baseline", "5")
    assert set(record) >= {"op", "n", "parties", "protocol", "transport", "seconds"}
    assert record["op"] == "node_memory" and record["n"] == 21 and record["parties"] == 3
    assert record["completed"] == 21 and record["baseline_after"] == 5 and record["seconds"] > 0
    assert [s["after"] for s in record["samples"]] == [5, 20, 21]
    names = set(record["rss_at_end"])
    assert len(names) == 3 and set(record["rss_after_baseline"]) == names
    assert all(set(sample) == names | {"after"} for sample in record["samples"])
    assert all(record["rss_after_baseline"][n] > 10 << 20 for n in names)  # a real process
    assert record["rss_after_baseline"] == {n: record["samples"][0][n] for n in names}
    assert record["rss_at_end"] == {n: record["samples"][-1][n] for n in names}
    assert record["end_over_baseline"] == {
        n: record["rss_at_end"][n] / record["rss_after_baseline"][n] for n in names}
    assert record["max_end_over_baseline"] == max(record["end_over_baseline"].values())


def test_the_ot_benchmark_reports_triples_bytes_and_memory() -> None:
    records = {r["op"]: r for r in _records("ot.py", "--triples", "16384", "--repeats", "1",
                                            "--memory-triples", "20000")}
    assert set(records) == {"triples", "and_triples", "fixed_multiply", "triples_memory",
                            "backend_multiply", "backend_less"}
    assert records["backend_less"]["max_error"] == 0  # every comparison right
    assert records["backend_multiply"]["max_error"] < 1e-3
    # a product, busiest party: 8 input + 1,312 triple + 16 opening + a daBit for the
    # truncation (16 bytes from its chooser) + 1/8 byte of opened bits + 8 reveal
    assert records["backend_multiply"]["bytes_per_element"] < 1360.125 + 4200 / 16384 + 0.01
    triples = records["triples"]  # 64 OTs of 16 bytes and 288 bytes of corrections
    assert triples["theory_bytes_per_triple"] == 1312
    assert 1312 <= triples["bytes_per_triple"] < 1312 + 4200 / 16384 + 0.01
    assert records["fixed_multiply"]["max_error"] < 1e-3  # checked against numpy
    assert records["triples_memory"]["peak_bytes_both_parties"] > 0


def test_the_evaluation_benchmark_reports_both_jobs_against_scikit_learn() -> None:
    records = {r["job"]: r for r in _records("evaluation.py", "--rows", "300", "--repeats",
                                             "1", "--warmup", "0", timeout=600)}
    assert set(records) == {"logistic", "boosting"}
    for record in records.values():
        assert record["rows"] == 300 and record["features"] == 30
        assert record["matches_sklearn"] is True
        assert record["bytes_per_party_per_row"] == pytest.approx(
            record["bytes_per_party"] / 300, abs=0.005)
        assert record["seconds"] > 0 and record["sklearn_seconds"] > 0
    assert records["boosting"]["model"] == "tree_ensemble"


def test_the_evaluation_benchmark_reports_a_missing_peer_and_keeps_its_figures() -> None:
    (record,) = _records("evaluation.py", "--jobs", "logistic", "--rows", "200", "--repeats",
                         "1", "--warmup", "0", "--peer", "/nonexistent/python", timeout=300)
    assert record["job"] == "logistic" and record["rows"] == 200
    assert record["matches_sklearn"] is True and record["seconds"] > 0
    assert "/nonexistent/python" in record["peer_error"]
    assert record["peer"] == "SPU" and record["peer_rows"] == 200
    assert "peer_seconds" not in record and "inference" in record["peer_note"]
