"""The documented accuracy of the fixed-point functions (16 fraction bits).

Each :class:`Accuracy` states a function's domain and an error bound of the
form ``|computed - exact| <= units * 2^-16 + relative * |exact|``: a few units
in the last place of the output (what fixed point can represent) plus a
relative part for large outputs. ``docs/error_table.py`` measures the errors
over each domain and prints them next to these bounds (``docs/ops-library.md``
shows the table); the tests assert the bounds on fresh samples.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ACCURACY", "Accuracy"]


@dataclass(frozen=True)
class Accuracy:
    """A function's stated domain and error bound."""

    function: str
    domain: str
    low: float
    high: float
    units: float  # units in the last place, 2^-16
    relative: float
    note: str = ""

    def bound(self, exact: float) -> float:
        return self.units * 2.0**-16 + self.relative * abs(exact)


ACCURACY: tuple[Accuracy, ...] = (
    Accuracy("divide", "abs(a), abs(b) < 2^31, abs(a / b) < 2^31", -(2.0**31), 2.0**31, 4, 2.0**-22,
             "b = 0 gives 0"),
    Accuracy("reciprocal", "2^-16 <= abs(x) < 2^31", 2.0**-16, 2.0**31, 2, 2.0**-22,
             "x = 0 gives 0"),
    Accuracy("sqrt", "0 <= x < 2^31", 0.0, 2.0**31, 2, 2.0**-22),
    Accuracy("inverse_sqrt", "2^-16 <= x < 2^31", 2.0**-16, 2.0**31, 2, 2.0**-22,
             "x = 0 gives 0"),
    Accuracy("exp", "-16 <= x <= 21.48", -16.0, 21.48, 3, 2.0**-22,
             "0 below -10.39; e^21.48 is the largest result"),
    Accuracy("log", "2^-16 <= x < 2^31", 2.0**-16, 2.0**31, 2, 2.0**-22),
    Accuracy("sigmoid", "-40 <= x <= 40", -40.0, 40.0, 3, 0.0),
)
