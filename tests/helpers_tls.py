"""Helpers for TLS tests: throwaway consortia and in-process TLS parties."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from concilium.governance.consortium import Manifest, add_party, save_manifest
from concilium.governance.identity import NodeIdentity, create_node
from concilium.net.tls import TlsIdentity, TlsSettings
from concilium.net.tls_channel import TlsChannel
from concilium.node.cluster import free_port as cluster_free_port
from concilium.node.launcher import endpoints


def free_port() -> int:
    """A free port this process has not handed out before (see cluster.free_port)."""
    return cluster_free_port()


@dataclass
class Consortium:
    root: Path
    manifest: Manifest
    manifest_path: Path
    nodes: list[NodeIdentity]

    @property
    def node_dirs(self) -> list[Path]:
        return [node.directory for node in self.nodes]

    def ports(self) -> list[int]:
        return [node.mpc_address.port for node in self.nodes]


def make_consortium(root: Path, names: Sequence[str] = ("alpha", "bravo", "charlie"),
                    name: str = "test") -> Consortium:
    manifest = Manifest(name, "rep3")
    nodes = []
    for node_name in names:
        node = create_node(root / node_name, node_name, f"127.0.0.1:{free_port()}",
                           f"127.0.0.1:{free_port()}")
        manifest = add_party(manifest, node, ("data_owner", "compute"))
        nodes.append(node)
    path = root / f"{name}.toml"
    save_manifest(manifest, path)
    return Consortium(root, manifest, path, nodes)


def connect_in_threads(consortium: Consortium, computation_id: bytes = bytes(32),
                       settings: TlsSettings | None = None,
                       refused: list[str] | None = None,
                       manifests: Sequence[Manifest] | None = None) -> list[Any]:
    """Connect every party in its own thread; returns channels (or the exceptions)."""

    def connect(index: int, _: object) -> TlsChannel:
        node = consortium.nodes[index]
        manifest = manifests[index] if manifests else consortium.manifest
        return TlsChannel.connect(
            index, endpoints(manifest), TlsIdentity(node.tls_certificate_path, node.tls_key_path),
            bytes.fromhex(manifest.hash), computation_id,
            settings or TlsSettings(startup_timeout=10, receive_timeout=10),
            on_refused=refused.append if refused is not None else None)

    return run_each([None] * len(consortium.nodes), connect)


def run_each(channels: Sequence[Any], body: Callable[[int, Any], Any]) -> list[Any]:
    """Run ``body(index, channel)`` in one thread per channel; values or exceptions."""
    results: list[Any] = [None] * len(channels)

    def run(index: int) -> None:
        try:
            results[index] = body(index, channels[index])
        except BaseException as error:
            results[index] = error

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(channels))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results
