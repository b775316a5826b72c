"""Owners and recipients that are not compute parties (the outsourced model).

An outside owner runs its part of a plan alone (DuckDB over its own rows) and
secret-shares exactly what a compute party owning the same data would input,
in the same order: partial statistics, shared rows for quantiles, distinct
counts and dominance, rows for secret-key groups, and each side of a join it
holds. An outside recipient receives the result (:mod:`concilium.query.delivery`).

The compute parties run :func:`concilium.query.execute.run_plan` with
``to`` naming the outside recipients; every outside party of the run calls
:func:`take_part` with the same plan.

Reveals: what the plan reveals (each owner's row count where rows are shared);
the result to the recipients only.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import pandas as pd

from concilium.data.dataset import Dataset
from concilium.data.outside import OutsideParty
from concilium.data.session import encode_values
from concilium.query.delivery import receive_delivery, result_frame
from concilium.ring.fixed import FixedPointCodec

__all__ = ["check_inputs", "contribute_inputs", "local_inputs", "receive_result", "take_part"]


def local_inputs(plan: Any, datasets: Mapping[str, Dataset], party: int
                 ) -> Iterator[tuple[np.ndarray, bool]]:
    """What owner ``party`` secret-shares for ``plan``, in the order the compute
    parties expect it: (values, fixed point) pairs, computed alone over its own data.
    Owners check these before any run (the ranges must fit the codec) and outside
    owners contribute them."""
    return plan.local_inputs(datasets, party)


def contribute_inputs(outside: OutsideParty, plan: Any, datasets: Mapping[str, Dataset]
                      ) -> None:
    """Secret-share this outside owner's part of ``plan`` into the compute parties.

    Reveals: this owner's row count to the compute parties where the plan shares rows.
    """
    for values, fixed in local_inputs(plan, datasets, outside.party):
        outside.contribute(values, fixed=fixed)


def check_inputs(plan: Any, datasets: Mapping[str, Dataset], party: int,
                 codec: FixedPointCodec | None = None) -> None:
    """Encode what ``party`` would share, without sharing it: a value that does not
    fit (a partial sum beyond the fixed-point range, say) raises the error the run
    would raise, before anyone is asked to approve."""
    codec = codec or FixedPointCodec()
    for values, fixed in local_inputs(plan, datasets, party):
        encode_values(codec, values, fixed)


def receive_result(outside: OutsideParty, plan: Any) -> pd.DataFrame:
    """The result, at an outside recipient (the compute parties revealed it to it).

    Reveals: the result to this party only.
    """
    return result_frame(plan, receive_delivery(outside), outside.threat_model)


def take_part(outside: OutsideParty, plan: Any, datasets: Mapping[str, Dataset],
              recipient: bool) -> pd.DataFrame | None:
    """Everything an outside party does in a run: contribute, then receive."""
    contribute_inputs(outside, plan, datasets)
    return receive_result(outside, plan) if recipient else None
