"""A loopback TCP proxy that injects network faults into the MPC links of the
chaos harness (``bench/chaos.py``).

Each node's MPC address in the manifest is a proxy that forwards to the port the
node really listens on (``node start --mpc-bind``). TLS runs end to end through
it: the proxy sees only ciphertext, so what it does is what a bad network does.
Faults, set at any moment with :meth:`FaultProxy.set_fault`, act on the bytes
forwarded from then on, in both directions of every connection:

* ``delay``: each chunk waits ``seconds`` before it is forwarded (the run must
  still complete);
* ``blackhole``: bytes are read and dropped, connections stay open (a silent
  peer: the receive timeout must abort the run);
* ``truncate``: the next chunk is cut in half and the connections closed;
* ``corrupt``: one byte of the next chunk is flipped (TLS must refuse the record).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time

__all__ = ["FAULTS", "FaultProxy"]

FAULTS = ("delay", "blackhole", "truncate", "corrupt")
_CHUNK = 1 << 16


class FaultProxy:
    """Forwards ``listen`` (host, port) to ``target``; starts at construction."""

    def __init__(self, listen: tuple[str, int], target: tuple[str, int]) -> None:
        self.target = target
        self._fault: str | None = None
        self._seconds = 0.0
        self._lock = threading.Lock()
        self._connections: list[socket.socket] = []
        self._closed = threading.Event()
        self._server = socket.create_server(listen, reuse_port=False)
        self._server.settimeout(0.2)
        threading.Thread(target=self._accept, daemon=True, name="fault-proxy").start()

    @property
    def active(self) -> int:
        """How many connections are open through the proxy now."""
        with self._lock:
            return sum(1 for c in self._connections if c.fileno() != -1) // 2

    def set_fault(self, fault: str | None, seconds: float = 0.0) -> None:
        """Apply ``fault`` (one of FAULTS, or None for none) from now on."""
        if fault is not None and fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; one of {FAULTS}")
        with self._lock:
            self._fault, self._seconds = fault, seconds

    def close(self) -> None:
        self._closed.set()
        self._server.close()
        with self._lock:
            connections, self._connections = self._connections, []
        for connection in connections:
            _close(connection)

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                inbound, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                outbound = socket.create_connection(self.target, timeout=5)
            except OSError:
                _close(inbound)
                continue
            inbound.settimeout(None)
            outbound.settimeout(None)
            with self._lock:
                self._connections = [c for c in self._connections if c.fileno() != -1]
                self._connections += [inbound, outbound]
            for source, sink in ((inbound, outbound), (outbound, inbound)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True,
                                 name="fault-proxy-pump").start()

    def _take_fault(self) -> tuple[str | None, float]:
        with self._lock:
            fault, seconds = self._fault, self._seconds
            if fault in ("truncate", "corrupt"):  # one-shot faults
                self._fault = None
            return fault, seconds

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while True:
                chunk = source.recv(_CHUNK)
                if not chunk:
                    break
                fault, seconds = self._take_fault()
                if fault == "delay":
                    time.sleep(seconds)
                elif fault == "blackhole":
                    continue
                elif fault == "truncate":
                    sink.sendall(chunk[: len(chunk) // 2])
                    break
                elif fault == "corrupt":
                    position = len(chunk) // 2
                    chunk = chunk[:position] + bytes([chunk[position] ^ 0x5A]) + \
                        chunk[position + 1:]
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            _close(source)
            _close(sink)


def _close(connection: socket.socket) -> None:
    with contextlib.suppress(OSError):
        connection.shutdown(socket.SHUT_RDWR)
    connection.close()
