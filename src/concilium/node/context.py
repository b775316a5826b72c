"""The node's context: what every part of a node works with (its identity and
key, its stores, users, audit log, manifest, transport settings, the standing
MPC listener and the outbox), and the per-address counter of failed token
attempts. The HTTP routes, the control plane and the jobs all take it, so each
is testable without HTTP."""

from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ed25519

from concilium.errors import TooManyAttempts
from concilium.governance.audit import AuditLog
from concilium.governance.budget import Ledger
from concilium.governance.consortium import Manifest
from concilium.governance.identity import NodeIdentity
from concilium.governance.users import UserStore
from concilium.net.tls import TlsSettings
from concilium.node.store import NodeStore

__all__ = ["FailedAttempts", "NodeContext"]

_LOG = logging.getLogger("concilium.node")


class FailedAttempts:
    """Failed token attempts per client address: after ``limit`` within ``window``
    seconds, that address is refused (429) until the window has passed, whatever
    token it sends; every failure and every lock-out is logged."""

    def __init__(self, limit: int = 10, window: float = 60.0) -> None:
        self.limit, self.window = limit, window
        self._failures: dict[str, collections.deque[float]] = {}
        self._lock = threading.Lock()

    def check(self, address: str) -> None:
        with self._lock:
            recent = self._recent(address)
            if len(recent) >= self.limit:
                wait = self.window - (time.monotonic() - recent[0])
                raise TooManyAttempts(f"too many failed token attempts from {address}; try "
                                      f"again in {max(wait, 1):.0f} s")

    def failed(self, address: str) -> None:
        with self._lock:
            recent = self._recent(address)
            recent.append(time.monotonic())
            count = len(recent)
        _LOG.warning("a failed token attempt from %s (%d in %g s)", address, count,
                     self.window)
        if count == self.limit:
            _LOG.warning("locked out %s for %g s after %d failed token attempts", address,
                         self.window, count)

    def _recent(self, address: str) -> collections.deque[float]:
        recent = self._failures.setdefault(address, collections.deque())
        while recent and time.monotonic() - recent[0] > self.window:
            recent.popleft()
        if len(self._failures) > 10_000:  # forget quiet addresses
            self._failures = {a: d for a, d in self._failures.items() if d}
        return recent


@dataclass
class NodeContext:
    """What the API serves: this node's identity, state, users and audit log."""

    name: str
    key: ed25519.Ed25519PrivateKey
    store: NodeStore
    users: UserStore
    audit: AuditLog
    audit_path: Path
    manifest: Manifest | None = None
    manifest_path: Path | None = None  # where the manifest lives (amendments rewrite it)
    identity: NodeIdentity | None = None  # for the MPC transport of jobs
    lock: threading.Lock = field(default_factory=threading.Lock)
    run_jobs: bool = True  # start approved computations (off in API-only tests)
    peer_timeout: float = 10.0  # seconds for a control-plane request to a peer
    tls_settings: TlsSettings | None = None  # the MPC transport's timeouts
    audit_status: dict[str, Any] | None = None  # the last check against the peers
    listener: Any = None  # the standing MPC listener (net.listener), when serving
    api_tls: Any = None  # the HTTPS server's ssl.SSLContext, when serving
    outbox: Any = None  # undelivered control-plane messages (node.outbox)
    attempts: FailedAttempts = field(default_factory=lambda: FailedAttempts())
    ledger: Ledger | None = None  # the privacy-budget ledger of this node's datasets
