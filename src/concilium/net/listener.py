"""A node's standing MPC listener: one mutual-TLS port for the node's whole life,
shared by every computation it runs.

Each accepted connection gets its own short-lived handshake thread (at most
``max_handshakes`` at a time; beyond that a connection is closed at once): the
TLS handshake with the manifest's pinned certificates, then the peer's HELLO
frame (party index, manifest hash, computation id, nonce), each within the
handshake timeout. The connection is then routed by its computation id:

* to the computation's :class:`Arrivals` queue, when a job of this node is
  setting up its connections for it (:meth:`StandingListener.expect`);
* held for up to the start-up timeout, when the computation is known to the
  node but its job has not started yet (``known``: peers' jobs start when they
  see the last approval, not all at the same instant);
* refused (closed, and reported to ``on_refused``) otherwise: an unknown or
  finished computation, a certificate that is not a manifest party's, a
  malformed or late HELLO, a full queue.

``on_incident`` is also told of the refusals a node records as incidents (a
:class:`RefusedConnection`: a certificate that is not a party's, a malformed
HELLO or one claiming another party, a party's connection for a computation
this node does not run or that did not start in time, too many handshakes);
connections that merely close or time out are only reported to ``on_refused``.

The job answers with its own HELLO (:func:`concilium.net.tls.establish_connections`),
so every computation has its own nonces, session id, keys and transcripts. A
slow or hostile peer holds one handshake thread for at most the handshake
timeout and cannot block the listener or other computations.

Reveals: nothing (the handshake is the one of :mod:`concilium.net.tls`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import queue
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from concilium.errors import BadFrame
from concilium.net.tls import (
    Endpoint,
    Hello,
    TlsConnection,
    TlsIdentity,
    TlsSettings,
    listen_socket,
    read_hello,
    server_context,
    tune_socket,
    wrap_connection,
)

__all__ = ["Arrivals", "RefusedConnection", "StandingListener"]

_LOG = logging.getLogger("concilium.net.listener")
_MAX_HELD = 64


@dataclass(frozen=True)
class RefusedConnection:
    """A refused MPC connection, for the node's incidents: ``kind`` is
    ``refused_certificate``, ``refused_frame`` or ``refused_connection``; ``party`` the
    manifest index its certificate authenticated (None before that), ``computation``
    the id its HELLO named (None before that)."""

    kind: str
    reason: str
    party: int | None = None
    computation: bytes | None = None


def _certificate_problem(error: ssl.SSLError) -> bool:
    """A TLS handshake that failed on the peer's certificate (not a party's, or none)."""
    return "CERTIFICATE" in f"{error.reason or ''} {error}".upper()


class Arrivals:
    """The routed connections of one computation, for its job to take."""

    def __init__(self, capacity: int) -> None:
        self._queue: queue.Queue[tuple[TlsConnection, Hello]] = queue.Queue(capacity)

    def put(self, connection: TlsConnection, hello: Hello) -> bool:
        try:
            self._queue.put_nowait((connection, hello))
        except queue.Full:
            return False
        return True

    def get(self, timeout: float) -> tuple[TlsConnection, Hello] | None:
        """The next connection with its peer's HELLO, or None after ``timeout``."""
        try:
            return self._queue.get(timeout=max(timeout, 0.0))
        except queue.Empty:
            return None

    def drain(self) -> None:
        """Close what no one took."""
        while True:
            try:
                connection, _ = self._queue.get_nowait()
            except queue.Empty:
                return
            connection.close()


class StandingListener:
    """Accepts MPC connections for the node's life and routes them by computation."""

    def __init__(self, own: Endpoint, endpoints: Sequence[Endpoint], identity: TlsIdentity,
                 settings: TlsSettings, *, known: Callable[[bytes], bool] | None = None,
                 on_refused: Callable[[str], None] | None = None,
                 on_incident: Callable[[RefusedConnection], None] | None = None,
                 max_handshakes: int = 32) -> None:
        self.own = own
        self._peers = {e.fingerprint: e for e in endpoints if e.index != own.index}
        self._identity = identity
        self._server = server_context(identity, endpoints)
        self._settings = settings
        self._known = known or (lambda _: False)
        self._on_refused = on_refused
        self._on_incident = on_incident
        self._slots = threading.BoundedSemaphore(max_handshakes)
        self._lock = threading.Lock()
        self._expected: dict[bytes, Arrivals] = {}
        self._held: dict[bytes, list[tuple[float, TlsConnection, Hello]]] = {}
        self._stopping = threading.Event()
        self._socket = listen_socket(own)
        self._socket.settimeout(0.2)
        self.refused = 0
        self._thread = threading.Thread(target=self._accept_loop, daemon=True,
                                        name=f"mpc-listener-{own.name}")

    @property
    def port(self) -> int:
        return int(self._socket.getsockname()[1])

    def start(self) -> StandingListener:
        self._thread.start()
        return self

    def update_peers(self, endpoints: Sequence[Endpoint]) -> None:
        """Trust exactly these parties from now on (an amended manifest): connections
        already accepted go on; a party no longer listed, or presenting a certificate
        the new list does not pin, is refused at its next handshake."""
        with self._lock:
            mine = next((e for e in endpoints if e.name == self.own.name), None)
            if mine is not None:  # its position may move when a party before it leaves
                self.own = dataclasses.replace(self.own, index=mine.index)
            self._peers = {e.fingerprint: e for e in endpoints if e.name != self.own.name}
            self._server = server_context(self._identity, endpoints)

    def close(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=2)
        self._socket.close()
        with self._lock:
            held, self._held = self._held, {}
            expected, self._expected = self._expected, {}
        for entries in held.values():
            for _, connection, _ in entries:
                connection.close()
        for arrivals in expected.values():
            arrivals.drain()

    @contextlib.contextmanager
    def expect(self, computation_id: bytes, peers: int) -> Iterator[Arrivals]:
        """Route connections for ``computation_id`` to the returned queue while the
        block runs (the job's connection set-up); connections that arrived a little
        early are handed over at once."""
        arrivals = Arrivals(max(peers, 1) * 2)
        with self._lock:
            if computation_id in self._expected:
                raise BadFrame("this computation is already setting up its connections")
            self._expected[computation_id] = arrivals
            early = self._held.pop(computation_id, [])
        for _, connection, hello in early:
            if not arrivals.put(connection, hello):
                self._refuse(connection, "too many connections for one computation",
                             RefusedConnection("refused_connection", "too many connections "
                                               "for one computation", hello.index,
                                               computation_id))
        try:
            yield arrivals
        finally:
            with self._lock:
                self._expected.pop(computation_id, None)
            arrivals.drain()

    # -- the listener's own threads -------------------------------------------------
    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            self._expire_held()
            try:
                raw, _ = self._socket.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if not self._slots.acquire(blocking=False):
                raw.close()
                why = "too many handshakes at once: a connection was closed"
                self._report(why, RefusedConnection("refused_connection", why))
                continue
            tune_socket(raw)
            threading.Thread(target=self._handshake, args=(raw,), daemon=True,
                             name=f"mpc-handshake-{self.own.name}").start()

    def _handshake(self, raw: socket.socket) -> None:
        connection = wrap_connection(raw, self._server, server=True)
        peer: Endpoint | None = None
        try:
            timeout = self._settings.handshake_timeout
            connection.handshake(time.monotonic() + timeout)
            peer = self._peers.get(connection.peer_fingerprint())
            if peer is None:
                raise BadFrame("a certificate that is not a party's of the manifest")
            raw.settimeout(timeout)
            hello = read_hello(connection, self._settings.limits)
            raw.settimeout(None)
            if hello.index != peer.index:
                raise BadFrame(f"the peer with party {peer.index}'s certificate claims to "
                               f"be party {hello.index}")
            self._route(connection, hello)
        except (OSError, EOFError, ssl.SSLError, BadFrame) as error:
            why = f"{type(error).__name__}: {error}"
            incident = None
            if isinstance(error, BadFrame):
                incident = RefusedConnection(
                    "refused_certificate" if peer is None else "refused_frame", why,
                    None if peer is None else peer.index)
            elif isinstance(error, ssl.SSLError) and _certificate_problem(error):
                incident = RefusedConnection("refused_certificate", why)
            self._refuse(connection, why, incident)
        finally:
            self._slots.release()

    def _route(self, connection: TlsConnection, hello: Hello) -> None:
        computation = hello.computation_id
        with self._lock:
            arrivals = self._expected.get(computation)
            if arrivals is None and self._known(computation) and sum(
                    len(v) for v in self._held.values()) < _MAX_HELD:
                self._held.setdefault(computation, []).append(
                    (time.monotonic(), connection, hello))
                return
        if arrivals is None:
            why = (f"party {hello.index} asked for computation {computation.hex()[:12]}, "
                   "which this node does not run")
            self._refuse(connection, why, RefusedConnection("refused_connection", why,
                                                            hello.index, computation))
        elif not arrivals.put(connection, hello):
            why = "too many connections for one computation"
            self._refuse(connection, why, RefusedConnection("refused_connection", why,
                                                            hello.index, computation))

    def _expire_held(self) -> None:
        limit = time.monotonic() - self._settings.startup_timeout
        with self._lock:
            stale = [(c, h) for entries in self._held.values() for t, c, h in entries
                     if t < limit]
            self._held = {k: kept for k, v in self._held.items()
                          if (kept := [e for e in v if e[0] >= limit])}
        for connection, hello in stale:
            why = f"computation {hello.computation_id.hex()[:12]} did not start in time"
            self._refuse(connection, why, RefusedConnection(
                "refused_connection", f"party {hello.index}'s connection for {why}",
                hello.index, hello.computation_id))

    def _refuse(self, connection: TlsConnection, why: str,
                incident: RefusedConnection | None = None) -> None:
        connection.close()
        self._report(why, incident)

    def _report(self, why: str, incident: RefusedConnection | None = None) -> None:
        self.refused += 1
        _LOG.warning("refused an MPC connection: %s", why)
        if self._on_refused is not None:
            self._on_refused(why)
        if incident is not None and self._on_incident is not None:
            try:
                self._on_incident(incident)
            except Exception:  # recording it must not stop the listener
                _LOG.exception("could not record a refused MPC connection")
