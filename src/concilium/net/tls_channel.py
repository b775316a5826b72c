"""``TlsChannel``: the ``Channel`` of one party process over mutual TLS.

One reader thread per peer decrypts frames as they arrive and files them in
the mailbox by (sender, tag), so sending never waits for the receiver's
protocol thread and two parties sending at once cannot deadlock. Every frame
must carry this session's id and the sender the connection was authenticated
as; anything else aborts the run.

The frames a reader refused are kept in ``refused_frames`` (peer, reason), so the
node can record them as incidents of the run it aborted.

Liveness: a receive waits at most ``receive_timeout`` seconds; a peer whose
connection closes makes waits on it fail at once with ``PeerUnavailable``; an
ABORT frame from any peer aborts this party too. Nothing further is sent
after an abort, so nothing more is revealed.

Start barrier: after every connection is up, each party sends READY to every
peer and waits for theirs, so a party that gave up its set-up (its start-up
timeout ran out while another peer was still missing) closes before anyone
sends data. A failure there is a PeerUnavailable of the set-up: nothing was
shared, and a node simply tries again later.

Transcript digests (:mod:`concilium.net.transcript`): each party hashes
(SHA-256) every data frame it sends to and receives from each peer, in a
background thread. :meth:`TlsChannel.finish` exchanges them; the digests of
both ends of a link must agree, or the run aborts. They are returned for the
audit log.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt

from concilium.errors import BadFrame, ConfigurationError, PeerUnavailable, ProtocolAbort
from concilium.net.channel import SUPPORTED_DTYPES, Channel, TrafficCounter, TrafficSnapshot
from concilium.net.frame import FrameKind, encode_frame
from concilium.net.mailbox import Mailbox, Message
from concilium.net.stream import read_frame
from concilium.net.tls import (
    Arrivals,
    Endpoint,
    TlsConnection,
    TlsIdentity,
    TlsSettings,
    establish_connections,
)
from concilium.net.transcript import Transcript, TranscriptDigest

__all__ = ["DIGEST_TAG", "TlsChannel", "TranscriptDigest"]

#: Tag of the transcript-digest frames, above every plan and outside-party tag.
DIGEST_TAG = 1 << 63
#: How often the start barrier looks at closed connections.
_POLL_SECONDS = 0.05
#: How long an ABORT frame may wait for a peer that accepts no data.
_ABORT_SECONDS = 2.0


class TlsChannel(Channel):
    """One party's authenticated connections to all other parties of a computation."""

    def __init__(self, me: int, parties: int, connections: dict[int, TlsConnection],
                 session: bytes, settings: TlsSettings,
                 transcript: Transcript | None = None) -> None:
        """``transcript``: where frames are hashed (SHA-256 per peer unless given;
        ``bench/transport.py`` passes a null one to measure what hashing costs)."""
        self._me = me
        self._parties = parties
        self._connections = connections
        self.session = session
        self._settings = settings
        self._mailbox = Mailbox(max_pending_bytes=settings.max_pending_bytes)
        self._counter = TrafficCounter()
        self.transcript = transcript or Transcript(sorted(connections))
        self._closing = threading.Event()
        self._ready = {peer: threading.Event() for peer in connections}
        #: (peer, reason) of every frame a reader refused (the run was aborted)
        self.refused_frames: list[tuple[int, str]] = []
        self._readers = [
            threading.Thread(target=self._read_loop, args=(peer, connection),
                             name=f"tls-reader-{me}-{peer}", daemon=True)
            for peer, connection in connections.items()
        ]
        for reader in self._readers:
            reader.start()

    @classmethod
    def connect(cls, me: int, endpoints: Sequence[Endpoint], identity: TlsIdentity,
                manifest_hash: bytes, computation_id: bytes,
                settings: TlsSettings | None = None,
                listener: socket.socket | None = None,
                on_refused: Callable[[str], None] | None = None,
                arrivals: Arrivals | None = None) -> TlsChannel:
        """Connect to every endpoint over mutual TLS and agree on the session id.

        Refused connection attempts (unknown certificates, garbage) are passed to
        ``on_refused`` and do not disturb the set-up."""
        options = settings or TlsSettings()
        connections, session = establish_connections(
            me, endpoints, identity, manifest_hash, computation_id, options, listener,
            on_refused, arrivals)
        channel = cls(me, max(e.index for e in endpoints) + 1, connections, session, options)
        try:
            channel._start_barrier()
        except BaseException:
            channel.close()
            raise
        return channel

    def _start_barrier(self) -> None:
        """READY to every peer, then wait for every peer's (see the module docstring).

        A peer that is still setting up either finishes within its own start-up
        timeout (and sends READY) or gives up and closes (and the wait fails at once)."""
        for peer, connection in self._connections.items():
            header, payload = encode_frame(FrameKind.READY, self.session, self._me, 0,
                                           0, np.zeros(1, dtype=np.uint8))
            try:
                connection.send([header, payload], self._settings.send_timeout)
            except OSError as error:
                raise PeerUnavailable(f"party {peer} did not start the run: it closed its "
                                      f"connection during the set-up ({error})") from None
        deadline = time.monotonic() + self._settings.startup_timeout + (
            self._settings.handshake_timeout)
        for peer in sorted(self._connections):
            while not self._ready[peer].wait(_POLL_SECONDS):
                reason = self._mailbox.aborted or self._mailbox.closed_reason(peer)
                if reason is None and time.monotonic() > deadline:
                    reason = "it did not confirm the start in time"
                if reason is not None:
                    raise PeerUnavailable(f"party {peer} did not start the run: {reason}")

    # -- Channel ------------------------------------------------------------------
    @property
    def party(self) -> int:
        return self._me

    @property
    def parties(self) -> int:
        return self._parties

    def _connection(self, peer: int) -> TlsConnection:
        connection = self._connections.get(peer)
        if connection is None:
            raise ConfigurationError(f"party {self._me} has no connection to party {peer}")
        return connection

    def send(self, peer: int, tag: int, array: npt.NDArray[np.generic]) -> None:
        connection = self._connection(peer)
        if array.dtype not in SUPPORTED_DTYPES:
            raise BadFrame(f"cannot send arrays of dtype {array.dtype}")
        if self._mailbox.aborted is not None:
            raise ProtocolAbort(self._mailbox.aborted)
        stamp = self._counter.on_send(peer, array.nbytes)
        array.flags.writeable = False  # hashed later: must not change after sending
        header, payload = encode_frame(FrameKind.DATA, self.session, self._me, tag, stamp, array)
        self.transcript.sent(peer, header, payload)
        try:
            connection.send([header, payload], self._settings.send_timeout, self._aborted)
        except TimeoutError:
            raise PeerUnavailable(
                f"party {peer} accepted no data for {self._settings.send_timeout:g} s; it may "
                "have stalled. The run is aborted and nothing further is revealed") from None
        except OSError as error:
            # the peer may have aborted and closed: report its reason if it arrives
            deadline = time.monotonic() + 0.5
            while self._mailbox.aborted is None and time.monotonic() < deadline:
                time.sleep(0.01)
            if self._mailbox.aborted is not None:
                raise ProtocolAbort(self._mailbox.aborted) from None
            raise PeerUnavailable(f"lost the connection to party {peer} while sending: "
                                  f"{error}") from None

    def _aborted(self) -> bool:
        return self._mailbox.aborted is not None

    def receive(self, peer: int, tag: int) -> npt.NDArray[np.generic]:
        self._connection(peer)
        message = self._mailbox.take(peer, tag, self._settings.receive_timeout)
        self._counter.on_receive(message.array.nbytes, message.stamp)
        return message.array

    def stats(self) -> TrafficSnapshot:
        return self._counter.snapshot()

    def wire_bytes_sent(self) -> int:
        """Ciphertext bytes written to the sockets (TLS records and handshakes included)."""
        return sum(c.wire_bytes_sent for c in self._connections.values())

    def abort(self, reason: str) -> None:
        """Abort on every party: stop locally, then tell each peer (best effort).

        Stopping first lets a send stuck on a stalled peer give up (see
        :meth:`TlsConnection.send`), so the ABORT frames can go out; each waits
        at most ``_ABORT_SECONDS`` for a peer that accepts nothing."""
        first = self._mailbox.aborted is None
        self._mailbox.abort(reason)
        if first:
            text = np.frombuffer(f"party {self._me}: {reason}"[:1000].encode(), dtype=np.uint8)
            header, payload = encode_frame(FrameKind.ABORT, self.session, self._me, 0, 0, text)
            for connection in self._connections.values():
                with contextlib.suppress(OSError):
                    connection.send([header, payload], _ABORT_SECONDS)

    # -- reading --------------------------------------------------------------------
    def _read_loop(self, peer: int, connection: TlsConnection) -> None:
        limits = self._settings.limits
        try:
            while True:
                frame = read_frame(connection.read_exact, limits)
                if frame.session != self.session:
                    raise BadFrame(f"party {peer} sent a frame of another session")
                if frame.sender != peer:
                    raise BadFrame(f"party {peer} sent a frame claiming to be from party "
                                   f"{frame.sender}")
                if frame.kind == FrameKind.DATA:
                    frame.array.flags.writeable = False
                    self.transcript.received(peer, frame.header,
                                             frame.array.reshape(-1).view(np.uint8).data)
                    self._mailbox.deliver(Message(peer, frame.tag, frame.stamp, frame.array))
                elif frame.kind == FrameKind.DIGEST:
                    self._mailbox.deliver(Message(peer, DIGEST_TAG, 0, frame.array))
                elif frame.kind == FrameKind.READY:
                    self._ready[peer].set()
                elif frame.kind == FrameKind.ABORT:
                    text = frame.array.tobytes().decode("utf-8", "replace")
                    self._mailbox.abort(f"aborted by {text}")
                    return
                else:
                    raise BadFrame(f"party {peer} sent an unexpected {frame.kind.name} frame")
        except (EOFError, OSError) as error:
            if not self._closing.is_set():
                self._mailbox.close_peer(peer, f"party {peer} closed its connection ({error}); "
                                         "the run is aborted and nothing further is revealed")
        except BadFrame as error:
            if not self._closing.is_set():
                self.refused_frames.append((peer, str(error)))
                self.abort(f"refused a frame from party {peer}: {error}")
                connection.close()

    # -- end of run -----------------------------------------------------------------
    def finish(self) -> list[TranscriptDigest]:
        """Compare transcript digests with every peer; abort on any difference."""
        mine = {peer: self.transcript.digests(peer) for peer in self._connections}
        for peer, connection in self._connections.items():
            sent, received = mine[peer]
            header, payload = encode_frame(FrameKind.DIGEST, self.session, self._me, DIGEST_TAG,
                                           0, np.frombuffer(sent + received, dtype=np.uint8))
            connection.send([header, payload], self._settings.send_timeout)
        digests = []
        for peer in sorted(self._connections):
            theirs = self._mailbox.take(peer, DIGEST_TAG, self._settings.receive_timeout)
            data = theirs.array.tobytes()
            sent, received = mine[peer]
            if len(data) != 64 or data[:32] != received or data[32:] != sent:
                self.abort(f"transcript digests with party {peer} differ")
                raise ProtocolAbort(
                    f"the messages party {self._me} exchanged with party {peer} differ between "
                    "the two ends; the result is discarded"
                )
            digests.append(TranscriptDigest(peer, sent.hex(), received.hex()))
        return digests

    def close(self) -> None:
        """Close every connection and stop the reader threads (ports are released)."""
        self._closing.set()
        self.transcript.close()
        for connection in self._connections.values():
            connection.close()
        for reader in self._readers:
            reader.join(timeout=5)
