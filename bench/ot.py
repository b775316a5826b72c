"""OT benchmark: Beaver triples between two parties with no dealer (base OTs, IKNP
extension, Gilboa products), in memory, two threads on this machine's cores.

    python bench/ot.py --json
    python bench/ot.py --triples 100000 --repeats 3
    python bench/ot.py --peer /tmp/spuenv/bin/python   # SPU CHEETAH in the same run
    python bench/ot.py --transport tls                 # also two processes over TLS

Records (median of ``--repeats``):

* ``triples``: ``n`` multiplication triples over Z_2^64, including the base OTs
  (``seconds``), ``triples_per_second`` per party, ``bytes_per_party`` and
  ``bytes_per_triple`` next to ``theory_bytes_per_triple`` (64 OTs of 16 bytes
  plus 288 bytes of truncated corrections);
* ``and_triples``: the same for AND triples of 64-bit words;
* ``fixed_multiply``: ``n`` fixed-point products (16 fractional bits) including
  their triples: two inputs, the Beaver step, the two-party local truncation of
  SecureML (Mohassel-Zhang 2017), the reveal; run on the OT layer directly (the
  ``additive`` backend that will run it behind the Backend interface is not
  built yet), checked against numpy;
* ``memory``: the peak traced memory while one party makes 10^6 triples in
  chunks (``--memory-triples``), which stays bounded by the chunk size;
* ``backend_multiply``, ``backend_less``: the same multiply, and ``--compare``
  full-range less-thans, through ``Session`` on the ``additive`` backend, each
  job including its base OTs and triples;
* with ``--peer``: ``spu_cheetah_seconds`` for the same jobs in SPU's two-party
  CHEETAH (``bench/peer_spu.py --cheetah``), run in the same invocation, and
  ``spu_over_concilium``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from concilium.mpc.bit_kernels import transpose_bits
from concilium.mpc.ot_triples import PairwiseOt, correction_bytes
from concilium.net import MemoryNetwork
from concilium.ring import FixedPointCodec, Prg
from engine import emit

FRACTION = 16


def _two(program: Callable[[int, Any], Any]) -> tuple[float, list[Any], list[int]]:
    network = MemoryNetwork(2)
    results: list[Any] = [None, None]
    failures: list[BaseException] = []

    def run(party: int) -> None:
        try:
            results[party] = program(party, network.channel(party))
        except BaseException as error:  # re-raised below
            failures.append(error)

    threads = [threading.Thread(target=run, args=(p,)) for p in (0, 1)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - start
    if failures:
        raise failures[0]
    return seconds, results, [network.channel(p).stats().bytes_sent for p in (0, 1)]


def triples(n: int, repeats: int, boolean: bool) -> dict[str, Any]:
    def program(party: int, channel: Any) -> Any:
        ot = PairwiseOt.setup(channel, party, [0, 1], 1000)
        return ot.triples(n, boolean=boolean)

    runs = [_two(program) for _ in range(repeats)]
    seconds = statistics.median(r[0] for r in runs)
    sent = max(runs[-1][2])
    theory = 64 * 16 + (64 // 8 if boolean else correction_bytes(1))
    return {"op": "and_triples" if boolean else "triples", "n": n, "protocol": "additive",
            "transport": "memory", "parties": 2, "seconds": seconds,
            "triples_per_second": n / seconds, "bytes_per_party": sent,
            "bytes_per_triple": sent / n, "theory_bytes_per_triple": theory}


def fixed_multiply(n: int, repeats: int) -> dict[str, Any]:
    """Inputs x (party 0), y (party 1), their triples, one Beaver product, local
    truncation, reveal: the whole job, as SPU's CHEETAH figure counts it."""
    codec = FixedPointCodec()
    x = (Prg.from_urandom().uniform(n) - 0.5) * 16
    y = (Prg.from_urandom().uniform(n) - 0.5) * 16

    def program(party: int, channel: Any) -> Any:
        peer = 1 - party
        ot = PairwiseOt.setup(channel, party, [0, 1], 1000)
        a, b, c = ot.triples(n)
        tag = ot.tag  # the next free tag on every link
        prg = Prg.from_urandom()
        mask = prg.integers(n)  # input: the owner keeps v - r, sends r
        mine = codec.encode(x if party == 0 else y)
        channel.send(peer, tag, mask)
        theirs = np.asarray(channel.receive(peer, tag))
        own = mine - mask
        xs, ys = (own, theirs) if party == 0 else (theirs, own)
        channel.send(peer, tag + 1, np.stack([xs - a, ys - b]))  # open d = x - a, e = y - b
        other = np.asarray(channel.receive(peer, tag + 1))
        d, e = (xs - a) + other[0], (ys - b) + other[1]
        z = c + d * b + e * a + (d * e if party == 0 else 0)
        if party == 0:  # SecureML two-party truncation, local
            z = (z.view(np.int64) >> FRACTION).view(np.uint64)
        else:
            z = (-((-z).view(np.int64) >> FRACTION)).view(np.uint64)
        channel.send(peer, tag + 2, z)
        return codec.decode(z + np.asarray(channel.receive(peer, tag + 2)))

    runs = [_two(program) for _ in range(repeats)]
    error = float(np.abs(runs[-1][1][0] - x * y).max())
    return {"op": "fixed_multiply", "n": n, "protocol": "additive", "transport": "memory",
            "parties": 2, "seconds": statistics.median(r[0] for r in runs),
            "bytes_per_party": max(runs[-1][2]), "max_error": error,
            "note": "triples + Beaver + SecureML truncation on the OT layer directly"}


def memory(n: int) -> dict[str, Any]:
    """Peak traced memory of one party while two parties make ``n`` triples."""
    tracemalloc.start()
    seconds, _, _ = _two(lambda party, channel: PairwiseOt.setup(
        channel, party, [0, 1], 1000).triples(n)[2].nbytes)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {"op": "triples_memory", "n": n, "parties": 2, "seconds": seconds,
            "peak_bytes_both_parties": peak, "output_bytes_per_party": 3 * 8 * n}


def backend(n: int, compare: int, repeats: int) -> list[dict[str, Any]]:
    """The ``additive`` backend through ``Session``: ``n`` fixed-point products and
    ``compare`` full-range less-thans, each job with its inputs, its correlations
    (base OTs and triples, made in the job) and its reveal."""
    from concilium.data import Session
    from concilium.mpc.additive import Additive

    x = (Prg.from_urandom().uniform(n) - 0.5) * 16
    y = (Prg.from_urandom().uniform(n) - 0.5) * 16
    u = (Prg.from_urandom().uniform(compare) - 0.5) * 2000
    v = (Prg.from_urandom().uniform(compare) - 0.5) * 2000

    def job(left: Any, right: Any, op: str) -> Callable[[int, Any], Any]:
        def program(party: int, channel: Any) -> Any:
            session = Session(Additive(channel, (0, 1)))
            a = session.input(0, left if party == 0 else None, fixed=True)
            b = session.input(1, right if party == 1 else None, fixed=True)
            return ((a * b) if op == "multiply" else (a < b)).reveal()
        return program

    records = []
    for op, left, right, exact in (("multiply", x, y, x * y), ("less", u, v, u < v)):
        runs = [_two(job(left, right, op)) for _ in range(repeats)]
        result = np.asarray(runs[-1][1][0], dtype=np.float64)
        size = left.size
        records.append({
            "op": f"backend_{op}", "n": size, "protocol": "additive", "transport": "memory",
            "parties": 2, "seconds": statistics.median(r[0] for r in runs),
            "bytes_per_party": max(runs[-1][2]), "bytes_per_element": max(runs[-1][2]) / size,
            "max_error": float(np.abs(result - exact).max()),
            "includes": "inputs, base OTs, triples, the job, the reveal"})
    return records


def tls_party(session: Any, op: str, n: int, repeats: int) -> list[dict[str, Any]]:
    """A party process of ``--transport tls`` (``ot:tls_party``): the backend job with
    only its own input (seeded test data), each repeat after a barrier; the
    session's base OTs ran at start-up, every job makes its own triples."""
    from engine import _barrier

    data = np.random.default_rng(session.party)  # test data, not secrets
    scale = 16 if op == "multiply" else 2000
    mine = (data.uniform(size=n) - 0.5) * scale
    samples = []
    channel = session.backend.channel
    for index in range(repeats + 1):
        _barrier(session)
        before, start = channel.stats().bytes_sent, time.perf_counter()
        a = session.input(0, mine if session.party == 0 else None, fixed=True)
        b = session.input(1, mine if session.party == 1 else None, fixed=True)
        ((a * b) if op == "multiply" else (a < b)).reveal()
        end = time.perf_counter()
        if index:  # the first run warms up
            samples.append({"start": start, "end": end,
                            "bytes": channel.stats().bytes_sent - before})
    _barrier(session)
    return samples


def tls(n: int, compare: int, repeats: int) -> list[dict[str, Any]]:
    """The backend jobs between two OS processes over mutual TLS."""
    from engine import TlsRunner

    runner = TlsRunner("ot:tls_party", names=("bank-a", "bank-b"), protocol="additive")
    records = []
    for op, size in (("multiply", n), ("less", compare)):
        seconds, per_party = runner.timed({"op": op, "n": size, "repeats": repeats}, repeats)
        records.append({"op": f"backend_{op}", "n": size, "protocol": "additive",
                        "transport": "tls", "parties": 2, "seconds": seconds,
                        "bytes_per_party": max(p[-1]["bytes"] for p in per_party),
                        "includes": "inputs, triples, the job, the reveal (the base OTs "
                                    "ran once at the session's start)"})
    return records


def peer(python: str, n: int, compare: int) -> dict[str, Any]:
    script = Path(__file__).resolve().parent / "peer_spu.py"
    completed = subprocess.run([python, str(script), "--cheetah", str(n), str(compare)],
                               check=True, capture_output=True, text=True, timeout=1800)
    last = completed.stdout.strip().splitlines()[-1]  # SPU logs on stdout before it
    return dict(json.loads(last))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--triples", type=int, default=100_000)
    parser.add_argument("--compare", type=int, default=10_000, help="less-than pairs")
    parser.add_argument("--memory-triples", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--peer", help="a Python with spu==0.9.5 (bench/peer_spu.py)")
    parser.add_argument("--transport", default="memory", choices=["memory", "tls"],
                        help="tls: also the backend jobs between two processes over TLS")
    args = parser.parse_args(argv)
    transpose_bits(np.zeros((128, 8), dtype=np.uint8))  # compile (or load) the kernel
    records = [triples(args.triples, args.repeats, False),
               triples(args.triples // 10, args.repeats, True),
               fixed_multiply(args.triples, args.repeats),
               *backend(args.triples, args.compare, args.repeats)]
    if args.peer:
        spu = peer(args.peer, args.triples, args.compare)
        for record in records:
            if record["op"] in ("fixed_multiply", "backend_multiply"):
                record["spu_cheetah_seconds"] = spu["spu_cheetah_multiply_seconds"]
            elif record["op"] == "backend_less":
                record["spu_cheetah_seconds"] = spu["spu_cheetah_less_seconds"]
            if "spu_cheetah_seconds" in record:
                record["spu_over_concilium"] = record["spu_cheetah_seconds"] / record["seconds"]
    if args.transport == "tls":
        over = {r["op"]: r for r in tls(args.triples, args.compare, args.repeats)}
        for record in list(records):
            if record["op"] in over:
                tls_record = over[record["op"]]
                tls_record["tls_over_memory"] = tls_record["seconds"] / record["seconds"]
                if "spu_cheetah_seconds" in record:
                    tls_record["spu_cheetah_seconds"] = record["spu_cheetah_seconds"]
                    tls_record["spu_over_concilium"] = (record["spu_cheetah_seconds"]
                                                        / tls_record["seconds"])
                records.append(tls_record)
    if args.memory_triples:
        records.append(memory(args.memory_triples))
    if not args.json:
        for record in records:
            print(json.dumps(record), file=sys.stderr)
    return emit(records, args.json)


if __name__ == "__main__":
    raise SystemExit(main())
