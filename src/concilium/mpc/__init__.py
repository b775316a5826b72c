"""Layer 3: protocol backends, each providing the few primitives of
:class:`~concilium.mpc.backend.Backend`.

* ``rep3``: semi-honest 3-party replicated sharing (the default).

Imports only :mod:`concilium.ring` and :mod:`concilium.net`.
"""

from concilium.mpc.backend import TRUNCATION_MODES, Backend, Shares, Truncation
from concilium.mpc.rep3 import Rep3
from concilium.mpc.rep3_outside import Rep3OutsideParty

__all__ = ["TRUNCATION_MODES", "Backend", "Rep3", "Rep3OutsideParty", "Shares", "Truncation"]
