"""``concilium node start``: a long-running node serving its HTTP API over HTTPS
with its own pinned certificate, state in SQLite under the node directory.

State files (created on first start): ``state.sqlite`` (datasets,
computations, approvals), ``users.sqlite`` (users and token hashes),
``audit.sqlite`` (the signed, hash-chained audit log). The node listens on its
MPC address for its whole life (:mod:`concilium.net.listener`) and routes each
peer's connection to its computation, so any number of computations run at
once. The node logs to stderr, one JSON object per line (:mod:`concilium.node.logs`:
every request and every run; ``CONCILIUM_LOG_FORMAT=text`` for the plain warnings
only). Shutdown on SIGINT or SIGTERM is graceful: uvicorn stops accepting
requests, finishes the ones in flight, and the stores are closed.
"""

from __future__ import annotations

import datetime
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from concilium.errors import ConfigurationError
from concilium.governance.audit import AuditLog
from concilium.governance.audit_events import Abort
from concilium.governance.budget import Ledger
from concilium.governance.consortium import load_manifest
from concilium.governance.identity import (
    certificate_expiry,
    load_node,
    load_signing_key,
    parse_address,
    previous_signing_keys,
)
from concilium.governance.users import UserStore
from concilium.net.listener import RefusedConnection, StandingListener
from concilium.net.tls import TlsIdentity, TlsSettings
from concilium.node import control, jobs, logs
from concilium.node.api import create_app
from concilium.node.context import NodeContext
from concilium.node.incidents import record_incident
from concilium.node.launcher import endpoints
from concilium.node.outbox import Outbox
from concilium.node.store import NodeStore, NotFound

__all__ = ["interrupted", "mpc_listener", "open_node", "serve", "spawn", "stop"]


def open_node(node_dir: str | Path, manifest_path: str | Path | None = None) -> NodeContext:
    """The node's context: identity, key, stores, audit log (and manifest if given)."""
    root = Path(node_dir)
    identity = load_node(root)
    key = load_signing_key(identity)
    store = NodeStore(root / "state.sqlite")
    return NodeContext(name=identity.name, key=key, store=store,
                       users=UserStore(root / "users.sqlite"),
                       audit=AuditLog(root / "audit.sqlite", identity.name, key,
                                      previous_signing_keys(identity)),
                       audit_path=root / "audit.sqlite",
                       manifest=None if manifest_path is None else load_manifest(manifest_path),
                       manifest_path=None if manifest_path is None else Path(manifest_path),
                       identity=identity, outbox=Outbox(root / "outbox.sqlite"),
                       ledger=Ledger(root / "budget.sqlite"))


def _deliveries(context: NodeContext, stopping: threading.Event, interval: float = 0.5
                ) -> None:
    """Re-send what the outbox holds, and restart computations that waited for peers."""
    passes = 0
    while not stopping.wait(interval):
        try:
            control.deliver_outbox(context)
            passes += 1
            if passes % 4 == 0:
                jobs.resume_waiting(context)
        except Exception:  # a background loop must not die
            _LOG.exception("outbox delivery failed; trying again")


def _background(context: NodeContext, stopping: threading.Event, interval: float,
                attempts: int = 30) -> None:
    """What a node does besides answering requests:

    1. publish its catalog to its peers (and learn theirs) until every peer has
       answered (peers that start later introduce themselves the same way);
    2. verify its own audit log against the checkpoints its peers keep (a cut tail
       or a rebuilt history shows in ``/health`` and as an ``audit_alert`` entry);
    3. every ``interval`` seconds, have its peers co-sign (and keep) its log's
       checkpoint if it grew.
    """
    for _ in range(attempts):
        if not control.publish_catalog(context) or stopping.wait(2.0):
            break
    if stopping.is_set():
        return
    control.verify_own_log(context)
    while not stopping.wait(interval):
        control.request_witnesses(context)


#: Computations whose peers' connections are held for their job: a failed one may be
#: retried at any moment (its peers may dial before the retry reaches this node).
_RUNNABLE = ("proposed", "approved", "running", "failed")
_LOG = logging.getLogger("concilium.node")


def interrupted(context: NodeContext) -> list[str]:
    """Mark the runs this node was in the middle of when it stopped as failed, with
    the reason (their peers failed them too); ``concilium retry`` completes them."""
    found = []
    for record in context.store.computations():
        if record.status == "running":
            context.store.update(record.id, status="failed",
                                 error="interrupted: this node stopped during the run; "
                                       "retry it")
            context.audit.record(Abort(record.id, "NodeRestarted",
                                       "the node stopped during the run"))
            logs.event("run_abort", logging.WARNING, computation=record.id,
                       reason="NodeRestarted", message="the node stopped during the run")
            found.append(record.id)
    return found


def mpc_listener(context: NodeContext, bind: str | None = None) -> StandingListener:
    """The node's standing MPC listener: routes peers' connections to this node's
    computations; a connection for a computation it does not have, or has completed
    or refused, is refused and logged (and, like a certificate that is not a party's or
    a malformed HELLO, recorded as an ``incident``). ``bind`` (``host:port``): listen there instead
    of on the manifest's MPC address (a node behind port forwarding or a proxy)."""
    manifest = context.manifest
    assert manifest is not None and context.identity is not None
    every = endpoints(manifest)
    own = every[manifest.index(context.name)]
    if bind is not None:
        address = parse_address(bind, "MPC bind address")
        own = replace(own, host=address.host, port=address.port)

    def known(computation: bytes) -> bool:
        try:
            return context.store.computation(computation.hex()).status in _RUNNABLE
        except NotFound:
            return False

    def refused(incident: RefusedConnection) -> None:
        """A refused certificate, frame or connection: an ``incident`` entry."""
        parties = context.manifest.parties if context.manifest is not None else ()
        peers = [parties[incident.party].name] if incident.party is not None and \
            incident.party < len(parties) else []
        computation = incident.computation.hex() if incident.computation else None
        record_incident(context, incident.kind, incident.reason, peers, computation)

    identity = TlsIdentity(context.identity.tls_certificate_path, context.identity.tls_key_path)
    return StandingListener(own, every, identity, context.tls_settings or TlsSettings(),
                            known=known, on_incident=refused).start()


#: Warn (log) this long before the node's certificate expires.
EXPIRY_WARNING = datetime.timedelta(days=30)


def _warn_expiry(identity: Any) -> None:
    """A warning in the node's log when its certificate expires within 30 days
    (rotate it with ``concilium keys rotate NODE_DIR --tls``)."""
    left = certificate_expiry(identity.tls_certificate_pem) - datetime.datetime.now(
        datetime.UTC)
    if left < EXPIRY_WARNING:
        _LOG.warning("the TLS certificate of %s expires in %d days; rotate it with "
                     "'concilium keys rotate %s --tls'", identity.name, left.days,
                     identity.directory)


def serve(node_dir: str | Path, manifest_path: str | Path | None = None, *,
          witness_interval: float = 2.0, settings: TlsSettings | None = None,
          mpc_bind: str | None = None, log_format: str | None = None) -> None:
    """Serve the node's API until SIGINT/SIGTERM (blocking); ``witness_interval``:
    seconds between rounds of peer co-signatures of the audit log; ``settings``: the
    MPC transport's timeouts (a peer silent for ``receive_timeout`` aborts the run);
    ``mpc_bind``: see :func:`mpc_listener`; ``log_format``: ``json`` (one object per
    line on stderr: every request and run, every warning) or ``text`` (warnings only),
    by default ``CONCILIUM_LOG_FORMAT``, else ``json``."""
    import uvicorn
    from uvicorn.config import LOGGING_CONFIG

    log_format = log_format or os.environ.get("CONCILIUM_LOG_FORMAT", "json")
    if log_format not in ("json", "text"):
        raise ConfigurationError(f"the log format is json or text, not {log_format!r}")
    context = open_node(node_dir, manifest_path)
    structured = log_format == "json"
    json_handler = logs.configure(context.name) if structured else None
    context.tls_settings = settings
    identity = load_node(node_dir)
    # uvicorn shuts down gracefully on SIGINT/SIGTERM, restores the handlers it found
    # and raises the signal again: with these no-op handlers the node then returns
    # normally (exit status 0) instead of dying by the signal
    received: list[int] = []
    previous = {sig: signal.signal(sig, lambda number, _: received.append(number))
                for sig in (signal.SIGINT, signal.SIGTERM)}
    stopping = threading.Event()
    interrupted(context)
    if context.manifest is not None:
        context.listener = mpc_listener(context, mpc_bind)
        jobs.start_approved(context)
        threading.Thread(target=_deliveries, args=(context, stopping), daemon=True,
                         name="concilium-deliveries").start()
        threading.Thread(target=_background, args=(context, stopping, witness_interval),
                         daemon=True, name="concilium-background").start()
    try:
        app = create_app(context)
        if structured:  # every request logged; uvicorn's records to the JSON handler
            logs.install(app, context)
        config = uvicorn.Config(app, host=identity.api_address.host,
                                port=identity.api_address.port, log_level="warning",
                                ssl_certfile=str(identity.tls_certificate_path),
                                ssl_keyfile=str(identity.tls_key_path),
                                timeout_graceful_shutdown=10,
                                log_config=None if structured else LOGGING_CONFIG,
                                access_log=not structured)
        config.load()
        context.api_tls = config.ssl  # a key rotation loads the new certificate into it
        _warn_expiry(identity)
        uvicorn.Server(config).run()
    finally:
        stopping.set()
        if json_handler is not None:
            logging.getLogger().removeHandler(json_handler)
        if context.listener is not None:
            context.listener.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        context.store.close()
        if context.outbox is not None:
            context.outbox.close()
        context.users.close()
        context.audit.close()


def spawn(node_dir: str | Path, manifest_path: str | Path | None = None, *,
          quiet: bool = True, options: Sequence[str] = (),
          log: str | Path | None = None, entry: str = "concilium.cli") -> subprocess.Popen[str]:
    """Start ``concilium node start`` for ``node_dir`` as a child process (this
    checkout's package first on the path); stderr is captured unless ``quiet``, or
    appended to the file ``log``; ``options``: more of ``node start``'s options
    (``--peer-timeout 5``); ``entry``: the module to run (``concilium.cheating_node`` for
    a fire drill)."""
    environment = dict(os.environ)
    source = str(Path(__file__).resolve().parents[2])
    environment["PYTHONPATH"] = os.pathsep.join(
        [source, *filter(None, [environment.get("PYTHONPATH")])])
    command = [sys.executable, "-m", entry, "node", "start", str(node_dir)]
    if manifest_path is not None:
        command += ["--manifest", str(manifest_path)]
    command += list(options)
    if log is not None:
        with open(log, "a") as sink:  # the child keeps its own descriptor
            return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=sink,
                                    text=True, env=environment)
    return subprocess.Popen(command, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL if quiet else subprocess.PIPE,
                            text=True, env=environment)


def stop(processes: Sequence[subprocess.Popen[str]], timeout: float = 20.0) -> None:
    """SIGTERM every node still running, wait for its graceful exit, kill stragglers."""
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
