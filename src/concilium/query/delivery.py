"""Delivering a result: opening its columns to the recipients, compute parties or
outside parties alike.

The compute parties hold the result's columns: public ones (group keys) and
secret ones (aggregates, each with a secret "is defined" flag where SQL's
NULL is possible). :func:`deliver` opens the secret columns to the
recipients only. An outside recipient (a node that does not compute) first
receives the result's layout from every compute party (column names and
kinds, the public columns, the suppressed cells and their rules: all of it
public to the compute parties already; it checks that they agree), then one
share of each secret column from each compute party
(:func:`receive_delivery`).

Reveals: the secret columns' values and defined flags to the recipients; the
layout (which every compute party already knows) to outside recipients.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sqlglot import exp

from concilium.data.outside import OutsideParty
from concilium.data.secret_array import SecretArray
from concilium.data.session import Session
from concilium.errors import ProtocolAbort, UnsupportedQuery
from concilium.mpc.protocols import ThreatModel

__all__ = ["Delivery", "OutputColumn", "column_values", "deliver", "frame_of", "ordered_frame",
           "plain", "present", "receive_delivery", "result_frame"]


@dataclass(frozen=True)
class OutputColumn:
    """One column of a result: a secret array (with its defined flags, if NULL is
    possible) or public values, one per released row."""

    name: str
    value: Any
    known: SecretArray | None = None
    categories: tuple[str, ...] | None = None  # the value is a 1-based position in these
    decimals: int | None = None  # the value is exact to this many decimals

@dataclass(frozen=True)
class Delivery:
    """What a recipient gets: the columns (in order), the suppressed cells, and the
    public group keys the result was already ordered by."""

    columns: dict[str, np.ndarray]
    suppressed: list[dict[str, Any]]
    public_order: set[str]


def plain(value: Any) -> Any:
    """A JSON value for public data (numpy scalars, NaN as None, nested dicts)."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def present(values: np.ndarray, categories: Sequence[str] | None, decimals: int | None
            ) -> np.ndarray:
    """Opened values as the recipient sees them: category codes as their names (NULL
    where undefined), exact decimals rounded to their places."""
    if categories is not None:
        names = np.array([None, *categories], dtype=object)
        codes = np.asarray(values, dtype=np.float64)
        out = np.full(codes.shape, None, dtype=object)
        valid = ~np.isnan(codes)
        out[valid] = names[np.clip(codes[valid].astype(np.int64), 0, len(categories))]
        return out
    if decimals is not None and np.asarray(values).dtype.kind == "f":
        return np.round(values, decimals)
    return values


def column_values(opened: Any, known: Any) -> np.ndarray:
    """Opened values with SQL NULL (NaN) where the defined flag is 0."""
    array = np.atleast_1d(np.asarray(opened))
    if known is None:
        return array
    mask = np.atleast_1d(np.asarray(known)).astype(bool)
    if mask.all():
        return array
    result = array.astype(np.float64) if array.dtype.kind in "iuf" else array.astype(object)
    result[~mask] = np.nan
    return result


def _masked(session: Session, columns: Sequence[OutputColumn]) -> dict[str, SecretArray]:
    """Each secret column that can be NULL times its defined flag, in one round: a NULL
    cell opens as 0, so what was computed there is never opened."""
    nullable = [c for c in columns if isinstance(c.value, SecretArray) and c.known is not None]
    if not nullable:
        return {}
    values = [c.value for c in nullable]
    flags = [c.known for c in nullable if c.known is not None]
    product = session.backend.mul(np.stack([v.shares for v in values], axis=1),
                                  np.stack([f.shares for f in flags], axis=1))
    return {c.name: SecretArray(session, product[:, k], c.value.fractional_bits)
            for k, c in enumerate(nullable)}


def deliver(session: Session, columns: Sequence[OutputColumn], rows: int,
            to: Sequence[int] | None, suppressed: Sequence[dict[str, Any]] = (),
            public_order: Sequence[str] = ()) -> Delivery | None:
    """Open ``columns`` to the recipients ``to`` (every compute party if None); the
    result on a compute recipient, None on other compute parties.

    Reveals: each secret column (0 where it is NULL) and its defined flags to the
    recipients, and to outside recipients the public layout (names, kinds, public
    columns, the suppressed cells and their rules).
    """
    outside = [t for t in (to or ()) if t not in session.compute_parties]
    if outside:
        layout = {"rows": rows, "suppressed": plain(list(suppressed)),
                  "public_order": sorted(public_order),
                  "columns": [_layout(column) for column in columns]}
        session.send_public(outside, json.dumps(layout, sort_keys=True).encode())
    recipient = to is None or session.party in to
    output: dict[str, np.ndarray] = {}
    masked = _masked(session, columns)
    for column in columns:
        if isinstance(column.value, SecretArray):
            opened = masked.get(column.name, column.value).reveal(to)
            known = None if column.known is None else column.known.reveal(to)
        else:
            opened, known = column.value, None
        if recipient:
            output[column.name] = present(column_values(opened, known), column.categories,
                                          column.decimals)
    if not recipient:
        return None
    return Delivery(output, list(suppressed), set(public_order))


def _layout(column: OutputColumn) -> dict[str, Any]:
    if isinstance(column.value, SecretArray):
        return {"name": column.name, "secret": True, "fixed": column.value.is_fixed,
                "known": column.known is not None, "decimals": column.decimals,
                "categories": None if column.categories is None else list(column.categories)}
    return {"name": column.name, "secret": False, "values": plain(list(column.value))}


def receive_delivery(outside: OutsideParty) -> Delivery:
    """An outside recipient's side of :func:`deliver`.

    Reveals: the result to this party only.
    """
    try:
        layout = json.loads(outside.receive_public())
        rows, specs = int(layout["rows"]), list(layout["columns"])
    except (ValueError, KeyError, TypeError):
        raise ProtocolAbort("the compute parties sent a malformed result layout") from None
    output: dict[str, np.ndarray] = {}
    for spec in specs:
        if spec["secret"]:
            opened = outside.receive(fixed=bool(spec["fixed"]))
            known = outside.receive() if spec["known"] else None
        else:
            opened, known = np.array(spec["values"], dtype=object), None
        values = column_values(opened, known)
        if spec["secret"]:
            values = present(values, spec.get("categories"), spec.get("decimals"))
        if values.shape != (rows,):
            raise ProtocolAbort("a result column does not have the announced number of rows")
        output[str(spec["name"])] = values
    return Delivery(output, list(layout["suppressed"]), set(layout["public_order"]))


def frame_of(delivery: Delivery) -> pd.DataFrame:
    """The delivered columns as a DataFrame (before any ORDER BY on secret values)."""
    return pd.DataFrame(delivery.columns)


def result_frame(plan: Any, delivery: Delivery, threat_model: ThreatModel) -> pd.DataFrame:
    """The recipient's DataFrame: the delivered columns in the plan's order, the
    suppressed cells in ``attrs["suppressed"]`` and what the result's security rests
    on in ``attrs["threat_model"]``."""
    frame = ordered_frame(plan, frame_of(delivery), delivery.public_order)
    frame.attrs["suppressed"] = delivery.suppressed
    frame.attrs["threat_model"] = threat_model.as_dict()
    if getattr(plan, "noise", None) is not None:
        from concilium.query.privacy import annotate

        frame = annotate(plan, frame, threat_model)
    return frame


def ordered_frame(plan: Any, frame: pd.DataFrame, public: set[str]) -> pd.DataFrame:
    """Apply ORDER BY to the revealed frame unless it orders by ``public`` group keys
    only (those were ordered before anything was revealed)."""
    private = [(e, d) for e, d in plan.query.order_by
               if not (isinstance(e, exp.Column) and e.name.lower() in public)]
    if private:
        keys = [e.sql(dialect="duckdb") if e.sql(dialect="duckdb") in frame else e.name
                for e, _ in plan.query.order_by]
        missing = [k for k in keys if k not in frame]
        if missing:
            raise UnsupportedQuery(f"ORDER BY {missing[0]} must name a selected column",
                                   construct=missing[0])
        frame = frame.sort_values(keys, ascending=[not d for _, d in plan.query.order_by],
                                  kind="stable", na_position="last").reset_index(drop=True)
    return frame
