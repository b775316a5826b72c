"""What each page shows, as plain data (the templates only lay it out): who may see
which computation, the computation's review (what the approver signs), the
inbox, a result's table, and the audit log's page.

Who sees what (every refusal raises :class:`~concilium.errors.AccessDenied`,
which the pages show as a clear page, never a stack trace):

- an **approver** sees the computations this node approves (it owns data in
  them, or is the evaluation's vendor) and decides on them;
- an **analyst** sees the computations they proposed, and their results when
  this node is a recipient;
- a **recipient** sees only the completed computations whose results this node
  receives, and their results;
- an **admin** sees every computation this node knows, but cannot approve.
"""

from __future__ import annotations

import datetime
import difflib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from concilium.errors import AccessDenied, ConciliumError
from concilium.governance.approval import verify_approval
from concilium.governance.consortium import Manifest
from concilium.governance.policy import OutputPolicy
from concilium.governance.users import User
from concilium.mpc.protocols import protocol
from concilium.node import control
from concilium.node.context import NodeContext
from concilium.node.routes import computations as api
from concilium.node.store import ComputationRecord

__all__ = ["PAGE_SIZE", "Review", "age", "audit_page", "can_see", "inbox", "phase",
           "policy_rules", "review", "result_view"]

#: Rows per page of the inbox and of the audit log.
PAGE_SIZE = 50


def can_see(context: NodeContext, user: User, record: ComputationRecord) -> bool:
    """Whether ``user`` may open this computation's page (see the module docstring)."""
    spec = record.spec
    if user.role == "admin":
        return True
    if user.role == "approver":
        return context.name in spec.approvers
    if user.role == "analyst":
        return spec.analyst == user.name
    if user.role == "recipient":
        return context.name in spec.recipients and record.status == "completed"
    return False  # a monitor reads metrics only


def _require_visible(context: NodeContext, user: User, record: ComputationRecord) -> None:
    if not can_see(context, user, record):
        raise AccessDenied(f"{user.name!r} ({user.role}) may not see computation "
                           f"{record.id[:12]}...: " + {
                               "approver": "this node is not one of its approvers",
                               "analyst": "you did not propose it",
                               "recipient": "this node does not receive its result, or it "
                                            "has not completed"}.get(
                                                user.role, "this role sees no computation"))


def age(created: str, now: datetime.datetime | None = None) -> str:
    """How long ago, in words a person reads at a glance (``3 min``, ``2 h``, ``5 d``)."""
    try:
        then = datetime.datetime.fromisoformat(created)
    except ValueError:
        return created
    if then.tzinfo is None:
        then = then.replace(tzinfo=datetime.UTC)
    seconds = max(0.0, ((now or datetime.datetime.now(datetime.UTC)) - then).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{int(seconds // size)} {unit}"
    return f"{int(seconds)} s"


def phase(record: ComputationRecord) -> str:
    """Where a computation is, in words (its status and progress)."""
    if record.status == "running":
        return ("connecting to the other nodes over mutual TLS" if record.progress < 0.3 else
                "sharing inputs and computing on secret shares")
    return {"proposed": "waiting for approvals",
            "pending": "waiting for approvals",
            "approved": "approved: starting as soon as every party is reachable",
            "completed": "completed: the result is with its recipients",
            "failed": "failed: nothing was released",
            "refused": "refused by a node: it will not run"}.get(record.status, record.status)


@dataclass(frozen=True)
class InboxRow:
    id: str
    what: str
    analyst: str
    status: str
    age: str
    waiting_for_me: bool


def _what(record: ComputationRecord) -> str:
    spec = record.spec
    if spec.evaluation:
        return (f"evaluate a model of {spec.evaluation.get('vendor')} on "
                f"{spec.evaluation.get('dataset')}")
    return spec.query


def inbox(context: NodeContext, user: User, page: int = 0) -> dict[str, Any]:
    """The computations this user sees, newest first, a page at a time; for approvers
    those waiting for this node's decision first."""
    records = [r for r in context.store.computations() if can_see(context, user, r)]
    waiting = set()
    if user.role == "approver" and context.manifest is not None:
        for record in records:
            if record.status in ("proposed", "pending"):
                pending = control.pending_approvers(
                    record.spec, context.store.approvals(record.id), context.manifest)
                if context.name in pending:
                    waiting.add(record.id)
    records.sort(key=lambda r: (r.id in waiting, r.created), reverse=True)
    pages = max(1, math.ceil(len(records) / PAGE_SIZE))
    page = min(max(page, 0), pages - 1)
    shown = records[page * PAGE_SIZE:(page + 1) * PAGE_SIZE]
    return {"rows": [InboxRow(r.id, _what(r), r.spec.analyst, r.status, age(r.created),
                              r.id in waiting) for r in shown],
            "page": page, "pages": pages, "total": len(records), "waiting": len(waiting)}


def policy_rules(policy: OutputPolicy, evaluation: bool) -> list[tuple[str, str]]:
    """Each rule of the effective policy that is set, and what it will do."""
    rules = []
    cells = "class, calibration bin and ROC band" if evaluation else "released cell"
    if policy.min_cohort:
        rules.append(("min_cohort", f"every {cells} needs at least {policy.min_cohort} rows; "
                      "smaller ones are suppressed (decided on shares, one bit opened each)"))
    if policy.rounding:
        rules.append(("rounding", f"released counts are rounded to multiples of "
                      f"{policy.rounding:g} on shares"))
    if policy.allowed_aggregates is not None:
        rules.append(("allowed_aggregates", "only " +
                      ", ".join(sorted(policy.allowed_aggregates)) + " may be computed"))
    if policy.allowed_columns is not None:
        rules.append(("allowed_columns", "only the columns " +
                      ", ".join(sorted(policy.allowed_columns)) + " may be read"))
    if policy.allowed_recipients is not None:
        rules.append(("allowed_recipients", "results go only to " +
                      ", ".join(sorted(policy.allowed_recipients))))
    if policy.metrics_only:
        rules.append(("metrics_only", "no per-record output (no GROUP BY a secret key)"))
    if policy.dominance is not None:
        n, k = policy.dominance
        rules.append(("dominance", f"a sum whose {n} largest contributions exceed {k:g}% of "
                      "it is suppressed"))
    if policy.dp_rho is not None:
        rules.append(("dp", f"Skellam noise made in MPC, rho={policy.dp_rho:g} zCDP per "
                      "computation, charged to each dataset's privacy budget"))
    if policy.min_difference:
        rules.append(("min_difference", f"refused if its rows differ from an earlier "
                      f"release's by 1 to {policy.min_difference - 1} rows"))
    return rules


@dataclass(frozen=True)
class Review:
    """Everything an approver signs for, and what has happened since."""

    record: ComputationRecord
    shown: dict[str, Any]
    threat: str
    rules: list[tuple[str, str]]
    approvals: list[dict[str, Any]]
    differences: list[dict[str, Any]]
    may_decide: bool
    decided: str | None
    result: dict[str, Any] | None
    owners: dict[str, list[str]]
    phase: str
    elapsed: str


def _approvals(record: ComputationRecord, context: NodeContext, manifest: Manifest | None
               ) -> list[dict[str, Any]]:
    rows = []
    for approval in context.store.approvals(record.id):
        verified = "not checked (no manifest)"
        if manifest is not None:
            try:
                verify_approval(approval, manifest)
                verified = "valid signature"
            except ConciliumError as error:
                verified = f"INVALID: {error}"
        rows.append({"node": approval.node, "approver": approval.approver,
                     "decision": approval.decision, "time": approval.time,
                     "comment": approval.comment, "verified": verified,
                     "valid": verified == "valid signature"})
    return rows


def _text_of(record: ComputationRecord) -> list[str]:
    """What differs between computations, as lines: the query or job, the
    recipients, the policy."""
    spec = record.spec
    job = (spec.query.splitlines() if not spec.evaluation else
           [f"{key}: {spec.evaluation[key]}" for key in sorted(spec.evaluation) if key != "model"]
           + [f"model: {spec.evaluation['model']['sha256']}"])
    policy = [f"policy {key}: {value}" for key, value in sorted(spec.policy.items())]
    return [*job, f"recipients: {', '.join(spec.recipients)}", *policy]


def _differences(context: NodeContext, record: ComputationRecord, limit: int = 3
                 ) -> list[dict[str, Any]]:
    """How this computation differs from the latest earlier approved ones on the same
    datasets (what was signed before)."""
    datasets = set(record.spec.datasets)
    earlier = [r for r in context.store.computations()
               if r.id != record.id and r.created <= record.created and
               r.status in ("approved", "running", "completed") and
               datasets & set(r.spec.datasets)]
    out = []
    for other in sorted(earlier, key=lambda r: r.created, reverse=True)[:limit]:
        lines = list(difflib.unified_diff(_text_of(other), _text_of(record), "earlier",
                                          "this", lineterm="", n=1))
        out.append({"id": other.id, "status": other.status, "created": other.created,
                    "diff": lines[2:] if lines else [], "same": not lines})
    return out


def review(context: NodeContext, user: User, identifier: str) -> Review:
    """A computation's page, for a user who may see it."""
    record = context.store.computation(identifier)
    _require_visible(context, user, record)
    shown = api.show(context, identifier)
    manifest = context.manifest
    threat = "no manifest"
    if manifest is not None:
        threat = protocol(record.spec.protocol).threat_model(
            len(manifest.compute_parties)).describe()
    decided = None
    mine = [a for a in context.store.approvals(identifier) if a.node == context.name]
    if mine:
        decided = mine[-1].decision
    may_decide = (user.role == "approver" and context.name in record.spec.approvers and
                  record.status in ("proposed", "pending"))
    result = None
    if record.status == "completed" and context.name in record.spec.recipients and \
            user.role in ("recipient", "analyst"):
        result = result_view(context, user, identifier)
    owners = {name: list(record.spec.owners(name)) for name in record.spec.datasets}
    return Review(record, shown, threat, policy_rules(
        OutputPolicy.from_mapping(record.spec.policy), bool(record.spec.evaluation)),
        _approvals(record, context, manifest), _differences(context, record), may_decide,
        decided, result, owners, phase(record), age(record.created))


def result_view(context: NodeContext, user: User, identifier: str) -> dict[str, Any]:
    """A result as the page shows it: its table with suppressed cells marked and why,
    noise intervals where there is noise, and what can be charted."""
    answer = api.result(context, identifier, user)
    columns, rows = list(answer["columns"]), [list(r) for r in answer["rows"]]
    privacy = answer.get("privacy") or {}
    intervals = {name: noisy["interval95"] for name, noisy in
                 (privacy.get("columns") or {}).items()}
    evaluation = columns == ["metric", "value"]
    return {"columns": columns, "rows": rows, "suppressed": answer.get("suppressed", []),
            "privacy": privacy, "intervals": intervals, "evaluation": evaluation,
            "threat": (answer.get("threat_model") or {}).get("summary"),
            "roc": _roc(rows) if evaluation else None,
            "bars": None if evaluation else _bars(columns, rows)}


def _roc(rows: Sequence[Sequence[Any]]) -> list[list[float]] | None:
    for name, value in rows:
        if name == "roc_curve" and isinstance(value, list):
            return [[float(v) for v in point] for point in value]
    return None


def _bars(columns: list[str], rows: list[list[Any]]) -> dict[str, Any] | None:
    """A bar chart of a grouped result: the first column's groups, the first numeric
    column's values (suppressed cells are not in the rows, so not drawn)."""
    if len(columns) < 2 or not rows:
        return None
    for index in range(1, len(columns)):
        values = [row[index] for row in rows]
        if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            return {"label": columns[index], "groups": [str(row[0]) for row in rows],
                    "values": [float(v) for v in values]}
    return None


def audit_page(context: NodeContext, user: User, *, kind: str | None = None,
               computation: str | None = None, page: int = 0) -> dict[str, Any]:
    """A page of the node's audit log, newest first, filtered by kind and computation;
    the log's verification status and its co-signed checkpoints."""
    context.users.require(user, "read_audit")
    total, entries = context.audit.page(offset=page * PAGE_SIZE, limit=PAGE_SIZE, kind=kind,
                                        computation=computation)
    pages = max(1, math.ceil(total / PAGE_SIZE))
    return {"entries": entries, "total": total, "page": page, "pages": pages,
            "kinds": context.audit.kinds(), "kind": kind or "", "computation": computation or "",
            "checkpoints": context.audit.checkpoints()[-20:],
            "verification": context.audit_status}
