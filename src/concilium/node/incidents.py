"""A node's incidents: everything it aborted, refused or was alarmed by, read back
from its audit log, and the ``incident`` entries it writes for what no other kind
of entry records.

An incident is any of these entries (newest first in :func:`incidents`):

* ``abort``: a run aborted here (``cheating_detected`` when a party deviated,
  ``abort`` otherwise: a peer unavailable, a check failed, the node restarted);
* ``refusal``: this node refused to take part (``budget_refusal`` when a dataset's
  privacy budget or an analyst's rate limit does not allow the run, ``refusal``
  otherwise);
* ``audit_alert``: a log that does not match the checkpoints its peers keep;
* ``incident``: written by :func:`record_incident` where the refusal happens: a peer
  request whose signature fails (:func:`concilium.node.routes.common.peer_request`),
  an MPC connection, certificate or frame refused (the standing listener's callback
  in :mod:`concilium.node.service`, a run's channel in :mod:`concilium.node.jobs`),
  a run that failed with no ``abort`` entry.

Anyone who can reach a node's ports can make it refuse things, so ``incident``
entries are rate-limited: at most :data:`LIMIT` of each kind per :data:`WINDOW`
seconds are written; the others are logged (Python logging) and counted, and the
next one written says how many were not.
"""

from __future__ import annotations

import collections
import logging
import re
import threading
import time
import weakref
from collections.abc import Sequence
from typing import Any

from concilium.governance.audit import AuditEntry, AuditLog
from concilium.governance.audit_events import Incident

__all__ = ["LIMIT", "SOURCES", "WINDOW", "incidents", "peers_named", "record_incident"]

#: The audit entry kinds an incident is read from.
SOURCES = ("abort", "refusal", "audit_alert", "incident")
#: At most this many ``incident`` entries of one kind per ``WINDOW`` seconds.
LIMIT = 20
WINDOW = 60.0
_REASON = 300  # characters of a reason kept in the log
_BUDGET_ERRORS = ("BudgetExhausted", "RateLimited")

_LOG = logging.getLogger("concilium.node")


class _Limiter:
    """Per incident kind: when the last entries were written, and how many since were
    not."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.written: dict[str, collections.deque[float]] = {}
        self.skipped: dict[str, int] = {}

    def admit(self, kind: str) -> int | None:
        """None if this incident is not to be written; else how many were skipped."""
        now = time.monotonic()
        with self.lock:
            recent = self.written.setdefault(kind, collections.deque())
            while recent and now - recent[0] > WINDOW:
                recent.popleft()
            if len(recent) >= LIMIT:
                self.skipped[kind] = self.skipped.get(kind, 0) + 1
                return None
            recent.append(now)
            return self.skipped.pop(kind, 0)


_LIMITERS: weakref.WeakKeyDictionary[AuditLog, _Limiter] = weakref.WeakKeyDictionary()
_LIMITERS_LOCK = threading.Lock()


def _limiter(log: AuditLog) -> _Limiter:
    with _LIMITERS_LOCK:
        found = _LIMITERS.get(log)
        if found is None:
            found = _LIMITERS[log] = _Limiter()
        return found


def record_incident(context: Any, kind: str, reason: str, peers: Sequence[str] = (),
                    computation_id: str | None = None) -> AuditEntry | None:
    """Write an ``incident`` entry (unless this kind is over its rate limit: then it is
    only logged); the entry written, or None."""
    text = " ".join(str(reason).split())[:_REASON]
    _LOG.warning("incident %s: %s (peers %s, computation %s)", kind, text,
                 ", ".join(peers) or "unknown", (computation_id or "none")[:16])
    skipped = _limiter(context.audit).admit(kind)
    if skipped is None:
        return None
    if skipped:
        text = f"{text} ({skipped} more {kind} incident(s) in the last {WINDOW:g} s were " \
               "not recorded)"
    return context.audit.record(Incident(kind, text, sorted(set(peers)), computation_id))


# -- reading them back ----------------------------------------------------------------
_PARTIES = re.compile(r"\bpart(?:y|ies) \[?(\d+(?:, *\d+)*)\]?")


def peers_named(context: Any, text: str) -> list[str]:
    """The other nodes a reason names: by party index ("party 2", "parties [0, 2]")
    or by name (the manifest's)."""
    manifest = context.manifest
    if manifest is None:
        return []
    names = [p.name for p in manifest.parties]
    found = set()
    for match in _PARTIES.finditer(text):
        for number in match.group(1).split(","):
            index = int(number)
            if index < len(names):
                found.add(names[index])
    found |= {n for n in names if re.search(rf"(?<![\w-]){re.escape(n)}(?![\w-])", text)}
    found.discard(context.name)
    return sorted(found)


def _incident(context: Any, entry: AuditEntry) -> dict[str, Any]:
    body = entry.body
    error = body.get("error")
    if entry.kind == "abort":
        kind = "cheating_detected" if error == "CheatingDetected" else "abort"
    elif entry.kind == "refusal":
        kind = "budget_refusal" if error in _BUDGET_ERRORS else "refusal"
    elif entry.kind == "audit_alert":
        kind = "audit_alert"
    else:
        kind = str(body.get("kind"))
    if entry.kind in ("abort", "refusal"):
        reason = f"{error}: {body.get('reason')}"
        peers = peers_named(context, str(body.get("reason")))
    elif entry.kind == "audit_alert":
        reason, peers = str(body.get("problem")), sorted(body.get("peers") or [])
    else:
        reason, peers = str(body.get("reason")), sorted(body.get("peers") or [])
    return {"entry": entry.index, "time": entry.time, "kind": kind, "source": entry.kind,
            "reason": reason, "peers": peers, "computation": body.get("computation_id")}


def incidents(context: Any) -> list[dict[str, Any]]:
    """Every incident in this node's audit log, newest first: its audit entry's index
    (``entry``) and ``time``, its ``kind``, the entry's kind (``source``), the
    ``reason``, the ``peers`` involved and the ``computation`` (or None)."""
    log: AuditLog = context.audit
    found: list[AuditEntry] = []
    for source in SOURCES:
        total, _ = log.page(kind=source, limit=0)
        if total:
            found += log.page(kind=source, limit=total)[1]
    found.sort(key=lambda e: e.index, reverse=True)
    return [_incident(context, entry) for entry in found]
