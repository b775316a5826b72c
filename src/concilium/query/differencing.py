"""The differencing check: a query whose rows differ from an earlier released query's
rows by at least one and fewer than ``k`` is refused before its result is
computed.

Two releases over row sets that differ by one patient give away that patient
(COUNT over everyone, then over everyone but one); so do a small set padded
with its large complement (a tracker) and a dataset re-queried after one row
was added. Under ``min_difference = k`` (an output policy setting) each owner
keeps, for every query released on its dataset, the query's row predicate
(its ``WHERE``; see :class:`concilium.governance.budget.Ledger`). For a new
query the check runs first, on shares, before any statistic is input:

1. each owner, alone in DuckDB over its own rows, counts the rows of the new
   query (``n_o``) and, for each earlier release ``j`` it took part in, the rows
   on which the two predicates disagree (``d_oj``: the size of the symmetric
   difference of the two row sets, within its rows);
2. it secret-shares ``[n_o, d_o1, ...]`` and the releases' identifiers; the
   identifiers are opened to the compute parties (which computations were
   released, and who owned data in them, is public in the consortium);
3. the compute parties add the counts per release over the owners, locally: an
   owner that did not take part in release ``j`` had no rows in it, so its
   difference is its ``n_o``;
4. they compare each total with ``k`` on shares and open one bit: whether any
   earlier release differs by at least one and fewer than ``k`` rows. Then every
   party refuses (:class:`~concilium.errors.PolicyViolation`) or goes on. The
   same row set again (a different aggregate over the same rows, or a repeat) is
   no differencing: what repeats reveal together is bounded by the budget.

What this does not stop: combinations of many queries (the difference of
unions, sums of overlapping sets), each pair of which differs by ``k`` or
more rows. Sets of ``k`` rows are protected from exact pairwise differencing
only; the privacy budget (with ``dp``) is what bounds what any number of
queries reveal together. The refusal is itself one exact bit about the rows
(whether a predicate's row set lands 1 to ``k - 1`` rows from an earlier
one's): an analyst who knows all rows but one can ask whether that one
matches. So a refusal is a release: it is charged (never refunded) and
counts toward the analyst's rate limit, and under ``dp`` this bit is outside
the epsilon guarantee (noising it would need noise on every difference, with
a sensitivity growing with the number of releases, which would make the check
meaningless).

Reveals: each owner's number of earlier releases and their identifiers; one
bit (whether the query is refused).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from concilium.data.dataset import Dataset
from concilium.data.secret_array import SecretArray
from concilium.data.session import Session
from concilium.errors import PolicyViolation
from concilium.query.local import run_local

__all__ = ["check_difference", "difference_inputs", "predicate_of", "release_number"]


def predicate_of(query: Any) -> str:
    """A query's row predicate over its table's columns (DuckDB SQL)."""
    return "TRUE" if query.where is None else query.where.sql(dialect="duckdb")


def release_number(computation: str) -> int:
    """A release's identifier as a ring integer: the first 60 bits of its id."""
    return int(computation[:15], 16)


def _counts(dataset: Dataset, predicate: str,
            releases: Sequence[tuple[str, str]]) -> np.ndarray:
    """``[n, d_1, ...]`` over this owner's rows, in one DuckDB pass."""
    new = f"coalesce(({predicate}), FALSE)"
    columns = [f"COUNT(*) FILTER (WHERE {new}) AS n"] + [
        f"COUNT(*) FILTER (WHERE {new} <> coalesce(({old}), FALSE)) AS d{j}"
        for j, (_, old) in enumerate(releases)]
    table = run_local(f"SELECT {', '.join(columns)} FROM data", dataset)
    return np.array([int(table.column(k)[0].as_py() or 0) for k in range(table.num_columns)],
                    dtype=np.int64)


def difference_inputs(predicate: str, dataset: Dataset) -> Iterator[tuple[np.ndarray, bool]]:
    """What an owner shares for the check of a release over the rows ``predicate``
    selects (DuckDB SQL, :func:`predicate_of`), in order: its counts, then the
    releases' identifiers."""
    releases = list(dataset.releases)
    yield _counts(dataset, predicate, releases), False
    yield np.array([release_number(c) for c, _ in releases], dtype=np.int64), False


def check_difference(session: Session, predicate: str, owners: Sequence[int],
                     dataset: Dataset | None, minimum: int) -> None:
    """Steps 1 to 4 on this compute party for a release over the rows ``predicate``
    selects; raises PolicyViolation on every party when those rows are within
    ``minimum`` rows of an earlier release's.

    Reveals: the releases' identifiers; one bit."""
    mine = list(difference_inputs(predicate, dataset)) if session.party in owners and \
        dataset else None
    counts: list[SecretArray] = []
    numbers: list[np.ndarray] = []
    for owner in owners:
        local = mine if owner == session.party else None
        counts.append(session.input(owner, local[0][0] if local else None))
        shared = session.input(owner, local[1][0] if local else None)
        numbers.append(np.atleast_1d(np.asarray(shared.reveal(), dtype=np.int64)))
    every = sorted({int(n) for ids in numbers for n in ids})
    if not every:
        return
    totals: SecretArray | None = None
    for count, ids in zip(counts, numbers, strict=True):
        position = {int(n): k + 1 for k, n in enumerate(ids)}
        # a release this owner has no part in: its whole new row set differs
        pick = np.array([position.get(n, 0) for n in every], dtype=np.intp)
        part = count[pick]
        totals = part if totals is None else totals + part
    assert totals is not None
    # 0 < D < k: identical row sets are no differencing (repeats are the budget's)
    tests = SecretArray.stack([totals, totals]) < np.array([[minimum], [1]])
    close = (tests[0] - tests[1]).sum()
    session.opened = True  # the bit is about the data: a refusal is not refunded
    if int(np.asarray((close > 0).reveal())):
        raise PolicyViolation(f"min_difference: the query's rows differ from an earlier "
                              f"released query's rows by at least 1 and fewer than "
                              f"{minimum} (the "
                              "differencing check); it is refused before anything is "
                              "computed")
