"""Model-evaluation benchmark: a vendor's model scored on secret rows, metrics only.

    python bench/evaluation.py --json                  # both jobs, in memory
    python bench/evaluation.py --transport tls         # three node processes over TLS
    python bench/evaluation.py --jobs boosting --rows 2000
    python bench/evaluation.py --peer /tmp/spuenv/bin/python [--peer-rows 1000]

Jobs (the issue's targets): ``logistic``, a logistic regression on 10^5 rows x
30 features with accuracy, the confusion matrix and exact ROC AUC; and
``boosting``, a 100-tree, depth-6 gradient-boosted ensemble on 10^4 rows x 30
features with the same metrics. Party 0 holds the rows, party 1 the labels,
party 2 is the vendor. The data are synthetic (scikit-learn's
``make_classification``, on the fixed-point grid), the model is trained in
plaintext on a separate public split outside the timing.

Each record: ``job``, ``rows``, ``features``, ``protocol``, ``transport``,
``seconds`` (median of ``--repeats`` timed runs from the first party starting
to the last finishing: sharing the model and the rows, inference, metrics,
policy, reveal), ``sklearn_seconds`` (scikit-learn's predict and metrics on
the plaintext, same run), ``ratio``, ``rounds``, ``bytes_per_party`` (busiest
party), ``bytes_per_party_per_row``, ``matches_sklearn`` (the released
accuracy and confusion matrix equal scikit-learn's, AUC within 1e-4, except for
rows whose decision is within 2^-10 of the threshold, which fixed point may
classify either way) and ``near_threshold_rows`` (how many such rows there are).

``--peer PYTHON`` (a Python with spu==0.9.5) runs, after each job in the same
invocation, bench/peer_spu_evaluation.py in a subprocess: SPU's ABY3 simulator
(three parties as threads of one process, no network) doing the same inference
on synthetic rows of the same shape with a random model of the same shape,
with the same ``--repeats`` and ``--warmup``. It adds ``peer`` (what ran),
``peer_rows``, ``peer_seconds`` (median), ``peer_times``, ``peer_repeats``,
``peer_warmup``, ``peer_compile_seconds`` (outside the timing),
``peer_max_error`` (SPU's scores against numpy), ``peer_chunks`` and
``peer_note``: SPU's figure covers sharing the inputs, inference and revealing
the scores only, no metrics and no policy, so it is the smaller job.
``--peer-rows N`` runs SPU on N rows (at most the job's; default 1000 for
``boosting``, whose SPU run takes ~56 s and ~3.5 GB per 1000 rows, and all the
rows for ``logistic``). On all the rows the record has ``peer_over_concilium``
(``peer_seconds / seconds``); on fewer it has instead
``peer_seconds_extrapolated`` (``peer_seconds * rows / peer_rows``, a linear
extrapolation, not a measurement; SPU runs its rows in independent chunks of
1000 anyway) and ``peer_over_concilium_extrapolated`` (that over
``seconds``). If the peer cannot run (no such Python, a failed or killed
subprocess, no JSON) the record keeps Concilium's figures and says why in
``peer_error``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from concilium.data import Session
from concilium.evaluation import from_sklearn
from concilium.evaluation.inference import share_model
from concilium.evaluation.job import EvaluationJob, evaluate
from concilium.governance.policy import OutputPolicy
from concilium.testing import run_parties
from engine import TlsRunner, _barrier, emit

JOBS = {"logistic": 10**5, "boosting": 10**4}
PEER_ROWS = {"boosting": 1000}  # default SPU rows; absent: the job's rows
PEER_SCRIPT = Path(__file__).resolve().parent / "peer_spu_evaluation.py"
PEER_TIMEOUT = 3600.0  # seconds for one SPU subprocess
PEER_NOTE = ("SPU covers sharing the inputs, inference and revealing the scores only: no "
             "metrics, no output policy; synthetic rows and a random model of the same "
             "shapes; its three parties are threads of one process")
METRICS = ("accuracy", "confusion_matrix", "roc_auc")
FEATURES = 30
OWNER, LABELER, VENDOR = 0, 1, 2
#: Decisions closer than this to the threshold may round to either side in fixed point.
NEAR_THRESHOLD = 2.0**-10


@cache
def _problem(job: str, rows: int) -> tuple[Any, np.ndarray, np.ndarray]:
    """(fitted model, test rows, test labels), the same in every process."""
    from sklearn.datasets import make_classification
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression

    train = 2000
    features, labels = make_classification(n_samples=train + rows, n_features=FEATURES,
                                           n_informative=12, random_state=7)
    features = np.round(features * 4096.0) / 4096.0  # data with a few decimals
    estimator = (LogisticRegression(max_iter=2000) if job == "logistic" else
                 GradientBoostingClassifier(n_estimators=100, max_depth=6, random_state=0))
    estimator.fit(features[:train], labels[:train])
    return estimator, features[train:], labels[train:]


def _program(job: str, rows: int, repeats: int, warmup: int) -> Any:
    estimator, test, labels = _problem(job, rows)
    description = from_sklearn(estimator)
    shape = description.shape()
    evaluation = EvaluationJob(METRICS, "binary")

    def program(session: Session) -> dict[str, Any]:
        samples, result = [], None
        for index in range(warmup + repeats):
            _barrier(session)
            before = session.stats()
            start = time.perf_counter()
            model = share_model(session, VENDOR,
                                description if session.party == VENDOR else None, shape)
            features = session.input(OWNER, test if session.party == OWNER else None,
                                     fixed=True)
            target = session.input(LABELER, labels if session.party == LABELER else None)
            result = evaluate(session, model, features, target, evaluation, OutputPolicy())
            end = time.perf_counter()
            after = session.stats()
            if index >= warmup:
                samples.append({"start": start, "end": end,
                                "bytes": after.bytes_sent - before.bytes_sent,
                                "rounds_before": before.rounds, "rounds_after": after.rounds})
        _barrier(session)
        assert result is not None
        return {"samples": samples, "metrics": result.metrics}
    return program


def tls_party(session: Session, job: str, rows: int, repeats: int, warmup: int) -> Any:
    """Entry point of a party process for ``--transport tls`` (evaluation:tls_party)."""
    return _program(job, rows, repeats, warmup)(session)


def _sklearn(job: str, rows: int, repeats: int) -> tuple[float, dict[str, Any]]:
    from sklearn.metrics import accuracy_score, confusion_matrix, roc_auc_score

    estimator, test, labels = _problem(job, rows)
    times, reference = [], {}
    for _ in range(repeats):
        start = time.perf_counter()
        scores = estimator.decision_function(test)
        predicted = estimator.predict(test)
        reference = {"accuracy": accuracy_score(labels, predicted),
                     "confusion_matrix": confusion_matrix(labels, predicted).tolist(),
                     "roc_auc": roc_auc_score(labels, scores),
                     "near_threshold": int(np.sum(np.abs(scores) < NEAR_THRESHOLD))}
        times.append(time.perf_counter() - start)
    return statistics.median(times), reference


def _matches(released: dict[str, Any], reference: dict[str, Any], rows: int) -> bool:
    """The released metrics equal scikit-learn's, except for rows whose decision is
    within NEAR_THRESHOLD of the threshold: fixed point (weights, rows and products
    rounded to 2^-16) may put those on the other side, and each moves two cells."""
    near = reference["near_threshold"]
    moved = np.abs(np.array(released["confusion_matrix"]) -
                   np.array(reference["confusion_matrix"])).sum()
    return (abs(released["accuracy"] - reference["accuracy"]) <= 0.5e-4 + (1 + near) / rows
            and moved <= 2 * near
            and abs(released["roc_auc"] - reference["roc_auc"]) <= 1e-4)


def run_job(job: str, rows: int, *, repeats: int, warmup: int, transport: str,
            tls: TlsRunner | None = None) -> dict[str, Any]:
    _problem(job, rows)  # train before any timing
    if transport == "memory":
        per_party = run_parties(3, _program(job, rows, repeats, warmup), timeout=1800)
    else:
        assert tls is not None
        from concilium.node.launcher import launch_local, values_or_raise

        here = Path(__file__).resolve().parent
        per_party = values_or_raise(launch_local(
            tls.manifest_path, tls.node_dirs, tls.entry,
            args={"job": job, "rows": rows, "repeats": repeats, "warmup": warmup},
            python_path=[str(here)], timeout=3600, receive_timeout=1200))
    samples = [party["samples"] for party in per_party]
    seconds = statistics.median(max(p[k]["end"] for p in samples) -
                                min(p[k]["start"] for p in samples) for k in range(repeats))
    last = [party[-1] for party in samples]
    busiest = max(sample["bytes"] for sample in last)
    sklearn_seconds, reference = _sklearn(job, rows, repeats)
    released = per_party[0]["metrics"]
    return {"job": job, "rows": rows, "features": FEATURES, "protocol": "rep3",
            "transport": transport, "metrics": list(METRICS),
            "model": from_sklearn(_problem(job, rows)[0]).shape()["model"],
            "seconds": seconds, "sklearn_seconds": sklearn_seconds,
            "ratio": seconds / sklearn_seconds,
            "rounds": max(s["rounds_after"] for s in last) - max(s["rounds_before"]
                                                                 for s in last),
            "bytes_per_party": busiest, "bytes_per_party_per_row": busiest / rows,
            "released": released, "sklearn": reference,
            "matches_sklearn": _matches(released, reference, rows),
            "near_threshold_rows": reference["near_threshold"]}


def _tail(text: str | bytes | None, lines: int = 5) -> str:
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return " | ".join((text or "").strip().splitlines()[-lines:])


def peer(python: str, job: str, rows: int, *, repeats: int, warmup: int) -> dict[str, Any]:
    """SPU's record for ``job`` on ``rows`` rows (bench/peer_spu_evaluation.py), or
    ``{"peer_error": why}`` when it cannot run."""
    command = [python, str(PEER_SCRIPT), job, str(rows), "--repeats", str(repeats),
               "--warmup", str(warmup)]
    try:
        completed = subprocess.run(command, capture_output=True, text=True, check=False,
                                   timeout=PEER_TIMEOUT)
    except subprocess.TimeoutExpired as error:
        return {"peer_error": f"timed out after {PEER_TIMEOUT:g} s; stderr: "
                              f"{_tail(error.stderr)}"}
    except OSError as error:  # no such Python, not executable
        return {"peer_error": f"cannot run {python}: {type(error).__name__}: {error}"}
    if completed.returncode != 0:  # -9: killed, likely out of memory
        return {"peer_error": f"{python} exited with {completed.returncode}; stderr: "
                              f"{_tail(completed.stderr)}"}
    lines = completed.stdout.strip().splitlines()  # SPU logs on stdout before the JSON
    try:
        record = json.loads(lines[-1]) if lines else None
    except json.JSONDecodeError:
        record = None
    if not isinstance(record, dict) or "spu_seconds" not in record:
        return {"peer_error": f"no JSON record on the peer's last stdout line; stderr: "
                              f"{_tail(completed.stderr)}"}
    return record


def add_peer(record: dict[str, Any], spu: dict[str, Any], requested_rows: int) -> None:
    """Put SPU's figures (or its error) into Concilium's ``record``."""
    record["peer"] = "SPU"
    record["peer_rows"] = requested_rows
    record["peer_note"] = PEER_NOTE
    if "peer_error" in spu:
        record["peer_error"] = spu["peer_error"]
        return
    rows, peer_rows = record["rows"], int(spu["spu_rows"])
    record.update({
        "peer": f"SPU {spu.get('spu_version', '?')}, {spu.get('spu_protocol', 'ABY3')}",
        "peer_rows": peer_rows, "peer_seconds": spu["spu_seconds"],
        "peer_times": spu.get("spu_times"), "peer_repeats": spu.get("spu_repeats"),
        "peer_warmup": spu.get("spu_warmup"),
        "peer_compile_seconds": spu.get("spu_compile_seconds"),
        "peer_max_error": spu.get("spu_max_error"), "peer_chunks": spu.get("spu_chunks")})
    if "spu_note" in spu:
        record["peer_note"] = f"{PEER_NOTE}; {spu['spu_note']}"
    if peer_rows == rows:
        record["peer_over_concilium"] = record["peer_seconds"] / record["seconds"]
    else:
        extrapolated = record["peer_seconds"] * rows / peer_rows
        record["peer_seconds_extrapolated"] = extrapolated
        record["peer_extrapolation"] = (f"linear: peer_seconds * {rows} / {peer_rows}, "
                                        f"not measured")
        record["peer_over_concilium_extrapolated"] = extrapolated / record["seconds"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print a JSON list of records")
    parser.add_argument("--transport", default="memory", choices=["memory", "tls"])
    parser.add_argument("--jobs", default=",".join(JOBS), help="logistic, boosting")
    parser.add_argument("--rows", type=int, default=0, help="rows (default per job)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs (median)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs first")
    parser.add_argument("--peer", metavar="PYTHON",
                        help="a Python with spu==0.9.5: SPU's ABY3 simulator on the same "
                             "inference, after each job in this invocation")
    parser.add_argument("--peer-rows", type=int, default=0, metavar="N",
                        help="SPU's rows, at most the job's (default: 1000 for boosting, "
                             "all for logistic); fewer are extrapolated linearly")
    args = parser.parse_args(argv)
    if args.peer_rows < 0:
        parser.error("--peer-rows must not be negative")
    tls = TlsRunner("evaluation:tls_party") if args.transport == "tls" else None
    records = []
    for job in args.jobs.split(","):
        rows = args.rows or JOBS[job.strip()]
        record = run_job(job.strip(), rows, repeats=args.repeats, warmup=args.warmup,
                         transport=args.transport, tls=tls)
        if args.peer:
            peer_rows = min(rows, args.peer_rows or PEER_ROWS.get(job.strip(), rows))
            add_peer(record, peer(args.peer, job.strip(), peer_rows, repeats=args.repeats,
                                  warmup=args.warmup), peer_rows)
        records.append(record)
        if not args.json:
            print(f"{job:>10} rows={rows:<7} {record['seconds']:8.2f} s  sklearn "
                  f"{record['sklearn_seconds'] * 1e3:7.1f} ms  "
                  f"{record['bytes_per_party_per_row'] / 1e3:.1f} kB/row/party  "
                  f"matches sklearn: {record['matches_sklearn']}", file=sys.stderr)
            if "peer_error" in record:
                print(f"{'':>10} SPU failed: {record['peer_error']}", file=sys.stderr)
            elif "peer_seconds" in record:
                extrapolated = record.get("peer_seconds_extrapolated")
                print(f"{'':>10} SPU rows={record['peer_rows']:<7} "
                      f"{record['peer_seconds']:8.2f} s"
                      + (f"  (x{rows / record['peer_rows']:g} linear: {extrapolated:.1f} s)"
                         if extrapolated is not None else ""), file=sys.stderr)
    return emit(records, args.json)


if __name__ == "__main__":
    raise SystemExit(main())
