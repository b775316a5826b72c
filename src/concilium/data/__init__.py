"""Layer 5: secret columns and tables, the types people use.

Imports :mod:`concilium.ring`, :mod:`concilium.net`, :mod:`concilium.mpc` and
:mod:`concilium.ops`.
"""

from concilium.data.outside import OutsideParty
from concilium.data.secret_array import SecretArray
from concilium.data.session import Session

__all__ = ["OutsideParty", "SecretArray", "Session"]
