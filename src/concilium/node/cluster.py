"""Node processes on one machine: a consortium of real ``concilium node start``
processes (mutual TLS, SQLite, a standing MPC listener each) for benchmarks, the
chaos harness and tests.

    cluster = LocalCluster(root, ("hospital-a", "hospital-b", "hospital-c"))
    cluster.register("admissions", {"hospital-a": frame_a, ...}, schema)
    identifier = cluster.propose_and_approve("SELECT COUNT(*) AS n FROM admissions")
    cluster.wait([identifier])
    cluster.kill("hospital-c"); cluster.start("hospital-c")
    cluster.close()

Each node has three users (``admin``, ``analyst``, ``approver``); the analyst of
the first node proposes. ``mpc_addresses`` lets the manifest advertise other
MPC addresses than the ones the nodes listen on (a proxy in between: each node
is started with ``--mpc-bind``). Each node's stderr goes to ``node.log`` in its
directory.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from concilium.errors import ConciliumError, ConfigurationError
from concilium.governance.consortium import Manifest, PartyEntry, add_party, save_manifest
from concilium.governance.identity import create_node
from concilium.governance.users import UserStore
from concilium.node.client import NodeClient
from concilium.node.service import spawn, stop

__all__ = ["ROLES", "TERMINAL", "LocalCluster", "free_port"]

ROLES = ("admin", "analyst", "approver", "recipient", "monitor")
#: statuses a computation does not leave by itself
TERMINAL = ("completed", "failed", "rejected")


_HANDED_OUT: set[int] = set()


def _port_shard() -> tuple[int, int]:
    """``CONCILIUM_PORT_SHARD=k/n``: hand out only ports p with (p div 2) = k mod n, so n
    processes that pick ports at once (parallel test workers) never pick the same."""
    text = os.environ.get("CONCILIUM_PORT_SHARD", "0/1")
    try:
        shard, shards = (int(part) for part in text.split("/"))
    except ValueError:
        raise ConfigurationError(f"CONCILIUM_PORT_SHARD must be k/n, not {text!r}") from None
    if not 0 <= shard < shards:
        raise ConfigurationError(f"CONCILIUM_PORT_SHARD must be k/n with 0 <= k < n, not "
                                 f"{text!r}")
    return shard, shards


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (at the time of asking) and that
    this process has not handed out before: the kernel may offer a just-closed probe
    port again, and two nodes given one address cannot form a consortium."""
    shard, shards = _port_shard()
    for _ in range(1000 * shards):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        if port not in _HANDED_OUT and (port >> 1) % shards == shard:  # bind() ports are even
            _HANDED_OUT.add(port)
            return port
    raise ConfigurationError("no TCP port on 127.0.0.1 is free that was not handed out "
                             "already")


class LocalCluster:
    """Node processes under ``root``, one per name, started at construction."""

    def __init__(self, root: Path, names: Sequence[str], *, protocol: str = "rep3",
                 options: Sequence[str] = (), proxied: bool = False,
                 roles: Mapping[str, Sequence[str]] | None = None) -> None:
        """``options``: more ``node start`` options for every node (``--peer-timeout
        5``); ``proxied``: the manifest advertises MPC addresses (``advertised``) other
        than the ones the nodes bind (``bound``), for a proxy to forward between;
        ``roles``: a node's roles in the manifest (by default a data owner that
        computes; ``("data_owner",)`` or ``("recipient",)`` make an outside party)."""
        self.root, self.names, self.options = root, tuple(names), tuple(options)
        manifest = Manifest("local", protocol)
        self.dirs: dict[str, Path] = {}
        self.bound: dict[str, str] = {}
        self.advertised: dict[str, str] = {}
        for name in self.names:
            self.bound[name] = f"127.0.0.1:{free_port()}"
            self.advertised[name] = f"127.0.0.1:{free_port()}" if proxied else self.bound[name]
            node = create_node(root / name, name, self.advertised[name],
                               f"127.0.0.1:{free_port()}")
            manifest = add_party(manifest, node, tuple((roles or {}).get(
                name, ("data_owner", "compute"))))
            self.dirs[name] = root / name
        self.manifest_path = root / "consortium.toml"
        save_manifest(manifest, self.manifest_path)
        self.tokens: dict[str, dict[str, str]] = {}
        for name in self.names:
            users = UserStore(self.dirs[name] / "users.sqlite")
            try:
                self.tokens[name] = {role: users.add_user(role, role) for role in ROLES}
            finally:
                users.close()
        self.processes: dict[str, subprocess.Popen[str]] = {}
        self.clients: dict[str, dict[str, NodeClient]] = {}
        try:
            for name in self.names:
                self.start(name, wait=False)
            for name in self.names:
                self.wait_until_up(name)
        except BaseException:
            self.close()
            raise

    def prepare(self, name: str, roles: Sequence[str] = ("data_owner", "compute")
                ) -> PartyEntry:
        """A new node's directory, users and manifest entry, not yet in the manifest
        (it joins by amendment; :meth:`start` it once the amendment is applied)."""
        self.bound[name] = self.advertised[name] = f"127.0.0.1:{free_port()}"
        node = create_node(self.root / name, name, self.bound[name],
                           f"127.0.0.1:{free_port()}")
        self.dirs[name] = self.root / name
        users = UserStore(self.dirs[name] / "users.sqlite")
        try:
            self.tokens[name] = {role: users.add_user(role, role) for role in ROLES}
        finally:
            users.close()
        self.names = (*self.names, name)
        entry = add_party(Manifest("joining", "rep3"), node, tuple(roles)).parties[0]
        return entry

    # -- processes ------------------------------------------------------------------

    def start(self, name: str, *, wait: bool = True, entry: str = "concilium.cli") -> None:
        """Start (or restart) ``name``'s node process (``entry``: the module to run, such as
        ``concilium.cheating_node``)."""
        options = list(self.options)
        if self.bound[name] != self.advertised[name]:
            options += ["--mpc-bind", self.bound[name]]
        self.processes[name] = spawn(self.dirs[name], self.manifest_path, options=options,
                                     log=self.dirs[name] / "node.log", entry=entry)
        if wait:
            self.wait_until_up(name)

    def wait_until_up(self, name: str, timeout: float = 60.0) -> None:
        """Until the node answers ``/health``; its clients are opened then."""
        probe = NodeClient(self.dirs[name], None)
        deadline = time.monotonic() + timeout
        try:
            while True:
                if self.processes[name].poll() is not None:
                    raise ConfigurationError(f"node {name} exited with status "
                                             f"{self.processes[name].returncode}")
                try:
                    probe.request("GET", "/health")
                    break
                except ConfigurationError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
        finally:
            probe.close()
        if name not in self.clients:
            self.clients[name] = {role: NodeClient(self.dirs[name], token)
                                  for role, token in self.tokens[name].items()}

    def kill(self, name: str) -> None:
        """SIGKILL ``name``'s node (no shutdown at all) and reap it."""
        process = self.processes[name]
        if process.poll() is None:
            process.kill()
        process.wait()

    def pause(self, name: str) -> None:
        self.processes[name].send_signal(signal.SIGSTOP)

    def resume(self, name: str) -> None:
        self.processes[name].send_signal(signal.SIGCONT)

    def running(self, name: str) -> bool:
        return self.processes[name].poll() is None

    def close(self) -> None:
        for clients in self.clients.values():
            for client in clients.values():
                client.close()
        self.clients.clear()
        for process in self.processes.values():  # a paused node cannot stop gracefully
            if process.poll() is None:
                process.send_signal(signal.SIGCONT)
        stop(list(self.processes.values()))

    # -- governed computations ------------------------------------------------------

    def client(self, name: str, role: str = "analyst") -> NodeClient:
        return self.clients[name][role]

    def register(self, dataset: str, frames: Mapping[str, pd.DataFrame],
                 schema: Mapping[str, Any], rules: Mapping[str, Any] | None = None) -> None:
        """Write each node's frame to a CSV file and register it as ``dataset`` (with
        the owners' ``rules``: [policy], [approval], [budget], if given)."""
        for name, frame in frames.items():
            path = self.root / f"{name}-{dataset}.csv"
            frame.to_csv(path, index=False)
            self.client(name, "admin").request("POST", "/datasets", json={
                "name": dataset, "path": str(path), "schema": dict(schema),
                **({"rules": dict(rules)} if rules is not None else {})})

    def propose(self, sql: str, datasets: Sequence[str] = ("admissions",),
                recipients: Sequence[str] | None = None) -> str:
        recipients = list(recipients or self.names[:1])
        return str(self.client(self.names[0]).request("POST", "/computations", json={
            "query": sql, "datasets": list(datasets), "recipients": recipients})["id"])

    def approve(self, identifier: str, names: Sequence[str] | None = None) -> None:
        for name in names or self.names:
            self.client(name, "approver").request(
                "POST", f"/computations/{identifier}/approve", json={})

    def propose_and_approve(self, sql: str, datasets: Sequence[str] = ("admissions",)) -> str:
        identifier = self.propose(sql, datasets)
        self.approve(identifier)
        return identifier

    def status(self, name: str, identifier: str) -> dict[str, Any] | None:
        """The computation as ``name``'s node shows it (None: not there, or the node
        does not answer)."""
        try:
            shown = self.client(name).request("GET", f"/computations/{identifier}")
        except ConciliumError:
            return None
        return dict(shown)

    def result(self, identifier: str, name: str | None = None) -> dict[str, Any]:
        return dict(self.client(name or self.names[0]).request(
            "GET", f"/computations/{identifier}/result"))

    def wait_failed(self, identifier: str, timeout: float = 600.0) -> str:
        """Until the computation failed on every node; the first node's error (a
        completed run raises: the test or drill expected an abort)."""
        deadline = time.monotonic() + timeout
        while True:
            shown = {name: self.status(name, identifier) for name in self.names}
            done = [s for s in shown.values() if s is not None and s["status"] == "completed"]
            if done:
                raise RuntimeError(f"{identifier[:12]} completed where it should have failed")
            if all(s is not None and s["status"] == "failed" for s in shown.values()):
                return str(shown[self.names[0]]["error"])  # type: ignore[index]
            if time.monotonic() > deadline:
                raise TimeoutError(f"{identifier[:12]} did not fail everywhere: "
                                   f"{ {n: (s or {}).get('status') for n, s in shown.items()} }")
            time.sleep(0.2)

    def wait(self, identifiers: Sequence[str], timeout: float = 600.0, *,
             name: str | None = None) -> None:
        """Until every computation completed on ``name``'s node (the first); a failed
        one raises with its error."""
        name = name or self.names[0]
        deadline = time.monotonic() + timeout
        pending = set(identifiers)
        while pending:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(pending)} computations did not finish")
            for identifier in list(pending):
                shown = self.status(name, identifier)
                if shown is not None and shown["status"] == "failed":
                    raise RuntimeError(f"{identifier[:12]} failed: {shown['error']}")
                if shown is not None and shown["status"] == "completed":
                    pending.discard(identifier)
            time.sleep(0.1)

    def terminal(self, identifier: str) -> dict[str, str | None]:
        """Each node's status of the computation (None where a node does not answer)."""
        return {name: (shown or {}).get("status") for name in self.names
                for shown in [self.status(name, identifier) if self.running(name) else None]}

