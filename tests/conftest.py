"""Shared test settings and helpers."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, settings

from concilium.data import Session
from concilium.testing import run_parties

# Each example runs three party threads; keep the count moderate and never time out.
settings.register_profile(
    "concilium",
    max_examples=int(os.environ.get("CONCILIUM_EXAMPLES", "40")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile("concilium")


def run3(program: Callable[[Session], Any], **options: Any) -> Any:
    """Run ``program`` on three parties and return party 0's result."""
    return run_parties(3, program, **options)[0]
