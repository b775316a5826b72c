"""Plan kinds as types: what every plan says about itself.

A plan is made by :func:`concilium.query.planner.plan_query`, the one place
that decides which kind a query is; everything else asks the plan:

* *partial aggregates*: owners' per-group statistics, combined on shares
  (:mod:`~concilium.query.aggregate_plan`);
* *row statistics*: the same plus shared rows (quantiles, distinct counts,
  dominance);
* *secret-key groups*: shared rows sorted by a secret key
  (:mod:`~concilium.query.secret_groups`);
* *join*: tables of different owners joined on a secret key, of any
  multiplicity, optionally grouped (:mod:`~concilium.query.join`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd

from concilium.data.dataset import Dataset
from concilium.data.session import Session
from concilium.governance.policy import OutputPolicy
from concilium.query.catalog import TableEntry
from concilium.query.sql import Query

__all__ = ["QueryPlan"]


class QueryPlan(ABC):
    """One query, planned: its kind, tables, columns, inputs, execution, explanation."""

    query: Query

    @property
    @abstractmethod
    def kind(self) -> str:
        """One of :data:`concilium.query.aggregates.KINDS`."""

    @property
    @abstractmethod
    def tables(self) -> Mapping[str, TableEntry]:
        """The tables the plan reads, with their owners."""

    @property
    def owners(self) -> tuple[int, ...]:
        """Every party that contributes data."""
        return tuple(sorted({o for entry in self.tables.values() for o in entry.owners}))

    @property
    @abstractmethod
    def shares_rows(self) -> bool:
        """Whether owners share rows (each owner's row count is then revealed)."""

    @abstractmethod
    def columns(self) -> set[str]:
        """The columns the query uses (for ``allowed_columns``)."""

    @abstractmethod
    def local_inputs(self, datasets: Mapping[str, Dataset], party: int
                     ) -> Iterator[tuple[np.ndarray, bool]]:
        """What owner ``party`` secret-shares, in the order the compute parties expect
        it: (values, fixed point) pairs computed alone over its own data."""

    @abstractmethod
    def run(self, session: Session, datasets: Mapping[str, Dataset],
            to: Sequence[int] | None, policy: OutputPolicy) -> pd.DataFrame | None:
        """Run on this compute party; the result frame on recipients, else None."""

    @abstractmethod
    def explain(self, who: Callable[[int], str], recipients: Sequence[int] | None) -> str:
        """What runs where, what is shared and what is revealed to whom."""

    def refuse_rules(self, policy: OutputPolicy) -> None:  # noqa: B027 (no refusals)
        """Refuse (at planning, with PolicyViolation) a rule this very plan cannot
        enforce, beyond what its kind declares (:mod:`concilium.query.rules`)."""
