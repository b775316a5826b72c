"""A node process holding many computations and a long audit log, for timing the web
pages: its state is written directly (as a node that has run for months would have
it), then the node is started and serves its pages over HTTPS."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from concilium.governance.approval import sign_approval
from concilium.governance.audit import AuditLog
from concilium.governance.audit_events import Approval as ApprovalEvent
from concilium.governance.audit_events import Proposal
from concilium.governance.consortium import Manifest, add_party, save_manifest
from concilium.governance.identity import create_node, load_node, load_signing_key
from concilium.governance.proposal import DatasetEntry, build_spec
from concilium.governance.users import UserStore
from concilium.node.client import NodeClient
from concilium.node.cluster import free_port
from concilium.node.service import spawn
from concilium.node.store import NodeStore
from tests.browser import spki_pin

SCHEMA = {"ward": {"type": "category", "domain": ["north", "south"]},
          "age": {"type": "int", "low": 0, "high": 100}}


@dataclass(frozen=True)
class SeededNode:
    url: str
    pin: str
    tokens: dict[str, str]
    identifiers: list[str]


@contextmanager
def seeded_node(root: Path, *, computations: int, entries: int) -> Iterator[SeededNode]:
    """hospital-a (peers b and c are never started) with ``computations`` proposals
    over its dataset, each approved at this node, and ``entries`` audit entries."""
    manifest = Manifest("hospitals", "rep3")
    for name in ("hospital-a", "hospital-b", "hospital-c"):
        identity = create_node(root / name, name, f"127.0.0.1:{free_port()}",
                               f"127.0.0.1:{free_port()}")
        manifest = add_party(manifest, identity, ("data_owner", "compute"))
    save_manifest(manifest, root / "consortium.toml")
    node_dir = root / "hospital-a"
    identity = load_node(node_dir)
    key = load_signing_key(identity)
    users = UserStore(node_dir / "users.sqlite")
    tokens = {role: users.add_user(f"{role}-1", role) for role in ("approver", "analyst")}
    users.close()
    pd.DataFrame({"ward": ["north", "south"] * 10, "age": range(20)}).to_csv(
        root / "admissions.csv", index=False)
    catalog = [DatasetEntry("admissions", "hospital-a", {"columns": SCHEMA})]
    base = build_spec("SELECT ward, COUNT(*) AS n FROM admissions GROUP BY ward",
                      ["admissions"], ["hospital-a"], "analyst-1", manifest, catalog)
    store = NodeStore(node_dir / "state.sqlite")
    log = AuditLog(node_dir / "audit.sqlite", "hospital-a", key)
    for connection in (store._connection, log._connection):  # seeding only: no fsync
        connection.execute("PRAGMA synchronous = OFF")
    identifiers, written = [], 0
    for index in range(computations):
        spec = dataclasses.replace(base, nonce=f"{index:06d}")
        store.add_computation(spec)
        log.record(Proposal(spec.computation_id, spec.as_dict(), origin="hospital-a"))
        written += 1
        if index % 2 == 0:  # half of them approved here already
            approval = sign_approval(spec, "approve", "approver-1", "hospital-a", key)
            store.add_approval(approval)
            log.record(ApprovalEvent(**approval.as_dict()))
            written += 1
        identifiers.append(spec.computation_id)
    for index in range(entries - written):
        log.append("retry", {"computation_id": identifiers[index % len(identifiers)]})
    store.close()
    log.close()
    process = spawn(node_dir, root / "consortium.toml")
    try:
        client = NodeClient(node_dir, tokens["analyst"])
        deadline = time.monotonic() + 60
        while True:
            try:
                client.request("GET", "/health")
                break
            except Exception:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        yield SeededNode(f"https://{identity.api_address}",
                         spki_pin(identity.tls_certificate_path.read_bytes()), tokens,
                         identifiers)
    finally:
        process.terminate()
        process.wait(timeout=30)
