"""Where the TLS transport's time goes: one operation over each layer of the stack.

    python bench/transport.py --json                  # mul_fxp at 10^6, all variants
    python bench/transport.py --ops mul_fxp,mul_int --sizes 100000,1000000

Runs an engine operation (``bench/engine.py``'s registry) with three parties
in several ways, all in the same invocation, and reports each next to the
in-memory run of that invocation:

| variant | parties | bytes between them | transcript |
|---|---|---|---|
| ``memory`` | threads of one process | handed over by reference | none |
| ``tcp`` | OS processes | plain TCP on 127.0.0.1, the real frames | none |
| ``tcp+sha256`` | OS processes | plain TCP, the real frames | SHA-256 per peer, both ways |
| ``tls-no-transcript`` | OS processes | mutual TLS 1.3 (the real transport) | none |
| ``tls`` | OS processes | mutual TLS 1.3 (the real transport) | SHA-256 per peer, both ways |

Only ``memory`` and ``tls`` are ways Concilium runs; the others exist here,
in the benchmark, to measure the floor each layer sets (plain TCP carries
the real frames but no encryption, so it is never offered by the product).

Each record: ``op``, ``n``, ``transport`` (the variant), ``seconds`` (median of
``--repeats`` timed runs after warm-up, first party starting to last party
finishing), ``memory_seconds`` and ``over_memory`` (against the ``memory`` run
of the same invocation), ``cpu_seconds_per_party`` (process CPU time per
operation, median; for ``memory`` the process's CPU divided by three),
``cpus`` (cores this machine has) and ``bytes_per_party`` (payload bytes the
busiest party sent). With three processes on two cores the run is CPU-bound,
so ``seconds`` follows the sum of the parties' CPU time.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from concilium.data import Session
from concilium.governance.consortium import load_manifest
from concilium.governance.identity import load_node
from concilium.mpc.protocols import protocol
from concilium.net.tls import TlsIdentity, TlsSettings, establish_connections
from concilium.net.tls import _tune as tune_like_tls  # the same socket options
from concilium.net.tls_channel import TlsChannel
from concilium.net.transcript import Transcript
from concilium.node.launcher import endpoints
from concilium.ring.memory import tune_allocator
from concilium.testing import run_parties
from engine import OPS, OpSpec, TlsRunner, _barrier, emit

VARIANTS = ("memory", "tcp", "tcp+sha256", "tls-no-transcript", "tls")
_COMPUTATION = bytes(32)


class NullTranscript(Transcript):
    """Hashes nothing: what the transport costs without transcript digests."""

    def __init__(self) -> None:
        super().__init__([])

    def sent(self, peer: int, header: bytes, payload: memoryview) -> None:
        pass

    def received(self, peer: int, header: bytes, payload: memoryview) -> None:
        pass

    def digests(self, peer: int) -> tuple[bytes, bytes]:
        return bytes(32), bytes(32)


class PlainConnection:
    """The interface of ``TlsConnection`` over a bare TCP socket (benchmark floor only)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.wire_bytes_sent = 0

    def send(self, parts: Sequence[bytes | memoryview], timeout: float,
             interrupted: Callable[[], bool] | None = None) -> None:
        """Blocking sends (the floor: no timeouts to watch)."""
        for part in parts:
            self.sock.sendall(part)
            self.wire_bytes_sent += memoryview(part).nbytes

    def read_exact(self, target: memoryview) -> None:
        filled = 0
        while filled < len(target):
            count = self.sock.recv_into(target[filled:])
            if count == 0:
                raise EOFError("the peer closed the connection")
            filled += count

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _plain_connections(me: int, ports: Sequence[int]) -> dict[int, PlainConnection]:
    """Lower index dials, higher listens, as the TLS transport does."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", ports[me]))
    listener.listen(len(ports))
    connections: dict[int, PlainConnection] = {}
    for peer in range(me + 1, len(ports)):
        deadline = time.monotonic() + 30
        while True:
            try:
                sock = socket.create_connection(("127.0.0.1", ports[peer]))
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        sock.sendall(bytes([me]))
        connections[peer] = PlainConnection(sock)
    while len(connections) < len(ports) - 1:
        sock, _ = listener.accept()
        connections[sock.recv(1)[0]] = PlainConnection(sock)
    listener.close()
    for connection in connections.values():
        tune_like_tls(connection.sock)
    return connections


def _channel(variant: str, node_dir: Path, manifest_path: Path, ports: Sequence[int]) -> (
        TlsChannel):
    settings = TlsSettings(receive_timeout=120)
    manifest = load_manifest(manifest_path)
    node = load_node(node_dir)
    me = manifest.index(node.name)
    transcript = NullTranscript() if variant in ("tcp", "tls-no-transcript") else None
    if variant.startswith("tcp"):
        plain = _plain_connections(me, ports)
        return TlsChannel(me, len(ports), plain, bytes(32), settings,  # type: ignore[arg-type]
                          transcript=transcript)
    if variant == "tls":  # exactly the product's path
        return TlsChannel.connect(me, endpoints(manifest),
                                  TlsIdentity(node.tls_certificate_path, node.tls_key_path),
                                  bytes.fromhex(manifest.hash), _COMPUTATION, settings)
    connections, session = establish_connections(
        me, endpoints(manifest), TlsIdentity(node.tls_certificate_path, node.tls_key_path),
        bytes.fromhex(manifest.hash), _COMPUTATION, settings)
    return TlsChannel(me, len(ports), connections, session, settings, transcript=transcript)


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _measure(session: Session, spec: OpSpec, n: int, repeats: int, warmup: int) -> (
        list[dict[str, float]]):
    operation = spec.prepare(session, n)
    samples = []
    for index in range(warmup + repeats):
        _barrier(session)
        before, cpu_before = session.stats(), _cpu_seconds()
        start = time.perf_counter()
        operation()
        end = time.perf_counter()
        cpu_after, after = _cpu_seconds(), session.stats()
        if index >= warmup:
            samples.append({"start": start, "end": end, "cpu": cpu_after - cpu_before,
                            "bytes": after.bytes_sent - before.bytes_sent})
    _barrier(session)
    return samples


def _party(variant: str, node_dir: Path, manifest_path: Path, ports: list[int], op: str,
           n: int, repeats: int, warmup: int, result: Path) -> None:
    """One party process: its samples, or its error, go to ``result`` as JSON."""
    tune_allocator()
    channel = _channel(variant, node_dir, manifest_path, ports)
    try:
        samples = _measure(Session(protocol("rep3").create_backend(channel, (0, 1, 2))),
                           OPS[op], n, repeats, warmup)
        channel.finish()
        result.write_text(json.dumps({"samples": samples}))
    except BaseException as error:
        channel.abort(f"benchmark party failed: {type(error).__name__}")
        result.write_text(json.dumps({"error": f"{type(error).__name__}: {error}"}))
        raise
    finally:
        channel.close()


def _run_processes(variant: str, consortium: TlsRunner, op: str, n: int, repeats: int,
                   warmup: int) -> list[list[dict[str, float]]]:
    """Three party processes (``python bench/transport.py --party ...``); JSON results."""
    ports = [str(_free_port()) for _ in consortium.node_dirs]
    with tempfile.TemporaryDirectory(prefix="concilium-transport-run-") as scratch:
        results = [Path(scratch) / f"party-{index}.json"
                   for index in range(len(consortium.node_dirs))]
        processes = [subprocess.Popen([
            sys.executable, __file__, "--party", variant, "--node-dir", str(node_dir),
            "--manifest", str(consortium.manifest_path), "--ports", ",".join(ports),
            "--ops", op, "--sizes", str(n), "--repeats", str(repeats), "--warmup", str(warmup),
            "--result", str(result)]) for node_dir, result in zip(consortium.node_dirs, results,
                                                                  strict=True)]
        for process in processes:
            process.wait(timeout=600)
        outcomes = [json.loads(result.read_text()) if result.exists() else
                    {"error": f"exit status {process.returncode}"}
                    for result, process in zip(results, processes, strict=True)]
    failures = [outcome["error"] for outcome in outcomes if "error" in outcome]
    if failures:
        raise RuntimeError(f"{variant}: {failures[0]}")
    return [outcome["samples"] for outcome in outcomes]


def _run_memory(op: str, n: int, repeats: int, warmup: int) -> list[list[dict[str, float]]]:
    def program(session: Session) -> list[dict[str, float]]:
        return _measure(session, OPS[op], n, repeats, warmup)
    per_party = run_parties(3, program)
    # process CPU covers all three parties: charge each a third
    return [[dict(sample, cpu=sample["cpu"] / 3) for sample in party] for party in per_party]


def _summary(per_party: list[list[dict[str, float]]], repeats: int) -> dict[str, float]:
    seconds = statistics.median(
        max(party[k]["end"] for party in per_party) - min(party[k]["start"] for party in per_party)
        for k in range(repeats))
    cpu = statistics.median(party[k]["cpu"] for party in per_party for k in range(repeats))
    busiest = max(party[-1]["bytes"] for party in per_party)
    return {"seconds": seconds, "cpu_seconds_per_party": cpu, "bytes_per_party": busiest}


def measure(op: str, n: int, variants: Sequence[str], repeats: int, warmup: int) -> (
        list[dict[str, Any]]):
    """One record per variant; ``memory`` is always measured, as the baseline."""
    consortium = TlsRunner()  # its three node identities and manifest
    memory = _summary(_run_memory(op, n, repeats, warmup), repeats)
    records = []
    for variant in variants:
        figures = memory if variant == "memory" else _summary(
            _run_processes(variant, consortium, op, n, repeats, warmup), repeats)
        records.append({"op": op, "n": n, "protocol": "rep3", "transport": variant,
                        "parties": 3, **figures, "memory_seconds": memory["seconds"],
                        "over_memory": figures["seconds"] / memory["seconds"],
                        "cpus": os.cpu_count()})
    return records


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print a JSON list of records")
    parser.add_argument("--ops", default="mul_fxp", help="comma-separated engine operations")
    parser.add_argument("--sizes", default="1000000", help="comma-separated sizes")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help=f"comma-separated, of {', '.join(VARIANTS)}")
    parser.add_argument("--repeats", type=int, default=7, help="timed runs (median)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs first")
    parser.add_argument("--party", help=argparse.SUPPRESS)  # a party process: its variant
    parser.add_argument("--node-dir", help=argparse.SUPPRESS)
    parser.add_argument("--manifest", help=argparse.SUPPRESS)
    parser.add_argument("--ports", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.party:
        _party(args.party, Path(args.node_dir), Path(args.manifest),
               [int(port) for port in args.ports.split(",")], args.ops, int(args.sizes),
               args.repeats, args.warmup, Path(args.result))
        return 0
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    records = []
    for op in args.ops.split(","):
        for n in (int(size) for size in args.sizes.split(",") if size):
            for record in measure(op.strip(), n, variants, args.repeats, args.warmup):
                records.append(record)
                if not args.json:
                    print(f"{record['op']:>10} n={n:<8} {record['transport']:>18} "
                          f"{record['seconds'] * 1e3:8.2f} ms  x{record['over_memory']:5.2f} "
                          f"memory  cpu/party {record['cpu_seconds_per_party'] * 1e3:6.2f} ms",
                          file=sys.stderr)
    return emit(records, args.json)


if __name__ == "__main__":
    raise SystemExit(main())
