"""The curated public API: what ``import concilium`` offers, and nothing by accident."""

from __future__ import annotations

import importlib

import pytest

import concilium

EXPECTED = [
    "ApprovalMissing",
    "BadFrame",
    "Column",
    "ColumnType",
    "ConciliumError",
    "ConfigurationError",
    "Dataset",
    "DatasetError",
    "FixedPointCodec",
    "FixedPointRangeError",
    "InputError",
    "OutsideParty",
    "PeerUnavailable",
    "PolicyViolation",
    "ProtocolAbort",
    "QueryError",
    "RingRangeError",
    "Schema",
    "SecretArray",
    "Session",
    "SessionMismatch",
    "ShapeMismatch",
    "UnsupportedQuery",
    "__version__",
    "run_parties",
    "simulate",
]


def test_top_level_all_is_exactly_the_curated_list() -> None:
    assert sorted(concilium.__all__) == EXPECTED


@pytest.mark.parametrize("module", ["concilium", "concilium.ring", "concilium.net",
                                    "concilium.mpc", "concilium.ops", "concilium.data",
                                    "concilium.errors", "concilium.query",
                                    "concilium.evaluation"])
def test_every_exported_name_exists(module: str) -> None:
    imported = importlib.import_module(module)
    for name in imported.__all__:
        assert hasattr(imported, name), f"{module}.{name}"


def test_every_error_is_a_concilium_error() -> None:
    errors = importlib.import_module("concilium.errors")
    for name in errors.__all__:
        assert issubclass(getattr(errors, name), concilium.ConciliumError)
    assert issubclass(concilium.InputError, ValueError)
    assert issubclass(concilium.PeerUnavailable, concilium.ProtocolAbort)
