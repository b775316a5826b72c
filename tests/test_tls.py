"""net/tls: real sockets, mutual TLS 1.3, pinned certificates, sessions and aborts."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import struct
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from concilium.data import Session
from concilium.errors import ConfigurationError, PeerUnavailable, ProtocolAbort
from concilium.governance.identity import create_node
from concilium.mpc.protocols import protocol
from concilium.net.frame import FrameKind, encode_frame
from concilium.net.tls import TlsIdentity, TlsSettings, _context, _wrap
from concilium.net.tls_channel import TlsChannel
from concilium.node.launcher import endpoints, launch_local, values_or_raise
from concilium.testing import run_parties
from tests import tls_programs
from tests.helpers_tls import Consortium, connect_in_threads, free_port, make_consortium, run_each

ROOT = str(Path(__file__).resolve().parents[1])
ULP = 2.0**-16


@pytest.fixture
def consortium(tmp_path: Path) -> Consortium:
    return make_consortium(tmp_path)


def _close(channels: list) -> None:
    for channel in channels:
        if isinstance(channel, TlsChannel):
            channel.close()


def test_engine_gives_the_same_results_over_tls_processes_as_in_memory(
        consortium: Consortium) -> None:
    outcomes = launch_local(consortium.manifest_path, consortium.node_dirs,
                            "tests.tls_programs:engine_ops", args={"n": 3000},
                            python_path=[ROOT], timeout=120)
    over_tls = values_or_raise(outcomes)
    in_memory = run_parties(3, lambda session: tls_programs.engine_ops(session, n=3000))
    for tls_result, memory_result in zip(over_tls, in_memory, strict=True):
        for key in ("mul", "sum", "matmul"):       # integers: exactly equal
            assert np.array_equal(tls_result[key], memory_result[key]), key
        for key in ("fixed", "fixed_fast", "scaled"):  # stochastic rounding: within 1 ulp
            assert np.max(np.abs(tls_result[key] - memory_result[key])) <= ULP, key
    # transcript digests agree pairwise, and every link was used
    by_index = {o.index: {d["peer"]: d for d in o.digests} for o in outcomes}
    for i in range(3):
        for j in range(3):
            if i != j:
                assert by_index[i][j]["sent"] == by_index[j][i]["received"]
    assert all(o.wire_bytes_sent > o.stats["bytes_sent"] for o in outcomes)


def test_the_operations_library_runs_over_tls_processes(consortium: Consortium) -> None:
    n = 2000
    outcomes = launch_local(consortium.manifest_path, consortium.node_dirs,
                            "tests.tls_programs:secure_ops", args={"n": n},
                            python_path=[ROOT], timeout=120)
    x = np.arange(n, dtype=np.int64) * 7919 % 1000 - 500
    y = np.arange(n, dtype=np.int64) % 13 - 6
    f = np.linspace(-6.0, 6.0, n)
    order = np.argsort(x, kind="stable")
    for result in values_or_raise(outcomes):
        assert np.array_equal(result["less"], x < y) and np.array_equal(result["equal"], x == 0)
        assert np.allclose(result["divide"], x / (y * y + 1), atol=4 * ULP)
        assert np.allclose(result["sigmoid"], 1 / (1 + np.exp(-f)), atol=4 * ULP)
        assert np.array_equal(result["sorted"], x[order])
        assert np.array_equal(result["payload"], y[order]) and result["max"] == x.max()


def test_a_governed_run_over_tls_logs_transcripts_and_cosigned_checkpoints(
        consortium: Consortium, tmp_path: Path) -> None:
    from concilium.governance.audit import AuditLog
    from concilium.governance.audit_verify import verify_log
    from concilium.governance.consortium import load_manifest
    from concilium.governance.identity import load_node, load_signing_key

    outcomes = launch_local(consortium.manifest_path, consortium.node_dirs,
                            "tests.tls_programs:governed_query",
                            args={"manifest_path": str(consortium.manifest_path),
                                  "node_dirs": [str(d) for d in consortium.node_dirs],
                                  "audit_dir": str(tmp_path)},
                            python_path=[ROOT], timeout=120)
    result, *others = values_or_raise(outcomes)
    assert others == [None, None]  # only the recipient sees the result
    assert result["n"] == [30, 30] and np.allclose(result["s"], [10.0, 11.0], atol=1e-3)
    manifest = load_manifest(consortium.manifest_path)
    signers = {p.name: p.signing_key for p in manifest.parties}
    for node_dir in consortium.node_dirs:
        identity = load_node(node_dir)
        path = tmp_path / f"{identity.name}.sqlite"
        assert verify_log(path, signers) == 9  # a proposal, 3 approvals, 5 run entries
        log = AuditLog(path, identity.name, load_signing_key(identity))
        end = next(e for e in log.entries() if e.kind == "run_end")
        start = next(e for e in log.entries() if e.kind == "run_start")
        log.close()
        assert start.body["threat_model"]["summary"].startswith(
            "rep3: semi-honest, honest majority; 3 compute parties, tolerates 1 corrupted")
        assert len(end.body["transcript"]) == 2  # digests for both peers
        assert all(len(t["sent"]) == 64 for t in end.body["transcript"])


def test_unknown_certificates_and_garbage_are_refused_while_the_party_keeps_serving(
        consortium: Consortium, tmp_path: Path) -> None:
    intruder = create_node(tmp_path / "intruder", "intruder", f"127.0.0.1:{free_port()}")
    nodes = consortium.nodes
    port = nodes[2].mpc_address.port
    refused: list[str] = []
    results: list = [None] * 3

    def connect(index: int) -> None:
        try:
            results[index] = TlsChannel.connect(
                index, endpoints(consortium.manifest),
                TlsIdentity(nodes[index].tls_certificate_path, nodes[index].tls_key_path),
                bytes.fromhex(consortium.manifest.hash), bytes(32),
                TlsSettings(startup_timeout=20, receive_timeout=10), on_refused=refused.append)
        except BaseException as error:
            results[index] = error

    # party 2 (the highest index) only listens: start it, then attack it
    listening = threading.Thread(target=connect, args=(2,))
    listening.start()
    time.sleep(0.3)
    for garbage in (b"GET / HTTP/1.1\r\n\r\n", os.urandom(300), b""):
        with socket.create_connection(("127.0.0.1", port)) as raw:
            raw.sendall(garbage)
    answers = []
    for node in (intruder, nodes[2]):  # an unknown certificate; charlie's own may not dial
        context = _context(False, TlsIdentity(node.tls_certificate_path, node.tls_key_path),
                           [*endpoints(consortium.manifest)])
        raw = socket.create_connection(("127.0.0.1", port))
        connection = _wrap(raw, context, server=False)
        try:
            connection.handshake(time.monotonic() + 5)
            connection.send([b"hello?"], 5.0)
            raw.settimeout(5)
            answers.append(raw.recv(100))
        except (ssl.SSLError, OSError) as error:
            answers.append(error)
        finally:
            connection.close()
    others = [threading.Thread(target=connect, args=(i,)) for i in (0, 1)]
    for thread in others:
        thread.start()
    for thread in [listening, *others]:
        thread.join(40)
    try:
        assert all(isinstance(r, TlsChannel) for r in results), results
        assert len({r.session for r in results}) == 1
        assert any("CERTIFICATE_VERIFY_FAILED" in text for text in refused), refused
        assert any("may not dial this party" in text for text in refused), refused
        assert len(refused) >= 5
        assert all(answer in (b"",) or isinstance(answer, Exception) for answer in answers)
        values = run_each(results, _square_over)
        assert all(np.array_equal(v, np.arange(5) ** 2) for v in values), values
    finally:
        _close(results)


def _square_over(index: int, channel: TlsChannel) -> np.ndarray:
    session = Session(protocol("rep3").create_backend(channel, (0, 1, 2)))
    a = session.input(0, np.arange(5) if index == 0 else None)
    return (a * a).reveal()


def _raw_frame(kind: FrameKind, session: bytes, sender: int, tag: int, array: np.ndarray) -> (
        bytes):
    header, payload = encode_frame(kind, session, sender, tag, 0, array)
    return header + bytes(payload)


@pytest.mark.parametrize(("attack", "message"), [
    ("other_session", "another session"),
    ("replay", "again or out of order"),
    ("impostor_sender", "claiming to be from party 2"),
    ("oversized", "announces"),
    ("garbage", "not a Concilium frame"),
    ("truncated", "closed its connection"),
])
def test_bad_frames_from_an_authenticated_peer_stop_the_run(consortium: Consortium,
                                                            attack: str, message: str) -> None:
    channels = connect_in_threads(consortium)
    try:
        assert all(isinstance(c, TlsChannel) for c in channels), channels
        sender, receiver = channels[0], channels[1]
        connection = sender._connections[1]
        good = np.arange(4, dtype=np.uint64)
        session = sender.session
        if attack == "other_session":
            data = _raw_frame(FrameKind.DATA, os.urandom(32), 0, 5, good)
        elif attack == "replay":
            data = _raw_frame(FrameKind.DATA, session, 0, 5, good) * 2
        elif attack == "impostor_sender":
            data = _raw_frame(FrameKind.DATA, session, 2, 5, good)
        elif attack == "oversized":
            frame = bytearray(_raw_frame(FrameKind.DATA, session, 0, 5, good))
            frame[56:64] = struct.pack("<Q", 1 << 40)
            data = bytes(frame)
        elif attack == "garbage":
            data = os.urandom(200)
        else:
            data = _raw_frame(FrameKind.DATA, session, 0, 5, good)[:70]
        connection.send([data], 5.0)
        if attack == "truncated":
            connection.close()
        with pytest.raises((ProtocolAbort, PeerUnavailable)) as caught:
            if attack == "replay":  # the first copy may be taken before the replay arrives
                receiver.receive(0, 5)
            receiver.receive(0, 6)
        assert message in str(caught.value)
        if attack != "truncated":
            # every other party learns of the abort and stops too
            with pytest.raises(ProtocolAbort):
                channels[2].receive(0, 7)
    finally:
        _close(channels)


def test_a_different_manifest_is_refused_at_hello(consortium: Consortium) -> None:
    from dataclasses import replace

    other = replace(consortium.manifest, name="other")
    channels = connect_in_threads(consortium, manifests=[consortium.manifest,
                                                         consortium.manifest, other],
                                  settings=TlsSettings(startup_timeout=3, receive_timeout=3))
    try:
        errors = [c for c in channels if not isinstance(c, TlsChannel)]
        assert errors
        assert any(isinstance(e, ConfigurationError) and "different consortium manifest" in
                   str(e) for e in errors), errors
    finally:
        _close(channels)


def test_a_missing_party_is_reported_by_name(consortium: Consortium) -> None:
    node = consortium.nodes[0]
    start = time.monotonic()
    with pytest.raises(PeerUnavailable, match=r"could not reach party 1 \(bravo\)"):
        TlsChannel.connect(0, endpoints(consortium.manifest),
                           TlsIdentity(node.tls_certificate_path, node.tls_key_path),
                           bytes.fromhex(consortium.manifest.hash), bytes(32),
                           TlsSettings(startup_timeout=1.0))
    assert time.monotonic() - start < 5


def test_transcript_mismatch_aborts(consortium: Consortium) -> None:
    channels = connect_in_threads(consortium)
    try:
        channels[0].transcript.tamper_for_tests(1)
        outcome = run_each(channels, lambda i, ch: ch.finish())
        assert isinstance(outcome[0], ProtocolAbort) or isinstance(outcome[1], ProtocolAbort)
        assert "differ" in str(outcome[0]) + str(outcome[1])
    finally:
        _close(channels)


def _ports_free(ports: list[int]) -> bool:
    for port in ports:
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


@pytest.mark.parametrize("delay", [0.3, 0.8, 1.5])
def test_killing_a_party_aborts_the_others_within_the_timeout(consortium: Consortium,
                                                              delay: float) -> None:
    def kill_later(processes) -> None:
        time.sleep(delay)
        processes[1].kill()

    start = time.monotonic()
    outcomes = launch_local(consortium.manifest_path, consortium.node_dirs,
                            "tests.tls_programs:slow_multiplications", python_path=[ROOT],
                            receive_timeout=5, startup_timeout=5, timeout=60,
                            on_started=kill_later)
    elapsed = time.monotonic() - start   # killed during set-up or mid-run: both bounded
    assert outcomes[1].exit_code != 0 and outcomes[1].value is None
    for survivor in (outcomes[0], outcomes[2]):
        assert survivor.error_type in {"PeerUnavailable", "ProtocolAbort"}, survivor
        assert survivor.value is None
    assert elapsed < delay + 5 + 10
    assert _ports_free(consortium.ports())


def test_a_stalled_party_cannot_hold_the_others_hostage(consortium: Consortium) -> None:
    """A stopped process keeps its connections open and reads nothing, so a party
    sending it a frame larger than the socket buffers waits on a full buffer: it
    must still give up within the timeout, and exit by itself."""
    times: dict[str, float] = {}

    def stop_then_reap(processes) -> None:
        def watch() -> None:
            try:
                time.sleep(3.0)
                os.kill(processes[1].pid, signal.SIGSTOP)
                times["stopped"] = time.monotonic()
                for survivor in (processes[0], processes[2]):
                    survivor.wait(timeout=60)
                times["survivors_exited"] = time.monotonic()
            except subprocess.TimeoutExpired:
                times["survivors_exited"] = float("inf")  # hostages until the kill below
            finally:
                processes[1].kill()
        threading.Thread(target=watch, daemon=True).start()

    outcomes = launch_local(consortium.manifest_path, consortium.node_dirs,
                            "tests.tls_programs:large_multiplications", python_path=[ROOT],
                            receive_timeout=3, startup_timeout=10, timeout=120,
                            on_started=stop_then_reap)
    for survivor in (outcomes[0], outcomes[2]):
        assert survivor.error_type in {"PeerUnavailable", "ProtocolAbort"}, survivor
        assert survivor.value is None and survivor.exit_code == 1  # not killed: it gave up
    assert outcomes[1].value is None
    # the receive or send timeout (3 s), the abort's grace for stuck sends, exit
    assert times["survivors_exited"] - times["stopped"] < 15
    assert _ports_free(consortium.ports())


def test_a_party_that_dies_silently_is_noticed(consortium: Consortium) -> None:
    outcomes = launch_local(consortium.manifest_path, consortium.node_dirs,
                            "tests.tls_programs:exit_abruptly", python_path=[ROOT],
                            receive_timeout=5, timeout=60)
    assert outcomes[1].error_type == "ProcessDied"
    for survivor in (outcomes[0], outcomes[2]):
        assert survivor.error_type in {"PeerUnavailable", "ProtocolAbort"}
        assert "party 1" in survivor.error


def test_a_failing_program_aborts_everyone_with_its_reason(consortium: Consortium) -> None:
    outcomes = launch_local(consortium.manifest_path, consortium.node_dirs,
                            "tests.tls_programs:fail_on_party_two", python_path=[ROOT],
                            timeout=60)
    assert outcomes[2].error_type == "ValueError"
    # the first party to stop got party 2's abort message; the other may see that
    # party's connection close first (PeerUnavailable is a ProtocolAbort too)
    for other in outcomes[:2]:
        assert other.error_type in {"ProtocolAbort", "PeerUnavailable"}
    assert any(other.error == "aborted by party 2: ValueError in the program"
               for other in outcomes[:2])
    with pytest.raises(ProtocolAbort, match="party alpha failed"):
        values_or_raise(outcomes)


def test_a_party_that_gives_up_its_set_up_stops_the_others_before_any_data(
        consortium: Consortium, monkeypatch: pytest.MonkeyPatch) -> None:
    """Party 1 has all its connections but gives up (its start-up timeout ran out) and
    closes before the start barrier: the others fail their set-up with PeerUnavailable,
    before any data frame is sent, so a node waits and tries again instead of failing
    the run (a clean-clone CI run once failed with "Broken pipe" here)."""
    original = TlsChannel._start_barrier

    def give_up(self: TlsChannel) -> None:
        if self.party == 1:
            raise PeerUnavailable("party 1 gave up its set-up")
        original(self)

    monkeypatch.setattr(TlsChannel, "_start_barrier", give_up)
    start = time.monotonic()
    outcomes = connect_in_threads(consortium, settings=TlsSettings(startup_timeout=5,
                                                                   receive_timeout=5))
    try:
        assert all(isinstance(o, PeerUnavailable) for o in outcomes), outcomes
        # each learns it from party 1, or from the other one that learnt it first
        assert all("did not start the run" in str(outcomes[i]) for i in (0, 2)), outcomes
        assert any("party 1 did not start" in str(o) for o in outcomes), outcomes
        assert time.monotonic() - start < 5  # at once, not after the timeout
    finally:
        _close(outcomes)
