"""Run the parties of a consortium as separate OS processes over mutual TLS.

``launch_local(manifest, node_dirs, "package.module:function")`` starts one
process per node directory (``python -m concilium.node.launcher ...``); each
loads its node identity, connects to the others with the TLS transport, runs
``function(session, **args)`` (``session`` is a
:class:`~concilium.data.Session`, or an :class:`~concilium.data.OutsideParty`
for a party that is not a compute party), compares transcript digests, and
writes its result as JSON. Nothing crossing the process boundary is pickled:
numpy arrays travel as dtype, shape and values.

If a party fails, it aborts the run on every other party; each process then
reports its error instead of a result, and no result of an aborted run is
used. ``concilium launch`` is the command-line form.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from concilium.data import OutsideParty, Session
from concilium.errors import ConciliumError, ConfigurationError, ProtocolAbort
from concilium.governance.consortium import Manifest, load_manifest
from concilium.governance.identity import load_node, parse_address
from concilium.mpc.backend import Truncation
from concilium.mpc.protocols import protocol
from concilium.net.tls import Endpoint, TlsIdentity, TlsSettings
from concilium.net.tls_channel import TlsChannel
from concilium.ring.memory import tune_allocator

__all__ = [
    "PartyOutcome",
    "decode_value",
    "encode_value",
    "endpoints",
    "launch_local",
    "run_party",
]


def endpoints(manifest: Manifest) -> list[Endpoint]:
    """The network view of a manifest: every party, indexed in manifest order."""
    result = []
    for index, party in enumerate(manifest.parties):
        address = parse_address(party.mpc_address)
        result.append(Endpoint(index, party.name, address.host, address.port,
                               party.tls_certificate, party.tls_fingerprint))
    return result


def encode_value(value: Any) -> Any:
    """JSON-ready form of results: arrays as dtype/shape/values, dataclasses as dicts."""
    if isinstance(value, np.ndarray):
        return {"__ndarray__": {"dtype": value.dtype.str, "shape": list(value.shape),
                                "values": value.ravel().tolist()}}
    if isinstance(value, np.generic):
        return value.item()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: encode_value(v) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, Mapping):
        return {str(k): encode_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [encode_value(v) for v in value]
    return value


def decode_value(value: Any) -> Any:
    """Inverse of :func:`encode_value` (tuples come back as lists)."""
    if isinstance(value, dict):
        if set(value) == {"__ndarray__"}:
            spec = value["__ndarray__"]
            dtype = np.dtype(spec["dtype"])
            if dtype.kind not in "biuf":
                raise ConfigurationError(f"refusing to decode an array of dtype {dtype}")
            return np.array(spec["values"], dtype=dtype).reshape(spec["shape"])
        return {k: decode_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [decode_value(v) for v in value]
    return value


@dataclass(frozen=True)
class PartyOutcome:
    """What one party process reported."""

    name: str
    index: int
    value: Any = None
    error_type: str | None = None
    error: str | None = None
    digests: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    stats: dict[str, Any] = dataclasses.field(default_factory=dict)
    wire_bytes_sent: int = 0
    exit_code: int = 0

    @property
    def ok(self) -> bool:
        return self.error_type is None and self.exit_code == 0


def _parse_program(spec: str) -> tuple[str, str]:
    module_name, _, function = spec.partition(":")
    if not module_name or not function:
        raise ConfigurationError(f"program {spec!r} must be given as package.module:function")
    return module_name, function


def _load_program(spec: str) -> Callable[..., Any]:
    module_name, function = _parse_program(spec)
    try:
        return getattr(importlib.import_module(module_name), function)
    except (ImportError, AttributeError) as error:
        raise ConfigurationError(f"cannot load program {spec!r}: {error}") from None


def run_party(manifest_path: Path | str, node_dir: Path | str, computation_id: bytes,
              program: str, args: Mapping[str, Any] | None = None,
              settings: TlsSettings | None = None,
              truncation: Truncation = "reliable") -> dict[str, Any]:
    """Run one party in this process; returns its JSON-ready outcome (raises on failure)."""
    manifest = load_manifest(manifest_path)
    manifest.require_ready()
    identity = load_node(node_dir)
    me = manifest.index(identity.name)
    if manifest.parties[me].tls_fingerprint != identity.tls_fingerprint:
        raise ConfigurationError(f"node {identity.name}'s certificate is not the one in the "
                                 "manifest; re-add the node with concilium consortium add")
    function = _load_program(program)
    compute = tuple(i for i, party in enumerate(manifest.parties) if party.is_compute)
    channel = TlsChannel.connect(
        me, endpoints(manifest),
        TlsIdentity(identity.tls_certificate_path, identity.tls_key_path),
        bytes.fromhex(manifest.hash), computation_id, settings)
    try:
        handle: Session | OutsideParty
        if me in compute:
            handle = Session(protocol(manifest.protocol).create_backend(channel, compute),
                             truncation=truncation)
        else:
            handle = OutsideParty(channel, compute, protocol=manifest.protocol)
        try:
            value = function(handle, **dict(args or {}))
        except BaseException as error:
            # Concilium's messages never carry data; a program's own messages might
            detail = f": {error}" if isinstance(error, ConciliumError) else " in the program"
            channel.abort(f"{type(error).__name__}{detail}")
            raise
        digests = channel.finish()
        return {"name": identity.name, "index": me, "value": encode_value(value),
                "digests": encode_value(digests), "stats": encode_value(channel.stats()),
                "wire_bytes_sent": channel.wire_bytes_sent()}
    finally:
        channel.close()


def _party_main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run one party of a local launch.")
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--node-dir", required=True)
    parser.add_argument("--computation-id", required=True)
    parser.add_argument("--program", required=True)
    parser.add_argument("--args", default="{}")
    parser.add_argument("--result", required=True)
    parser.add_argument("--receive-timeout", type=float, default=60.0)
    parser.add_argument("--startup-timeout", type=float, default=30.0)
    parser.add_argument("--truncation", default="reliable")
    options = parser.parse_args(argv)
    tune_allocator()
    settings = TlsSettings(startup_timeout=options.startup_timeout,
                           receive_timeout=options.receive_timeout,
                           send_timeout=options.receive_timeout)
    try:
        name = load_node(options.node_dir).name
    except ConciliumError:
        name = Path(options.node_dir).name
    try:
        outcome = run_party(options.manifest, options.node_dir,
                            bytes.fromhex(options.computation_id), options.program,
                            json.loads(options.args), settings, options.truncation)
        code = 0
    except (ConciliumError, OSError, ValueError, TypeError, RuntimeError, KeyError) as error:
        outcome = {"name": name, "index": -1, "error_type": type(error).__name__,
                   "error": str(error)}
        code = 1
    Path(options.result).write_text(json.dumps(outcome))
    return code


def launch_local(manifest_path: Path | str, node_dirs: Sequence[Path | str], program: str,
                 *, args: Mapping[str, Any] | None = None, computation_id: bytes | None = None,
                 timeout: float = 300.0, receive_timeout: float = 60.0,
                 startup_timeout: float = 30.0, truncation: Truncation = "reliable",
                 python_path: Sequence[str] = (),
                 on_started: Callable[[list[subprocess.Popen[bytes]]], None] | None = None,
                 ) -> list[PartyOutcome]:
    """Start one process per node directory and wait for all; outcomes in the given order.

    ``receive_timeout``: how long a party waits for a peer that sends nothing,
    or accepts nothing it is sent, before the run is aborted.
    ``on_started`` receives the processes once they run (tests use it to kill one).
    """
    manifest = load_manifest(manifest_path)
    manifest.require_ready()
    _parse_program(program)
    cid = (computation_id or os.urandom(32)).hex()
    environment = dict(os.environ)
    paths = [*python_path, environment.get("PYTHONPATH", "")]
    environment["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    with tempfile.TemporaryDirectory(prefix="concilium-launch-") as scratch:
        processes, result_files = [], []
        for position, node_dir in enumerate(node_dirs):
            result_file = Path(scratch) / f"party-{position}.json"
            result_files.append(result_file)
            command = [sys.executable, "-m", "concilium.node.launcher",
                       "--manifest", str(manifest_path), "--node-dir", str(node_dir),
                       "--computation-id", cid, "--program", program,
                       "--args", json.dumps(encode_value(dict(args or {}))),
                       "--result", str(result_file), "--truncation", truncation,
                       "--receive-timeout", str(receive_timeout),
                       "--startup-timeout", str(startup_timeout)]
            processes.append(subprocess.Popen(command, env=environment))
        if on_started is not None:
            on_started(processes)
        deadline = time.monotonic() + timeout
        for process in processes:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        return [_outcome(node_dir, process, result_file)
                for node_dir, process, result_file in zip(node_dirs, processes, result_files,
                                                          strict=True)]


def _outcome(node_dir: Path | str, process: subprocess.Popen[bytes], result_file: Path) -> (
        PartyOutcome):
    name = Path(node_dir).name
    if not result_file.exists():
        return PartyOutcome(name=name, index=-1, error_type="ProcessDied",
                            error=f"the process exited with code {process.returncode} before "
                                  "reporting", exit_code=process.returncode or -1)
    data = json.loads(result_file.read_text())
    return PartyOutcome(
        name=data.get("name", name), index=data.get("index", -1),
        value=decode_value(data.get("value")), error_type=data.get("error_type"),
        error=data.get("error"), digests=data.get("digests", []), stats=data.get("stats", {}),
        wire_bytes_sent=data.get("wire_bytes_sent", 0), exit_code=process.returncode or 0,
    )


def values_or_raise(outcomes: Sequence[PartyOutcome]) -> list[Any]:
    """The parties' values, or a ProtocolAbort naming the first failure."""
    failed = [o for o in outcomes if not o.ok]
    if failed:
        first = failed[0]
        raise ProtocolAbort(f"party {first.name} failed: {first.error_type}: {first.error}")
    return [o.value for o in outcomes]


if __name__ == "__main__":
    raise SystemExit(_party_main())
