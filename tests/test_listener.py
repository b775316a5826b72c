"""net/listener: one standing mutual-TLS port per party, many computations at once."""

from __future__ import annotations

import socket
import ssl
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from concilium.data import Session
from concilium.errors import PeerUnavailable
from concilium.mpc.protocols import protocol
from concilium.net.listener import StandingListener
from concilium.net.tls import TlsIdentity, TlsSettings
from concilium.net.tls_channel import TlsChannel
from concilium.node.launcher import endpoints
from tests.helpers_tls import Consortium, make_consortium

SETTINGS = TlsSettings(startup_timeout=15, handshake_timeout=2, receive_timeout=20)


def _identity(consortium: Consortium, index: int) -> TlsIdentity:
    node = consortium.nodes[index]
    return TlsIdentity(node.tls_certificate_path, node.tls_key_path)


def _listeners(consortium: Consortium, known: set[bytes], refused: list[str]
               ) -> list[StandingListener]:
    every = endpoints(consortium.manifest)
    return [StandingListener(every[i], every, _identity(consortium, i), SETTINGS,
                             known=known.__contains__, on_refused=refused.append).start()
            for i in range(len(every))]


def _run(consortium: Consortium, listeners: list[StandingListener], index: int,
         computation: bytes, values: np.ndarray, delay: float = 0.0) -> tuple[bytes, int]:
    """One party of one computation: connect through the standing listener, then a
    secure sum of every party's input."""
    time.sleep(delay)
    every = endpoints(consortium.manifest)
    with listeners[index].expect(computation, len(every) - 1) as arrivals:
        channel = TlsChannel.connect(index, every, _identity(consortium, index),
                                     bytes.fromhex(consortium.manifest.hash), computation,
                                     SETTINGS, arrivals=arrivals)
    try:
        session = Session(protocol("rep3").create_backend(channel, (0, 1, 2)))
        shared = [session.input(p, values if p == index else None)
                  for p in range(3)]
        total = int((shared[0] + shared[1] + shared[2]).sum().reveal())
        channel.finish()
        return channel.session, total
    finally:
        channel.close()


def test_many_computations_share_one_port_per_party(tmp_path: Path) -> None:
    consortium = make_consortium(tmp_path)
    computations = [bytes([k]) * 32 for k in range(8)]
    refused: list[str] = []
    listeners = _listeners(consortium, set(computations), refused)
    inputs = {(c, p): np.arange(50, dtype=np.int64) * (p + 1) + k
              for k, c in enumerate(computations) for p in range(3)}
    results: dict[tuple[bytes, int], object] = {}

    def party(computation: bytes, index: int, delay: float) -> None:
        try:
            results[(computation, index)] = _run(consortium, listeners, index, computation,
                                                 inputs[(computation, index)], delay)
        except BaseException as error:
            results[(computation, index)] = error

    # the parties of a computation start at different moments, in either order
    threads = [threading.Thread(target=party, args=(c, p, 0.05 * ((k + p) % 3)))
               for k, c in enumerate(computations) for p in range(3)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    finally:
        for listener in listeners:
            listener.close()
    sessions = set()
    for computation in computations:
        outcomes = [results[(computation, p)] for p in range(3)]
        assert all(isinstance(o, tuple) for o in outcomes), outcomes
        expected = sum(int(inputs[(computation, p)].sum()) for p in range(3))
        assert {o[1] for o in outcomes} == {expected}  # type: ignore[index]
        ids = {o[0] for o in outcomes}  # type: ignore[index]
        assert len(ids) == 1  # one session per computation, agreed by its parties
        sessions |= ids
    assert len(sessions) == len(computations)  # each its own keys and transcripts
    assert not refused


def test_unknown_computations_silent_and_hostile_peers_are_refused(tmp_path: Path) -> None:
    consortium = make_consortium(tmp_path)
    computation = bytes([7]) * 32
    refused: list[str] = []
    listeners = _listeners(consortium, {computation}, refused)
    every = endpoints(consortium.manifest)
    try:
        # a peer that connects and sends nothing, and one that sends garbage: each
        # holds a handshake thread for at most the handshake timeout
        silent = socket.create_connection(("127.0.0.1", listeners[2].port))
        garbage = socket.create_connection(("127.0.0.1", listeners[2].port))
        garbage.sendall(b"\x16\x03\x01 not a TLS hello" * 10)
        # a computation the nodes do not run: refused, and the dialer is told so
        unknown = bytes([9]) * 32
        with pytest.raises(PeerUnavailable):
            TlsChannel.connect(1, every, _identity(consortium, 1),
                               bytes.fromhex(consortium.manifest.hash), unknown,
                               TlsSettings(startup_timeout=3, handshake_timeout=2),
                               arrivals=_NoArrivals())
        # meanwhile a real computation completes
        inputs = [np.full(10, p + 1, dtype=np.int64) for p in range(3)]
        results: list[object] = [None] * 3

        def party(index: int) -> None:
            results[index] = _run(consortium, listeners, index, computation, inputs[index])

        threads = [threading.Thread(target=party, args=(p,)) for p in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert [r[1] for r in results] == [60] * 3  # type: ignore[index]
        silent.close()
        garbage.close()
        def seen() -> tuple[bool, bool]:
            return (any("does not run" in r for r in refused),
                    sum("SSL" in r or "EOF" in r or "timed out" in r for r in refused) >= 2)

        deadline = time.monotonic() + 5
        while not all(seen()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert seen() == (True, True), refused
    finally:
        for listener in listeners:
            listener.close()


def test_a_certificate_outside_the_manifest_fails_the_handshake(tmp_path: Path) -> None:
    consortium = make_consortium(tmp_path)
    stranger = make_consortium(tmp_path / "other", names=("mallory",), name="other")
    refused: list[str] = []
    listeners = _listeners(consortium, set(), refused)
    try:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        node = stranger.nodes[0]
        context.load_cert_chain(str(node.tls_certificate_path), str(node.tls_key_path))
        raw = socket.create_connection(("127.0.0.1", listeners[0].port))
        try:  # TLS 1.3: the server checks the client's certificate after the client is done
            with context.wrap_socket(raw) as tls:
                tls.sendall(b"x")
                answer = tls.recv(1)
        except (ssl.SSLError, OSError):
            answer = b""
        assert answer == b""  # never a byte of the protocol
        deadline = time.monotonic() + 5
        while not refused and time.monotonic() < deadline:
            time.sleep(0.05)
        assert refused and "CERTIFICATE_VERIFY_FAILED" in refused[0]
    finally:
        for listener in listeners:
            listener.close()


class _NoArrivals:
    def get(self, timeout: float) -> None:
        time.sleep(min(timeout, 0.1))
