"""Run a plan on this compute party (every compute party calls it with the same
plan: SPMD; an owner also passes its own datasets).

Reveals: what the plan's kind reveals (see each kind's module); the result to
the recipients ``to`` only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd

from concilium.data.dataset import Dataset
from concilium.data.session import Session
from concilium.governance.policy import OutputPolicy
from concilium.query.plans import QueryPlan

__all__ = ["run_plan"]


def run_plan(session: Session, plan: QueryPlan, datasets: Mapping[str, Dataset],
             to: Sequence[int] | None = None,
             policy: OutputPolicy | None = None) -> pd.DataFrame | None:
    """Run ``plan``; the result frame on recipients, else None. ``policy``: the output
    policy enforced on secret shares; the frame's ``attrs["suppressed"]`` lists the
    cells it suppressed and why."""
    return plan.run(session, datasets, to, policy or OutputPolicy())
