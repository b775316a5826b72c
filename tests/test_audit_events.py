"""Audit events: one dataclass per kind, documented in docs/audit.md, read back
from real entries; a body with other fields or an unknown kind is refused."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from concilium.errors import AuditError
from concilium.governance import audit_events as events
from concilium.governance.audit import AuditLog

ROOT = Path(__file__).resolve().parents[1]


def _documented() -> dict[str, list[str]]:
    table = {}
    for line in (ROOT / "docs" / "audit.md").read_text().splitlines():
        match = re.match(r"\| `([a-z_]+)` \| (.+?) \|", line)
        if match:
            table[match.group(1)] = re.findall(r"`([a-z0-9_]+)`", match.group(2))
    return table


def test_docs_list_every_kind_with_its_fields_in_order() -> None:
    assert _documented() == {kind: [f.name for f in dataclasses.fields(event)]
                             for kind, event in events.EVENTS.items()}


def test_recorded_events_read_back_as_the_same_event(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.sqlite", "hospital-a", ed25519.Ed25519PrivateKey.generate())
    written = [events.Retry("c1"), events.Abort("c1", "PeerUnavailable", "party 2 left"),
               events.AuditAlert("root differs", ["hospital-b"]),
               events.Result("c1", None, ["hospital-a"]),
               events.DatasetRegistered("admissions", 10, "parquet", {}, "ab" * 32)]
    for event in written:
        log.record(event)
    assert [events.event_from_entry(e.kind, e.body) for e in log.entries()] == written
    log.close()


def test_an_unknown_kind_or_other_fields_are_refused() -> None:
    with pytest.raises(AuditError, match="unknown audit event kind 'gossip'"):
        events.event_from_entry("gossip", {})
    with pytest.raises(AuditError, match="a retry entry has fields"):
        events.event_from_entry("retry", {"computation_id": "c1", "rows": [1, 2]})
