"""Layer 3: protocol backends, each providing the few primitives of
:class:`~concilium.mpc.backend.Backend`, constructed through the registry
(:mod:`concilium.mpc.protocols`).

* ``rep3``: semi-honest 3-party replicated sharing (the default);
* ``reference``: plaintext, NO SECURITY, for tests of the layers above.

Modules, in dependency order: ``backend`` (the interface and its contracts),
``outside`` (the outside-party interface), ``shares`` (share helpers),
``randomness`` (replicated PRG keys), ``replicated`` (what replicated helpers
need of a backend), ``rounds`` (role rotation), ``correlations`` (the
offline/online correlation interface), ``rep3`` and its helpers, ``reference``,
``protocols`` (the registry).

Imports only :mod:`concilium.ring` and :mod:`concilium.net`.
"""

from concilium.mpc.backend import CAPABILITIES, TRUNCATION_MODES, Backend, Shares, Truncation
from concilium.mpc.correlations import Correlation, CorrelationSource, Request
from concilium.mpc.outside import OutsideClient
from concilium.mpc.protocols import PROTOCOLS, ProtocolSpec, ThreatModel, protocol
from concilium.mpc.reference import Reference
from concilium.mpc.rep3 import Rep3
from concilium.mpc.rep3_outside import Rep3OutsideParty

__all__ = ["CAPABILITIES", "PROTOCOLS", "TRUNCATION_MODES", "Backend", "Correlation",
           "CorrelationSource", "OutsideClient", "ProtocolSpec", "Reference", "Rep3",
           "Rep3OutsideParty", "Request", "Shares", "ThreatModel", "Truncation", "protocol"]
