"""Layer 4: operations written once over the backend primitives (comparison,
conversions, division, nonlinear functions, shuffle, sort).

Imports only :mod:`concilium.ring`, :mod:`concilium.net` and :mod:`concilium.mpc`.
"""

__all__: list[str] = []
