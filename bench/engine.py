"""Engine benchmark: secure operations next to plain numpy, in the same run.

    python bench/engine.py --json                 # all operations, JSON list on stdout
    python bench/engine.py --ops mul_fxp --sizes 1000000
    python bench/engine.py                        # a readable table
    python bench/engine.py --protocol additive --peer /tmp/spuenv/bin/python
    python bench/engine.py --protocol rep4 [--transport tls]   # next to rep3, same run
                                                  # two parties, SPU CHEETAH beside

Operations: ``mul_fxp`` and ``matvec_fxp`` use the probabilistic ("fast")
truncation that ABY3, SPU and CrypTen use, so their figures compare with the
peers'; ``*_reliable`` use Concilium's default truncation, which never makes
a catastrophic error (see docs/fixed-point.md) and costs more.

Each record: ``op``, ``n``, ``protocol``, ``transport``, ``parties``, ``seconds``
(median of ``--repeats`` timed runs after warm-up, from the first party
starting to the last party finishing), ``numpy_seconds`` (the same operation
in plain numpy, median, same run), ``ratio`` (seconds / numpy_seconds),
``rounds`` (communication depth), ``bytes_per_party`` (payload bytes sent by
the busiest party for the whole operation), ``bytes_per_element`` and, where a
paper states it, ``paper_bytes_per_element``. With ``--transport tls`` the three
parties are OS processes connected by mutual TLS on 127.0.0.1, and
``wire_bytes_per_party`` adds what TLS costs (ciphertext bytes the busiest
party wrote to its sockets, record headers and tags included); each TLS record
also carries ``memory_seconds`` and ``tls_over_memory``, the in-memory run of
the same operation measured in the same invocation.

``--protocol additive`` runs two parties (``--parties`` for more) on the
dishonest-majority backend, whose triples and daBits come from oblivious
transfer *inside* each timed operation (nothing is prepared ahead), and its
own default operations: 10^5 fixed-point products in both truncation modes and
10^4 full-range less-thans, each with ``theory_bytes_per_element`` (the count
docs/protocols.md derives), then the OT layer's triple throughput and the peak
memory of 10^6 triples (``bench/ot.py``). ``--peer PYTHON`` (a Python with
spu==0.9.5) runs SPU's two-party CHEETAH on the same jobs in the same
invocation and adds ``spu_cheetah_seconds`` and ``spu_over_concilium``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from concilium.data import SecretArray, Session
from concilium.mpc.backend import Truncation
from concilium.ring import FixedPointCodec, Prg
from concilium.testing import run_parties

CODEC = FixedPointCodec()


@dataclass(frozen=True)
class OpSpec:
    """One benchmarked operation."""

    name: str
    sizes: tuple[int, ...]
    # builds (inputs) -> secure op; runs on every party
    prepare: Callable[[Session, int], Callable[[], Any]]
    numpy_op: Callable[[int], Callable[[], Any]]
    truncation: Truncation | None = None
    paper_bytes_per_element: float | None = None
    paper: str | None = None
    elements: Callable[[int], int] = lambda n: n
    # facts added to each record: values, or functions of n
    extra: dict[str, Any] = field(default_factory=dict)


def _uniform(n: int, low: float = -8.0, high: float = 8.0) -> np.ndarray:
    return low + (high - low) * Prg.from_urandom().uniform(n)


def _two_inputs(session: Session, n: int, fixed: bool) -> tuple[SecretArray, SecretArray]:
    me = session.party
    if fixed:
        x = session.input(0, _uniform(n) if me == 0 else None, fixed=True)
        y = session.input(1, _uniform(n) if me == 1 else None, fixed=True)
    else:
        x = session.input(0, Prg.from_urandom().integers(n).view(np.int64) if me == 0 else None)
        y = session.input(1, Prg.from_urandom().integers(n).view(np.int64) if me == 1 else None)
    return x, y


def _mul_fxp(mode: Truncation) -> Callable[[Session, int], Callable[[], Any]]:
    def prepare(session: Session, n: int) -> Callable[[], Any]:
        x, y = _two_inputs(session, n, fixed=True)
        return lambda: x.multiply(y, truncation=mode)
    return prepare


def _mul_int(session: Session, n: int) -> Callable[[], Any]:
    x, y = _two_inputs(session, n, fixed=False)
    return lambda: x * y


def _matvec(mode: Truncation) -> Callable[[Session, int], Callable[[], Any]]:
    def prepare(session: Session, n: int) -> Callable[[], Any]:
        me = session.party
        a = session.input(0, _uniform(n * 30).reshape(n, 30) if me == 0 else None, fixed=True)
        v = session.input(1, _uniform(30) if me == 1 else None, fixed=True)
        return lambda: a.matmul(v, truncation=mode)
    return prepare


def _less_int(session: Session, n: int) -> Callable[[], Any]:
    x, y = _two_inputs(session, n, fixed=False)  # uniform 64-bit words: the full range
    return lambda: x < y


def _numpy_less_int(n: int) -> Callable[[], Any]:
    x = Prg.from_urandom().integers(n).view(np.int64)
    y = Prg.from_urandom().integers(n).view(np.int64)
    return lambda: x < y


def _input_sum_reveal(session: Session, n: int) -> Callable[[], Any]:
    values = _uniform(n) if session.party == 0 else None
    return lambda: session.input(0, values, fixed=True).sum().reveal()


def _numpy_mul_fxp(n: int) -> Callable[[], Any]:
    x = CODEC.encode(_uniform(n)).view(np.int64)
    y = CODEC.encode(_uniform(n)).view(np.int64)
    return lambda: (x * y) >> 16


def _numpy_mul_int(n: int) -> Callable[[], Any]:
    x = Prg.from_urandom().integers(n)
    y = Prg.from_urandom().integers(n)
    return lambda: x * y


def _numpy_matvec(n: int) -> Callable[[], Any]:
    a = CODEC.encode(_uniform(n * 30)).view(np.int64).reshape(n, 30)
    v = CODEC.encode(_uniform(30)).view(np.int64)
    return lambda: (a @ v) >> 16


def _numpy_sum(n: int) -> Callable[[], Any]:
    x = _uniform(n)
    return lambda: x.sum()


_ABY3 = ("ABY3 (Mohassel-Rindal CCS'18) / Araki et al. (CCS'16): a multiplication or dot "
         "product sends 1 ring element per party; ABY3's truncation is extra")

OPS: dict[str, OpSpec] = {
    spec.name: spec
    for spec in [
        # the probabilistic (ABY3-style) truncation the peers use: comparable figures
        OpSpec("mul_fxp", (10**5, 10**6), _mul_fxp("fast"), _numpy_mul_fxp, "fast", 8.0, _ABY3),
        # Concilium's default: no catastrophic rounding error (docs/fixed-point.md)
        OpSpec("mul_fxp_reliable", (10**5, 10**6), _mul_fxp("reliable"), _numpy_mul_fxp,
               "reliable", 8.0, _ABY3),
        OpSpec("mul_int", (10**6,), _mul_int, _numpy_mul_int, None, 8.0, _ABY3),
        OpSpec("matvec_fxp", (10**4,), _matvec("fast"), _numpy_matvec, "fast", 8.0, _ABY3),
        OpSpec("matvec_fxp_reliable", (10**4,), _matvec("reliable"), _numpy_matvec, "reliable",
               8.0, _ABY3),
        OpSpec("input_sum_reveal", (10**6,), _input_sum_reveal, _numpy_sum),
        OpSpec("less_int", (10**4,), _less_int, _numpy_less_int),
    ]
}

#: ``--protocol additive``'s jobs (the issue's targets) and their theoretical bytes per
#: element for the busiest of two parties: a triple is 64 OTs (16 bytes each) and 288
#: bytes of Gilboa corrections each way, its Beaver opening 16 bytes; a daBit is one
#: correlated OT (16 bytes from its chooser); a sign bit (msb) is 1 + 1 + 1/2 + 1/4 +
#: 3/8 = 3.125 AND words (1,032-byte AND triples plus 16-byte openings), and a
#: full-range less-than three of them, one AND of packed bits (1/64 word) and a daBit
#: with 1/8 byte opened
ADDITIVE_DEFAULTS = {"mul_fxp_reliable": 10**5, "mul_fxp": 10**5, "less_int": 10**4}
#: ``--protocol rep4``'s jobs (the issue's targets), each run on ``rep3`` too in the same
#: invocation: the record carries ``rep3_seconds``, ``time_over_rep3`` and
#: ``bytes_over_rep3`` (issue: at most 2x the bytes and 3x the time for products, 3x the
#: time for comparisons)
REP4_DEFAULTS = {"mul_int": 10**6, "less_int": 10**6}
_AND_WORD = 1032 + 16
ADDITIVE_THEORY = {"mul_fxp_reliable": 1312 + 16 + 16 + 1 / 8, "mul_fxp": 1312 + 16,
                   "mul_int": 1312 + 16,
                   "less_int": 3 * 3.125 * _AND_WORD + _AND_WORD / 64 + 16 + 1 / 8}


def _barrier(session: Session) -> None:
    """Two chained openings: afterwards every party has passed the barrier."""
    token = session.backend.share_public(np.zeros(1, dtype=np.uint64))
    session.backend.reveal(token)
    session.backend.reveal(token)


def _wire_bytes(session: Session) -> int:
    """Ciphertext bytes sent so far (TLS transport), 0 in memory."""
    counter = getattr(session.backend.channel, "wire_bytes_sent", None)
    return int(counter()) if counter is not None else 0


def _party_program(spec: OpSpec, n: int, repeats: int, warmup: int) -> Callable[[Session], Any]:
    def program(session: Session) -> list[dict[str, Any]]:
        op = spec.prepare(session, n)
        samples = []
        for index in range(warmup + repeats):
            _barrier(session)
            before, wire_before = session.stats(), _wire_bytes(session)
            start = time.perf_counter()
            op()
            end = time.perf_counter()
            after, wire_after = session.stats(), _wire_bytes(session)
            if index >= warmup:
                samples.append({"start": start, "end": end,
                                "bytes": after.bytes_sent - before.bytes_sent,
                                "wire_bytes": wire_after - wire_before,
                                "rounds_before": before.rounds, "rounds_after": after.rounds})
        _barrier(session)
        return samples
    return program


def tls_party(session: Session, op: str, n: int, repeats: int, warmup: int) -> list[Any]:
    """Entry point of a party process for ``--transport tls`` (bench.engine:tls_party)."""
    return _party_program(OPS[op], n, repeats, warmup)(session)


def _time_numpy(spec: OpSpec, n: int, repeats: int, warmup: int) -> float:
    op = spec.numpy_op(n)
    times = []
    for index in range(warmup + repeats):
        start = time.perf_counter()
        op()
        if index >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


NODE_NAMES = ("bench-a", "bench-b", "bench-c", "bench-d", "bench-e", "bench-f")


class TlsRunner:
    """Local node processes (three, or ``names``) of a ``protocol`` consortium over mutual
    TLS, re-launched for each measurement.

    ``entry``: the party function (``module:function`` in this directory) that
    runs an operation by name."""

    def __init__(self, entry: str = "engine:tls_party",
                 names: tuple[str, ...] = ("bench-a", "bench-b", "bench-c"),
                 protocol: str = "rep3") -> None:
        self.entry = entry
        import socket
        import tempfile

        from concilium.governance.consortium import Manifest, add_party, save_manifest
        from concilium.governance.identity import create_node

        self._scratch = tempfile.TemporaryDirectory(prefix="concilium-bench-")
        root = Path(self._scratch.name)
        manifest = Manifest("bench", protocol)
        self.node_dirs = []
        for name in names:
            ports = []
            for _ in range(2):
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", 0))
                    ports.append(probe.getsockname()[1])
            node = create_node(root / name, name, f"127.0.0.1:{ports[0]}",
                               f"127.0.0.1:{ports[1]}")
            manifest = add_party(manifest, node, ("data_owner", "compute"))
            self.node_dirs.append(root / name)
        self.manifest_path = root / "bench.toml"
        save_manifest(manifest, self.manifest_path)

    def timed(self, args: dict[str, Any], repeats: int) -> tuple[float, list[Any]]:
        """Launch ``entry`` with ``args`` on every node; each party returns one sample
        (``start``, ``end``, ...) per repeat. The median over repeats of the span from
        the first start to the last end, and every party's samples."""
        from concilium.node.launcher import launch_local, values_or_raise

        here = Path(__file__).resolve().parent
        per_party = values_or_raise(launch_local(
            self.manifest_path, self.node_dirs, self.entry, args=args,
            python_path=[str(here)], timeout=900, receive_timeout=300))
        seconds = statistics.median(
            max(p[k]["end"] for p in per_party) - min(p[k]["start"] for p in per_party)
            for k in range(repeats))
        return seconds, per_party

    @classmethod
    def for_protocol(cls, protocol: str, parties: int,
                     entry: str = "engine:tls_party") -> TlsRunner:
        return cls(entry, NODE_NAMES[:parties], protocol)

    def run(self, spec: OpSpec, n: int, repeats: int, warmup: int) -> list[list[Any]]:
        from concilium.node.launcher import launch_local, values_or_raise

        here = Path(__file__).resolve().parent
        outcomes = launch_local(self.manifest_path, self.node_dirs, self.entry,
                                args={"op": spec.name, "n": n, "repeats": repeats,
                                      "warmup": warmup},
                                python_path=[str(here)], timeout=600, receive_timeout=120)
        return values_or_raise(outcomes)


def run_op(spec: OpSpec, n: int, *, repeats: int, warmup: int, transport: str,
           tls: TlsRunner | None = None, protocol: str = "rep3",
           parties: int = 3) -> dict[str, Any]:
    numpy_before = _time_numpy(spec, n, repeats, warmup)
    if transport == "memory":
        per_party = run_parties(parties, _party_program(spec, n, repeats, warmup),
                                protocol=protocol)
    else:
        assert tls is not None
        per_party = tls.run(spec, n, repeats, warmup)
    numpy_after = _time_numpy(spec, n, repeats, warmup)
    seconds = statistics.median(
        max(party[k]["end"] for party in per_party) - min(party[k]["start"] for party in per_party)
        for k in range(repeats)
    )
    last = [party[-1] for party in per_party]
    busiest = max(sample["bytes"] for sample in last)
    # communication depth added to the critical path (Lamport clocks of all parties)
    rounds = max(s["rounds_after"] for s in last) - max(s["rounds_before"] for s in last)
    numpy_seconds = min(numpy_before, numpy_after)
    elements = spec.elements(n)
    record: dict[str, Any] = {
        "op": spec.name,
        "n": n,
        "protocol": protocol,
        "transport": transport,
        "parties": parties,
        "seconds": seconds,
        "numpy_seconds": numpy_seconds,
        "ratio": seconds / numpy_seconds,
        "rounds": rounds,
        "bytes_per_party": busiest,
        "bytes_per_element": busiest / elements,
    }
    if transport == "tls":
        record["wire_bytes_per_party"] = max(sample["wire_bytes"] for sample in last)
        memory = run_op(spec, n, repeats=repeats, warmup=warmup, transport="memory",
                        protocol=protocol, parties=parties)
        record["memory_seconds"] = memory["seconds"]          # same run, for the ratio
        record["tls_over_memory"] = seconds / memory["seconds"]
    if spec.truncation:
        record["truncation"] = spec.truncation
    if protocol == "additive" and spec.name in ADDITIVE_THEORY and parties == 2:
        record["theory_bytes_per_element"] = ADDITIVE_THEORY[spec.name]
        record["includes"] = "the operation's triples and daBits, made by OT inside it"
    elif spec.paper_bytes_per_element is not None and protocol == "rep3":
        record["paper_bytes_per_element"] = spec.paper_bytes_per_element
        record["paper"] = spec.paper
    record.update({key: value(n) if callable(value) else value
                   for key, value in spec.extra.items()})
    return record


def _additive_extras(records: list[dict[str, Any]], peer_python: str | None,
                     repeats: int) -> list[dict[str, Any]]:
    """The OT layer's triple throughput and the memory of 10^6 triples (bench/ot.py),
    and, with a peer Python, SPU CHEETAH on the same jobs (its figures are added to the
    matching records)."""
    import ot

    extras = [ot.triples(10**5, min(repeats, 3), False), ot.memory(10**6)]
    if peer_python:
        multiply = next((r["n"] for r in records if r["op"] == "mul_fxp"), 10**5)
        compare = next((r["n"] for r in records if r["op"] == "less_int"), 10**4)
        spu = ot.peer(peer_python, multiply, compare)
        for record in records:
            key = {"mul_fxp": "multiply", "mul_fxp_reliable": "multiply",
                   "less_int": "less"}.get(record["op"])
            if key is not None and record["n"] == (multiply if key == "multiply" else compare):
                record["spu_cheetah_seconds"] = spu[f"spu_cheetah_{key}_seconds"]
                record["spu_over_concilium"] = record["spu_cheetah_seconds"] / record["seconds"]
    return extras


def emit(records: list[dict[str, Any]], as_json: bool) -> int:
    """The end of every benchmark: the records as a JSON list on stdout if asked."""
    if as_json:
        json.dump(records, sys.stdout, indent=1)
        print()
    return 0


def elements_of(spec: OpSpec, n: int) -> int:
    return spec.elements(n)


def main(argv: list[str] | None = None, registry: dict[str, OpSpec] | None = None,
         tls_entry: str = "engine:tls_party", description: str | None = None) -> int:
    """Run the benchmark CLI over ``registry`` (default: the engine's operations)."""
    registry = OPS if registry is None else registry
    parser = argparse.ArgumentParser(description=description or __doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print a JSON list of records")
    parser.add_argument("--transport", default="memory", choices=["memory", "tls"],
                        help="memory: threads of one process; tls: OS processes over TLS")
    parser.add_argument("--protocol", default="rep3",
                        help="rep3 (default), rep4 (next to rep3 in the same run) or additive")
    parser.add_argument("--parties", type=int, default=0,
                        help="compute parties (default: 3 for rep3, 4 for rep4, 2 for "
                             "additive)")
    parser.add_argument("--peer", help="additive: a Python with spu==0.9.5, to run SPU "
                                       "CHEETAH on the same jobs in this invocation")
    parser.add_argument("--ops", default="", help="comma-separated operations")
    parser.add_argument("--sizes", default="", help="comma-separated sizes (default per op)")
    parser.add_argument("--repeats", type=int, default=7, help="timed runs (median)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs first")
    args = parser.parse_args(argv)
    additive, rep4 = args.protocol == "additive", args.protocol == "rep4"
    parties = args.parties or (2 if additive else 4 if rep4 else 3)
    defaults = (ADDITIVE_DEFAULTS if additive else REP4_DEFAULTS if rep4 else {}
                ) if registry is OPS else {}
    names = args.ops or ",".join(defaults or registry)
    records = []
    tls = (TlsRunner.for_protocol(args.protocol, parties, tls_entry)
           if args.transport == "tls" else None)
    baseline = (TlsRunner.for_protocol("rep3", 3, tls_entry)
                if rep4 and args.transport == "tls" else None)
    for name in names.split(","):
        spec = registry[name.strip()]
        default = (defaults[spec.name],) if spec.name in defaults else spec.sizes
        sizes = tuple(int(s) for s in args.sizes.split(",") if s) or default
        for n in sizes:
            record = run_op(spec, n, repeats=args.repeats, warmup=args.warmup,
                            transport=args.transport, tls=tls, protocol=args.protocol,
                            parties=parties)
            if rep4:
                _next_to_rep3(record, run_op(spec, n, repeats=args.repeats,
                                             warmup=args.warmup, transport=args.transport,
                                             tls=baseline, protocol="rep3", parties=3))
            records.append(record)
            if not args.json:
                extra = (f"  tls/memory {record['tls_over_memory']:.2f}  wire "
                         f"{record['wire_bytes_per_party'] / elements_of(spec, n):.1f} B/elem"
                         if "tls_over_memory" in record else "")
                print(f"{record['op']:>18} n={n:<8} {record['seconds'] * 1e3:9.2f} ms  "
                      f"numpy {record['numpy_seconds'] * 1e3:7.3f} ms  x{record['ratio']:6.1f}  "
                      f"rounds {record['rounds']}  {record['bytes_per_element']:.1f} B/elem"
                      f"{extra}", file=sys.stderr)
    if additive and parties == 2 and registry is OPS:
        records += _additive_extras(records, args.peer, args.repeats)
    if rep4 and registry is OPS and not args.ops:  # the default jobs: the whole record
        import cheats

        records.append(cheats.harness())
    return emit(records, args.json)


def _next_to_rep3(record: dict[str, Any], rep3: dict[str, Any]) -> None:
    """rep3's figures for the same job in the same run, and the ratios."""
    record["rep3_seconds"] = rep3["seconds"]
    record["rep3_bytes_per_party"] = rep3["bytes_per_party"]
    record["rep3_rounds"] = rep3["rounds"]
    record["time_over_rep3"] = record["seconds"] / rep3["seconds"]
    record["bytes_over_rep3"] = record["bytes_per_party"] / rep3["bytes_per_party"]


if __name__ == "__main__":
    raise SystemExit(main())
