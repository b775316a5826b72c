"""Model-evaluation benchmark: a vendor's model scored on secret rows, metrics only.

    python bench/evaluation.py --json                  # both jobs, in memory
    python bench/evaluation.py --transport tls         # three node processes over TLS
    python bench/evaluation.py --jobs boosting --rows 2000

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
party), ``bytes_per_party_per_row``, and ``matches_sklearn`` (the released
accuracy and confusion matrix equal scikit-learn's, AUC within 1e-4).
"""

from __future__ import annotations

import argparse
import statistics
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
METRICS = ("accuracy", "confusion_matrix", "roc_auc")
FEATURES = 30
OWNER, LABELER, VENDOR = 0, 1, 2


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
                     "roc_auc": roc_auc_score(labels, scores)}
        times.append(time.perf_counter() - start)
    return statistics.median(times), reference


def _matches(released: dict[str, Any], reference: dict[str, Any], rows: int) -> bool:
    return (abs(released["accuracy"] - reference["accuracy"]) <= 0.5e-4 + 1 / rows
            and released["confusion_matrix"] == reference["confusion_matrix"]
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
            "matches_sklearn": _matches(released, reference, rows)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print a JSON list of records")
    parser.add_argument("--transport", default="memory", choices=["memory", "tls"])
    parser.add_argument("--jobs", default=",".join(JOBS), help="logistic, boosting")
    parser.add_argument("--rows", type=int, default=0, help="rows (default per job)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs (median)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs first")
    args = parser.parse_args(argv)
    tls = TlsRunner("evaluation:tls_party") if args.transport == "tls" else None
    records = []
    for job in args.jobs.split(","):
        rows = args.rows or JOBS[job.strip()]
        record = run_job(job.strip(), rows, repeats=args.repeats, warmup=args.warmup,
                         transport=args.transport, tls=tls)
        records.append(record)
        if not args.json:
            print(f"{job:>10} rows={rows:<7} {record['seconds']:8.2f} s  sklearn "
                  f"{record['sklearn_seconds'] * 1e3:7.1f} ms  "
                  f"{record['bytes_per_party_per_row'] / 1e3:.1f} kB/row/party  "
                  f"matches sklearn: {record['matches_sklearn']}", file=sys.stderr)
    return emit(records, args.json)


if __name__ == "__main__":
    raise SystemExit(main())
