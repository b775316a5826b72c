"""The cheat-injection harness as a benchmark record: how many injections were
tried on ``rep4`` and how many were caught.

    python bench/cheats.py --json

Runs the catalogue of ``tests/test_rep4_cheating.py``: every primitive, the
cheater in each of the four positions, every kind of injection
(:data:`concilium.net.cheating.INJECTIONS`, and a flip at the digest end of
each frame) into every message the cheater sends in that primitive. A record:
``op`` ``cheat_harness``, ``protocol``, ``injections`` (tried: the tampering
changed the message), ``detected`` (every honest party aborted with
CheatingDetected or PeerUnavailable and none output a value), ``detection_rate``,
``by_primitive``, ``seconds``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests package

from engine import emit
from tests.test_rep4_cheating import PRIMITIVES, check_every_injection


def harness() -> dict[str, Any]:
    started = time.monotonic()
    by_primitive: dict[str, dict[str, int]] = {}
    for name in PRIMITIVES:
        tried = detected = 0
        for cheater in range(4):
            t, d = check_every_injection(name, cheater, strict=False)
            tried, detected = tried + t, detected + d
        by_primitive[name] = {"injections": tried, "detected": detected}
    tried = sum(p["injections"] for p in by_primitive.values())
    detected = sum(p["detected"] for p in by_primitive.values())
    return {"op": "cheat_harness", "protocol": "rep4", "transport": "memory",
            "injections": tried, "detected": detected,
            "detection_rate": detected / tried if tried else None,
            "by_primitive": by_primitive, "seconds": time.monotonic() - started}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print a JSON list of records")
    args = parser.parse_args(argv)
    record = harness()
    if not args.json:
        print(f"cheat harness: {record['detected']} of {record['injections']} injections "
              f"detected ({record['detection_rate']:.1%}) in {record['seconds']:.1f} s",
              file=sys.stderr)
    return emit([record], args.json)


if __name__ == "__main__":
    raise SystemExit(main())
