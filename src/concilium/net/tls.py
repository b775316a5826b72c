"""Mutual TLS 1.3 between parties, with certificates pinned by fingerprint.

Each party holds a self-signed certificate; every party trusts exactly the
certificates of the consortium manifest, and after the handshake checks that
the peer's certificate has the fingerprint the manifest gives for the party it
expects. An unknown certificate fails the TLS handshake itself; a known one
in the wrong place is refused right after it, before any protocol byte.

TLS runs over ``ssl.MemoryBIO`` and plain sockets: the reading thread and the
writing thread of a connection share one ``SSLObject`` under a lock held only
while OpenSSL encrypts or decrypts (``SSLSocket`` is not safe to use from two
threads at once), and every ciphertext byte passes through our hands, so the
bytes on the wire are counted exactly.

Connection set-up: of each pair, the lower index dials and the higher one
listens; dialling retries with backoff until the start-up deadline. Both sides
then exchange a HELLO frame (sender index, manifest hash, computation id, a
fresh 32-byte nonce) and refuse a peer that disagrees. The session id is
SHA-256 over the manifest hash, the computation id and every party's nonce.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, cast

import numpy as np

from concilium.errors import BadFrame, ConfigurationError, PeerUnavailable
from concilium.net.frame import FrameKind, FrameLimits, encode_frame
from concilium.net.stream import read_frame

__all__ = [
    "Arrivals",
    "Endpoint",
    "Hello",
    "TlsConnection",
    "TlsIdentity",
    "TlsSettings",
    "establish_connections",
    "listen_socket",
    "read_hello",
    "server_context",
    "session_id",
    "tune_socket",
    "wrap_connection",
]

_CHUNK = 1 << 18
_POLL_SECONDS = 0.1
_STUCK_SECONDS = 1.0
_HELLO_BYTES = 96
_ZERO_SESSION = bytes(32)


@dataclass(frozen=True)
class Endpoint:
    """A party as the network sees it: index, name, MPC address, pinned certificate."""

    index: int
    name: str
    host: str
    port: int
    certificate_pem: str
    fingerprint: str


@dataclass(frozen=True)
class TlsIdentity:
    """This party's certificate and private key files."""

    certificate_path: Path
    key_path: Path


@dataclass(frozen=True)
class TlsSettings:
    """Timeouts and limits of the TLS transport.

    ``receive_timeout``: how long a receive waits for a peer's message;
    ``send_timeout``: how long a send waits for a peer that accepts no data
    (a stalled process whose socket buffers are full). Either way the peer is
    unavailable and the run is aborted."""

    startup_timeout: float = 30.0
    handshake_timeout: float = 10.0
    receive_timeout: float = 60.0
    send_timeout: float = 60.0
    limits: FrameLimits = field(default_factory=FrameLimits)
    max_pending_bytes: int = 4 << 30


@dataclass(frozen=True)
class Hello:
    """What a peer announced after the TLS handshake."""

    index: int
    manifest_hash: bytes
    computation_id: bytes
    nonce: bytes


def session_id(manifest_hash: bytes, computation_id: bytes, nonces: Sequence[bytes]) -> bytes:
    """SHA-256(label || manifest hash || computation id || nonce_0 || ... || nonce_(n-1))."""
    digest = hashlib.sha256(b"concilium/session/v1")
    digest.update(manifest_hash)
    digest.update(computation_id)
    for nonce in nonces:
        digest.update(nonce)
    return digest.digest()


def _fingerprint(der: bytes) -> str:
    return "sha256:" + hashlib.sha256(der).hexdigest()


def _context(server: bool, identity: TlsIdentity, trusted: Sequence[Endpoint]) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.load_cert_chain(str(identity.certificate_path), str(identity.key_path))
    context.verify_mode = ssl.CERT_REQUIRED
    if not server:
        context.check_hostname = False  # peers are pinned by fingerprint, not by name
    else:
        context.num_tickets = 0
    context.load_verify_locations(cadata="".join(e.certificate_pem for e in trusted))
    return context


class TlsConnection:
    """One authenticated TLS connection to a peer, usable by a reader and a writer thread."""

    def __init__(self, sock: socket.socket, tls: ssl.SSLObject, incoming: ssl.MemoryBIO,
                 outgoing: ssl.MemoryBIO) -> None:
        self.sock = sock
        self.tls = tls
        self._incoming = incoming
        self._outgoing = outgoing
        self._ssl_lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._buffer = bytearray(_CHUNK)
        self.wire_bytes_sent = 0
        self.wire_bytes_received = 0
        self.broken = False  # sealed records were not sent: the stream is unusable

    # -- handshake ------------------------------------------------------------
    def handshake(self, deadline: float) -> None:
        while True:
            try:
                with self._ssl_lock:
                    self.tls.do_handshake()
                self._flush()
                return
            except ssl.SSLWantReadError:
                self._flush()
                self.sock.settimeout(max(0.01, deadline - time.monotonic()))
                self._receive_ciphertext()

    def peer_fingerprint(self) -> str:
        der = self.tls.getpeercert(binary_form=True)
        if not der:
            raise BadFrame("the peer presented no certificate")
        return _fingerprint(der)

    # -- writing --------------------------------------------------------------
    def _flush(self) -> None:
        with self._ssl_lock:
            data = self._outgoing.read()
        if data:
            self.sock.sendall(data)
            self.wire_bytes_sent += len(data)

    def send(self, parts: Sequence[bytes | memoryview], timeout: float,
             interrupted: Callable[[], bool] | None = None) -> None:
        """Encrypt and send byte strings in order (thread-safe; one frame at a time).

        A peer that accepts no byte for ``timeout`` seconds raises
        ``TimeoutError``; so does waiting that long for another frame to finish.
        While the peer accepts nothing, ``interrupted()`` is polled: once it is
        true (the run was aborted) and the peer has been stuck for
        ``_STUCK_SECONDS``, the send stops with ``ConnectionAbortedError``. A
        live peer process always drains its socket (its reader thread files
        frames in the mailbox), so only a stalled one is given up on. Records
        sealed but not sent leave the stream unusable: later sends refuse."""
        if not self._send_lock.acquire(timeout=timeout):
            raise TimeoutError(f"another frame to this peer has not finished in {timeout:g} s")
        try:
            if self.broken:
                raise ConnectionAbortedError("an earlier frame to this peer was cut off")
            for part in parts:
                view = memoryview(part).cast("B")
                for start in range(0, len(view), _CHUNK):
                    with self._ssl_lock:
                        self.tls.write(view[start:start + _CHUNK])
                        data = self._outgoing.read()
                    self._send_ciphertext(memoryview(data), timeout, interrupted)
        finally:
            self._send_lock.release()

    def _send_ciphertext(self, data: memoryview, timeout: float,
                         interrupted: Callable[[], bool] | None) -> None:
        sent, last_progress = 0, time.monotonic()
        while sent < len(data):
            try:
                count = self.sock.send(data[sent:], socket.MSG_DONTWAIT)
            except BlockingIOError:
                count = 0
            if count:
                sent += count
                self.wire_bytes_sent += count
                last_progress = time.monotonic()
                continue
            stuck = time.monotonic() - last_progress
            if stuck >= timeout or (stuck >= _STUCK_SECONDS and interrupted is not None
                                    and interrupted()):
                self.broken = True  # TLS already sealed these records: the stream has a gap
                if stuck >= timeout:
                    raise TimeoutError(f"the peer accepted no data for {timeout:g} s")
                raise ConnectionAbortedError("the run was aborted while the peer accepted "
                                             "no data")
            select.select([], [self.sock], [], _POLL_SECONDS)

    # -- reading --------------------------------------------------------------
    def _receive_ciphertext(self) -> None:
        count = self.sock.recv_into(self._buffer)
        if count == 0:
            raise EOFError("the peer closed the connection")
        self.wire_bytes_received += count
        with self._ssl_lock:
            self._incoming.write(memoryview(self._buffer)[:count])

    def read_exact(self, target: memoryview) -> None:
        """Fill ``target`` with plaintext, blocking; EOFError when the peer closes."""
        filled, size = 0, len(target)
        while filled < size:
            try:
                with self._ssl_lock:
                    count = cast(int, self.tls.read(size - filled, target[filled:]))
            except ssl.SSLWantReadError:
                self._receive_ciphertext()
                continue
            except ssl.SSLZeroReturnError:
                raise EOFError("the peer closed the TLS session") from None
            if count == 0:
                raise EOFError("the peer closed the TLS session")
            filled += count
        if self._outgoing.pending:
            with self._send_lock:
                self._flush()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


def _wrap(sock: socket.socket, context: ssl.SSLContext, server: bool) -> TlsConnection:
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_side=server)
    return TlsConnection(sock, tls, incoming, outgoing)


def wrap_connection(sock: socket.socket, context: ssl.SSLContext, server: bool
                    ) -> TlsConnection:
    """A TLS connection over ``sock`` (not yet handshaken)."""
    return _wrap(sock, context, server)


def server_context(identity: TlsIdentity, trusted: Sequence[Endpoint]) -> ssl.SSLContext:
    """The server side's TLS context: this party's certificate, the manifest's pinned."""
    return _context(True, identity, trusted)


def _hello_payload(manifest_hash: bytes, computation_id: bytes, nonce: bytes) -> np.ndarray:
    return np.frombuffer(manifest_hash + computation_id + nonce, dtype=np.uint8)


def _exchange_hello(connection: TlsConnection, me: int, expected: int, manifest_hash: bytes,
                    computation_id: bytes, nonce: bytes, limits: FrameLimits,
                    timeout: float) -> Hello:
    send_hello(connection, me, manifest_hash, computation_id, nonce, timeout)
    hello = read_hello(connection, limits)
    check_hello(hello, expected, manifest_hash, computation_id)
    return hello


def send_hello(connection: TlsConnection, me: int, manifest_hash: bytes,
               computation_id: bytes, nonce: bytes, timeout: float) -> None:
    """Announce this party, the manifest, the computation and a fresh nonce."""
    header, payload = encode_frame(FrameKind.HELLO, _ZERO_SESSION, me, 0, 0,
                                   _hello_payload(manifest_hash, computation_id, nonce))
    connection.send([header, payload], timeout)


def read_hello(connection: TlsConnection, limits: FrameLimits) -> Hello:
    """The peer's HELLO frame (BadFrame if its first frame is anything else)."""
    frame = read_frame(connection.read_exact, limits)
    data = frame.array.tobytes()
    if frame.kind != FrameKind.HELLO or frame.array.dtype != np.uint8 or len(data) != (
            _HELLO_BYTES):
        raise BadFrame("the peer's first frame is not a valid HELLO")
    return Hello(frame.sender, data[:32], data[32:64], data[64:])


def check_hello(hello: Hello, expected: int, manifest_hash: bytes,
                computation_id: bytes) -> None:
    """Refuse a HELLO from another party than the certificate's, for another
    manifest or for another computation."""
    if hello.index != expected:
        raise BadFrame(f"the peer with party {expected}'s certificate claims to be party "
                       f"{hello.index}")
    if hello.manifest_hash != manifest_hash:
        raise ConfigurationError(f"party {expected} has a different consortium manifest "
                                 f"({hello.manifest_hash.hex()[:12]} vs "
                                 f"{manifest_hash.hex()[:12]}); distribute one manifest to all")
    if hello.computation_id != computation_id:
        raise ConfigurationError(f"party {expected} is running another computation "
                                 f"({hello.computation_id.hex()[:12]})")


def _dial(endpoint: Endpoint, context: ssl.SSLContext, deadline: float) -> TlsConnection:
    delay = 0.05
    while True:
        try:
            sock = socket.create_connection((endpoint.host, endpoint.port),
                                            timeout=max(0.1, deadline - time.monotonic()))
            break
        except OSError as error:
            if time.monotonic() + delay >= deadline:
                raise PeerUnavailable(
                    f"could not reach party {endpoint.index} ({endpoint.name}) at "
                    f"{endpoint.host}:{endpoint.port}: {error}; is its node running?"
                ) from None
            time.sleep(delay)
            delay = min(delay * 2, 1.0)
    _tune(sock)
    return _wrap(sock, context, server=False)


def establish_connections(
    me: int,
    endpoints: Sequence[Endpoint],
    identity: TlsIdentity,
    manifest_hash: bytes,
    computation_id: bytes,
    settings: TlsSettings,
    listener: socket.socket | None = None,
    on_refused: Callable[[str], None] | None = None,
    arrivals: Arrivals | None = None,
) -> tuple[dict[int, TlsConnection], bytes]:
    """Connect to every other endpoint; return the connections and the session id.

    ``listener``: an already bound, listening socket for this party (one is made
    from ``endpoints[me]`` otherwise); ``arrivals``: instead of listening, take the
    inbound connections a standing listener routed to this computation
    (:mod:`concilium.net.listener`) and answer their HELLOs. Refused connection
    attempts (unknown certificates, garbage, wrong HELLO) are reported to
    ``on_refused`` and do not stop the set-up; a peer that never shows up raises
    PeerUnavailable.
    """
    deadline = time.monotonic() + settings.startup_timeout
    nonce = os.urandom(32)
    peers = [e for e in endpoints if e.index != me]
    by_fingerprint = {e.fingerprint: e for e in peers}
    server = _context(True, identity, endpoints)
    client = _context(False, identity, endpoints)
    connections: dict[int, TlsConnection] = {}
    hellos: dict[int, Hello] = {}
    lock = threading.Lock()
    errors: list[BaseException] = []
    expected_inbound = {e.index for e in peers if e.index < me}
    own = next(e for e in endpoints if e.index == me)
    sock = None if arrivals is not None else (listener or _listen(own))
    done = threading.Event()

    def register(index: int, connection: TlsConnection, hello: Hello) -> None:
        with lock:
            if index in connections:
                connection.close()
                raise BadFrame(f"party {index} connected twice")
            connections[index] = connection
            hellos[index] = hello

    def serve_one(raw: socket.socket) -> None:
        connection = _wrap(raw, server, server=True)
        try:
            connection.handshake(time.monotonic() + settings.handshake_timeout)
            peer = by_fingerprint.get(connection.peer_fingerprint())
            if peer is None or peer.index not in expected_inbound:
                raise BadFrame("a certificate that may not dial this party")
            raw.settimeout(settings.handshake_timeout)
            hello = _exchange_hello(connection, me, peer.index, manifest_hash, computation_id,
                                    nonce, settings.limits, settings.handshake_timeout)
            raw.settimeout(None)
            register(peer.index, connection, hello)
        except (OSError, EOFError, ssl.SSLError, BadFrame, ConfigurationError) as error:
            connection.close()
            if on_refused is not None:
                on_refused(f"{type(error).__name__}: {error}")
            if isinstance(error, ConfigurationError):
                errors.append(error)

    def take_arrivals() -> None:
        """Answer the routed connections' HELLOs (a standing listener read them)."""
        assert arrivals is not None
        while not done.is_set() and time.monotonic() < deadline:
            with lock:
                if expected_inbound <= set(connections):
                    return
            item = arrivals.get(0.1)
            if item is None:
                continue
            connection, hello = item
            try:
                if hello.index not in expected_inbound:
                    raise BadFrame(f"party {hello.index} may not dial party {me}")
                check_hello(hello, hello.index, manifest_hash, computation_id)
                send_hello(connection, me, manifest_hash, computation_id, nonce,
                           settings.handshake_timeout)
                register(hello.index, connection, hello)
            except (OSError, ssl.SSLError, BadFrame, ConfigurationError) as error:
                connection.close()
                if on_refused is not None:
                    on_refused(f"{type(error).__name__}: {error}")
                if isinstance(error, ConfigurationError):
                    errors.append(error)

    def accept_loop() -> None:
        assert sock is not None
        sock.settimeout(0.1)
        while not done.is_set() and time.monotonic() < deadline:
            with lock:
                if expected_inbound <= set(connections):
                    return
            try:
                raw, _ = sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            _tune(raw)
            threading.Thread(target=serve_one, args=(raw,), daemon=True).start()

    acceptor = threading.Thread(target=accept_loop if arrivals is None else take_arrivals,
                                name=f"accept-{me}", daemon=True)
    acceptor.start()
    try:
        for peer in (e for e in peers if e.index > me):
            connection = _dial(peer, client, deadline)
            try:
                connection.handshake(time.monotonic() + settings.handshake_timeout)
                if connection.peer_fingerprint() != peer.fingerprint:
                    raise BadFrame(f"party {peer.index} ({peer.name}) presented a certificate "
                                   "that is not the one pinned in the manifest")
                wait = max(settings.handshake_timeout, deadline - time.monotonic())
                connection.sock.settimeout(wait)  # its job may start a little later
                hello = _exchange_hello(connection, me, peer.index, manifest_hash,
                                        computation_id, nonce, settings.limits, wait)
                connection.sock.settimeout(None)
            except (OSError, EOFError, ssl.SSLError) as error:
                connection.close()
                raise PeerUnavailable(
                    f"the TLS connection to party {peer.index} ({peer.name}) failed: {error}. "
                    "Is this node's certificate in that party's manifest?"
                ) from None
            except BaseException:
                connection.close()
                raise
            register(peer.index, connection, hello)
        while True:
            with lock:
                if errors:
                    raise errors[0]
                if expected_inbound <= set(connections):
                    break
            if time.monotonic() >= deadline:
                missing = sorted(expected_inbound - set(connections))
                raise PeerUnavailable(
                    f"parties {missing} did not connect within {settings.startup_timeout:g} s; "
                    "check that their nodes run the same computation"
                )
            time.sleep(0.01)
    except BaseException:
        with lock:
            for connection in connections.values():
                connection.close()
        raise
    finally:
        done.set()
        acceptor.join(timeout=2)
        if listener is None and sock is not None:
            sock.close()
    nonces = [nonce if index == me else hellos[index].nonce
              for index in sorted([me, *connections])]
    return connections, session_id(manifest_hash, computation_id, nonces)


class Arrivals(Protocol):
    """Inbound connections routed to one computation by a standing listener
    (:class:`concilium.net.listener.Arrivals`), each with its peer's HELLO read."""

    def get(self, timeout: float) -> tuple[TlsConnection, Hello] | None: ...


def tune_socket(sock: socket.socket) -> None:
    """No Nagle delay; large buffers."""
    _tune(sock)


def listen_socket(own: Endpoint) -> socket.socket:
    """A socket bound to ``own``'s address and listening."""
    return _listen(own)


def _tune(sock: socket.socket) -> None:
    """No Nagle delay (rounds are latency-bound); large buffers for bulk frames."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for option in (socket.SO_SNDBUF, socket.SO_RCVBUF):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, option, 4 << 20)


def _listen(own: Endpoint) -> socket.socket:
    family = socket.AF_INET6 if ":" in own.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((own.host, own.port))
    except OSError as error:
        sock.close()
        raise ConfigurationError(f"party {own.index} ({own.name}) cannot listen on "
                                 f"{own.host}:{own.port}: {error}") from None
    sock.listen(64)
    return sock
