"""A node's metrics in the Prometheus text format (``GET /metrics``, role ``monitor``
or ``admin``), read from the node's own state when scraped, so they survive restarts.

Every figure is a count, a size, a time or a state: how many computations are in
each status, how many runs started, completed and aborted (and why), how many
bytes this node sent in them and how long they took, the outbox's backlog, the
privacy budget left on each dataset, when the TLS certificate expires, and how far
the audit log is co-signed and verified. Nothing here reveals a record, a share, a
result or a token; dataset, peer and protocol names and error types are public to
the consortium already (the manifest, the catalog, the audit log).

Runs are tallied from the audit log (``run_start``, ``run_end``, ``abort`` and
``refusal`` entries), which is append-only: each scrape reads only the entries
written since the last one (:meth:`concilium.governance.audit.AuditLog.since`).
Each app has its own :class:`~prometheus_client.CollectorRegistry` (several nodes
may live in one process, as in tests); the default global registry is never used.
"""

from __future__ import annotations

import datetime
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from concilium.node.store import STATUSES

__all__ = ["DURATION_BUCKETS", "NodeCollector", "NodeMetrics", "RunTally", "of_app"]

_LOG = logging.getLogger("concilium.node")

#: Upper bounds (seconds) of the run-duration histogram's buckets.
DURATION_BUCKETS = (0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
                    3600.0)
_RUN_KINDS = ("run_start", "run_end", "abort", "refusal")


def _unix(text: str) -> float:
    """An audit entry's time (ISO 8601, UTC) in unix seconds."""
    return datetime.datetime.fromisoformat(text).timestamp()


@dataclass
class RunTally:
    """The runs in an audit log, tallied incrementally: per protocol the runs started,
    completed (``run_end``), the bytes this node sent in them and their durations
    (``run_start`` to ``run_end``), their rounds; aborts and refusals per error type."""

    position: int = -1  # the last entry read
    open: dict[str, tuple[str, float]] = field(default_factory=dict)  # id -> protocol, start
    started: Counter[str] = field(default_factory=Counter)
    completed: Counter[str] = field(default_factory=Counter)
    bytes_sent: Counter[str] = field(default_factory=Counter)
    rounds: Counter[str] = field(default_factory=Counter)
    aborts: Counter[str] = field(default_factory=Counter)
    refusals: Counter[str] = field(default_factory=Counter)
    buckets: dict[str, list[int]] = field(default_factory=dict)  # per protocol, not cumulative
    seconds: dict[str, float] = field(default_factory=dict)  # sum of durations per protocol

    def update(self, audit: Any, protocol: str) -> None:
        """Read the entries written since the last call (``protocol``: the consortium's,
        for a run whose ``run_start`` is missing)."""
        for entry in audit.since(self.position, _RUN_KINDS):
            self.position = entry.index
            body, identifier = entry.body, str(entry.body.get("computation_id"))
            if entry.kind == "run_start":
                name = str(body.get("protocol") or protocol)
                self.open[identifier] = (name, _unix(entry.time))
                self.started[name] += 1
            elif entry.kind == "run_end":
                name, start = self.open.pop(identifier, (protocol, None))
                self.completed[name] += 1
                self.bytes_sent[name] += int(body.get("bytes_sent") or 0)
                self.rounds[name] += int(body.get("rounds") or 0)
                if start is not None:
                    self._observe(name, max(0.0, _unix(entry.time) - start))
            elif entry.kind == "abort":
                self.open.pop(identifier, None)
                self.aborts[str(body.get("error") or "unknown")] += 1
            else:
                self.refusals[str(body.get("error") or "unknown")] += 1

    def _observe(self, protocol: str, seconds: float) -> None:
        counts = self.buckets.setdefault(protocol, [0] * (len(DURATION_BUCKETS) + 1))
        index = next((i for i, bound in enumerate(DURATION_BUCKETS) if seconds <= bound),
                     len(DURATION_BUCKETS))
        counts[index] += 1
        self.seconds[protocol] = self.seconds.get(protocol, 0.0) + seconds

    def histogram(self) -> HistogramMetricFamily:
        family = HistogramMetricFamily(
            "concilium_run_duration_seconds",
            "Seconds from run_start to run_end of this node's completed runs (audit log)",
            labels=["protocol"])
        for protocol, counts in sorted(self.buckets.items()):
            cumulative, total = [], 0
            for bound, count in zip((*DURATION_BUCKETS, float("inf")), counts, strict=True):
                total += count
                cumulative.append(("+Inf" if bound == float("inf") else repr(bound), total))
            family.add_metric([protocol], cumulative, self.seconds[protocol])
        return family


def _counter(name: str, help_text: str, label: str, values: Counter[str]) -> Metric:
    family = CounterMetricFamily(name, help_text, labels=[label])
    for key, value in sorted(values.items()):
        family.add_metric([key], value)
    return family


def _gauge(name: str, help_text: str, value: float | None = None) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, help_text, value=value)


class NodeCollector(Collector):
    """Reads one node's state (its :class:`~concilium.node.context.NodeContext`) at
    every scrape."""

    def __init__(self, context: Any) -> None:
        self.context = context
        self._lock = threading.Lock()
        self._runs = RunTally()
        self._status: dict[str, Any] | None = None  # the last audit check seen ...
        self._status_seen = 0.0  # ... and when it was first seen

    def collect(self) -> Iterator[Metric]:
        failed = 0
        for section in (self._node, self._computations, self._run_metrics, self._outbox,
                        self._budgets, self._certificate, self._audit):
            try:
                yield from section()
            except Exception:  # one broken source must not hide the other metrics
                _LOG.exception("metrics: %s failed", section.__name__.strip("_"))
                failed += 1
        yield _gauge("concilium_metrics_collection_errors",
                     "Parts of this scrape that could not be read (see the node's log)",
                     failed)

    def _node(self) -> Iterator[Metric]:
        """Which node and consortium this is (a constant 1 with labels)."""
        manifest = self.context.manifest
        info = GaugeMetricFamily("concilium_node_info", "This node, its consortium's "
                                 "manifest hash and protocol (always 1)",
                                 labels=["node", "consortium", "protocol"])
        info.add_metric([self.context.name, manifest.hash if manifest else "",
                         manifest.protocol if manifest else ""], 1)
        yield info

    def _computations(self) -> Iterator[Metric]:
        """How many computations this node knows in each status."""
        counts = Counter(record.status for record in self.context.store.computations())
        family = GaugeMetricFamily("concilium_computations",
                                   "Computations this node knows, by status",
                                   labels=["status"])
        for status in (*STATUSES, *sorted(set(counts) - set(STATUSES))):
            family.add_metric([status], counts.get(status, 0))
        yield family

    def _run_metrics(self) -> Iterator[Metric]:
        """Runs started, completed and aborted, bytes sent and durations (audit log)."""
        manifest = self.context.manifest
        with self._lock:
            runs = self._runs
            if self.context.audit.page(limit=0)[0] <= runs.position:  # a shorter log
                runs = self._runs = RunTally()
            runs.update(self.context.audit, manifest.protocol if manifest else "unknown")
            families = [
                _counter("concilium_runs_started", "Runs this node's party started "
                         "(run_start entries), by protocol", "protocol", runs.started),
                _counter("concilium_runs_completed", "Runs this node's party finished "
                         "(run_end entries), by protocol", "protocol", runs.completed),
                _counter("concilium_run_aborts", "Runs aborted at this node (abort "
                         "entries), by error type", "reason", runs.aborts),
                _counter("concilium_run_refusals", "Computations and runs this node "
                         "refused (refusal entries), by error type", "reason",
                         runs.refusals),
                _counter("concilium_run_bytes_sent", "Payload bytes this node sent in "
                         "its completed runs, by protocol", "protocol", runs.bytes_sent),
                _counter("concilium_run_rounds", "Communication rounds of this node's "
                         "completed runs, by protocol", "protocol", runs.rounds),
                runs.histogram()]
        yield from families

    def _outbox(self) -> Iterator[Metric]:
        """Control-plane messages not delivered yet, per peer, and the oldest's age."""
        outbox, manifest = self.context.outbox, self.context.manifest
        items = outbox.pending() if outbox is not None else []
        counts = Counter(item.peer for item in items)
        peers = {p.name for p in manifest.parties} - {self.context.name} if manifest else set()
        family = GaugeMetricFamily("concilium_outbox_messages", "Control-plane messages "
                                   "waiting in the outbox for a peer", labels=["peer"])
        for peer in sorted(peers | set(counts)):
            family.add_metric([peer], counts.get(peer, 0))
        yield family
        oldest = min((_unix(item.created) for item in items), default=None)
        yield _gauge("concilium_outbox_oldest_message_age_seconds", "Age of the oldest "
                     "undelivered message (0 if none)",
                     0.0 if oldest is None else max(0.0, time.time() - oldest))

    def _budgets(self) -> Iterator[Metric]:
        """Each budgeted dataset's total rho and what is left (public rules and the
        ledger's spending, as an approver sees them)."""
        total = GaugeMetricFamily("concilium_privacy_budget_rho", "A dataset's privacy "
                                  "budget (zCDP rho) per period", labels=["dataset"])
        left = GaugeMetricFamily("concilium_privacy_budget_remaining_rho", "Privacy budget "
                                 "(zCDP rho) left on a dataset", labels=["dataset"])
        ledger = self.context.ledger
        for record in self.context.store.datasets():
            budget = record.rules.budget
            if budget is None:
                continue
            spent = ledger.spent(record.name, budget) if ledger is not None else 0.0
            total.add_metric([record.name], budget.rho)
            left.add_metric([record.name], max(0.0, budget.rho - spent))
        yield total
        yield left

    def _certificate(self) -> Iterator[Metric]:
        """When the node's TLS certificate (API and MPC) stops being valid."""
        identity = self.context.identity
        if identity is None:
            return
        certificate = x509.load_pem_x509_certificate(
            identity.tls_certificate_path.read_bytes())
        expiry = certificate.not_valid_after_utc.timestamp()
        yield _gauge("concilium_tls_certificate_expiry_timestamp_seconds",
                     "The node certificate's notAfter (unix seconds)", expiry)
        yield _gauge("concilium_tls_certificate_expires_in_seconds", "Seconds until the "
                     "node certificate's notAfter (negative once expired)",
                     expiry - time.time())

    def _audit(self) -> Iterator[Metric]:
        """The audit log's size, how far each peer co-signed it and when, and the last
        check of the log against the checkpoints the peers keep."""
        audit, manifest = self.context.audit, self.context.manifest
        yield _gauge("concilium_audit_entries", "Entries in this node's audit log",
                     audit.page(limit=0)[0])
        if manifest is not None:
            sizes = {p.name: audit.cosigned_size(p.name) for p in manifest.parties
                     if p.name != self.context.name}
        else:
            sizes = {}
            for checkpoint in audit.checkpoints():
                sizes[checkpoint.signer] = max(sizes.get(checkpoint.signer, 0),
                                               checkpoint.size)
        cosigned = GaugeMetricFamily("concilium_audit_cosigned_entries", "The largest "
                                     "checkpoint of this node's log a peer co-signed "
                                     "(entries)", labels=["signer"])
        for signer, size in sorted(sizes.items()):
            cosigned.add_metric([signer], size)
        yield cosigned
        largest = max(sizes.values(), default=0)
        last = audit.since(largest - 2, limit=1) if largest else []
        if last:
            yield _gauge("concilium_audit_last_cosigned_entry_timestamp_seconds",
                         "Time of the newest entry covered by a co-signed checkpoint",
                         _unix(last[0].time))
        status = self.context.audit_status
        if status is not None:
            with self._lock:
                if status is not self._status:
                    self._status, self._status_seen = status, time.time()
            yield _gauge("concilium_audit_verified", "1 if the last check of this node's "
                         "log against its peers' checkpoints passed, 0 if it failed",
                         1.0 if status.get("verified") else 0.0)
            yield _gauge("concilium_audit_last_verification_timestamp_seconds",
                         "When the metrics first saw the outcome of the last such check "
                         "(within one scrape of it)", self._status_seen)


class NodeMetrics:
    """One node app's registry, with its :class:`NodeCollector`."""

    def __init__(self, context: Any) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.collector = NodeCollector(context)
        self.registry.register(self.collector)

    def render(self) -> bytes:
        """The Prometheus text exposition format (version 0.0.4)."""
        return generate_latest(self.registry)


_CREATING = threading.Lock()


def of_app(state: Any, context: Any,
           make: Callable[[Any], NodeMetrics] = NodeMetrics) -> NodeMetrics:
    """The metrics of an app (its ``app.state``), made at the first scrape."""
    with _CREATING:
        metrics: NodeMetrics | None = getattr(state, "metrics", None)
        if metrics is None or metrics.collector.context is not context:
            metrics = make(context)
            state.metrics = metrics
        return metrics
