"""``python -m concilium.demo``: three hospitals compute joint statistics on secret shares.

Each hospital holds its own admissions (synthetic, from a seeded generator).
None of them may see another's patients. They run a 3-party secure
computation in which every hospital is both a data owner and a compute party:
their columns are secret-shared, the statistics are computed on the shares,
and only the agreed results are opened. The demo prints who contributed what,
the results (next to a plaintext check that only a demo can do), and what the
computation cost in rounds and bytes.

This first demo runs the parties as threads of one process; the node issue
replaces it with real node processes talking mutual TLS.
"""

from __future__ import annotations

import hashlib
import operator
import sys
import time
from dataclasses import dataclass
from functools import reduce

import numpy as np

from concilium.data import Session
from concilium.ring import Prg
from concilium.testing import run_parties

HOSPITALS = ("hospital-a", "hospital-b", "hospital-c")
ADMISSIONS = (1204, 980, 1530)


@dataclass(frozen=True)
class Admissions:
    """One hospital's private table: length of stay (days) and a readmission flag."""

    length_of_stay: np.ndarray
    readmitted: np.ndarray


def synthetic_admissions(hospital: str, count: int) -> Admissions:
    """Deterministic, plausible data: log-normal stays, readmission more likely after
    long stays. Seeded from the hospital's name through the AES-CTR PRG."""
    prg = Prg(hashlib.sha256(f"concilium-demo/{hospital}".encode()).digest()[:16])
    first, second, third = prg.uniform(count), prg.uniform(count), prg.uniform(count)
    normal = np.sqrt(-2.0 * np.log1p(-first)) * np.cos(2.0 * np.pi * second)
    stay = np.round(np.exp(1.25 + 0.55 * normal), 1).clip(0.5, 60.0)
    risk = 0.08 + 0.012 * stay
    return Admissions(length_of_stay=stay, readmitted=(third < risk).astype(np.int64))


def _program(data: dict[int, Admissions]):
    def program(session: Session) -> dict[str, object]:
        me = session.party
        stays, flags = [], []
        for owner in range(3):
            mine = data[owner] if owner == me else None
            stays.append(session.input(owner, mine.length_of_stay if mine else None, fixed=True))
            flags.append(session.input(owner, mine.readmitted if mine else None))
        readmissions = reduce(operator.add, (flag.sum() for flag in flags))     # local
        bed_days = reduce(operator.add, (stay.sum() for stay in stays))          # local
        readmitted_days = reduce(operator.add, (stay @ flag for stay, flag in    # 1 round each
                                                zip(stays, flags, strict=True)))
        count = readmissions.reveal()
        total = sum(ADMISSIONS)
        return {
            "readmissions": count,
            "readmission_rate": (readmissions * (1.0 / total)).reveal(),
            "mean_stay": (bed_days * (1.0 / total)).reveal(),
            "mean_stay_readmitted": (readmitted_days * (1.0 / float(count))).reveal(),
            "stats": session.stats(),
            "security": session.security,
            "truncation": session.truncation,
        }
    return program


def main() -> int:
    print("Concilium demo: joint readmission statistics of three hospitals\n")
    data = {index: synthetic_admissions(name, count)
            for index, (name, count) in enumerate(zip(HOSPITALS, ADMISSIONS, strict=True))}
    for name, count in zip(HOSPITALS, ADMISSIONS, strict=True):
        print(f"  {name} contributes {count:,} admissions (length of stay, readmitted flag); "
              "its rows are secret-shared and never leave it in the clear")
    started = time.perf_counter()
    results = run_parties(3, _program(data))
    elapsed = time.perf_counter() - started
    result = results[0]
    assert all(r["readmissions"] == result["readmissions"] for r in results)

    pooled_stay = np.concatenate([d.length_of_stay for d in data.values()])
    pooled_flag = np.concatenate([d.readmitted for d in data.values()])
    reference = {
        "readmissions": int(pooled_flag.sum()),
        "readmission_rate": float(pooled_flag.mean()),
        "mean_stay": float(pooled_stay.mean()),
        "mean_stay_readmitted": float(pooled_stay[pooled_flag == 1].mean()),
    }
    print("\nResults (opened to all three hospitals):")
    print(f"  {'statistic':<32}{'secure result':>15}{'plaintext check':>17}{'difference':>13}")
    labels = {
        "readmissions": "readmissions",
        "readmission_rate": "readmission rate",
        "mean_stay": "mean length of stay (days)",
        "mean_stay_readmitted": "mean stay, readmitted (days)",
    }
    for key, label in labels.items():
        secure, plain = float(result[key]), reference[key]
        print(f"  {label:<32}{secure:>15.5f}{plain:>17.5f}{secure - plain:>13.1e}")
    print("\nCost:")
    for index, name in enumerate(HOSPITALS):
        stats = results[index]["stats"]
        print(f"  {name}: sent {stats.bytes_sent:,} bytes in {stats.messages_sent} messages, "
              f"communication depth {stats.rounds} rounds")
    print(f"  wall time {elapsed:.2f} s (three parties in one process)")
    print(f"\nProtocol rep3, {result['security']}; fixed-point truncation "
          f"'{result['truncation']}'.")
    print("Only the four statistics above were revealed; no hospital saw another's rows.")
    print("Fixed point: 16 fractional bits, public factors such as 1/3714 keep 15 "
          "significant bits,\nso each statistic is within 1e-4 of the exact value.")
    worst = max(abs(float(result[k]) - reference[k]) for k in labels)
    if worst > 1e-3:
        print(f"ERROR: secure and plaintext results differ by {worst}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
