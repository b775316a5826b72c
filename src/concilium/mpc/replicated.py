"""What the helper modules of a replicated-sharing backend need of it.

``rep3`` (and later ``rep4``) keep their protocol bodies in small modules
(truncation, conversions, shuffles, the role rotation of :mod:`concilium.mpc.rounds`).
Those modules are typed against :class:`ReplicatedParty`, this small
structural interface, not against a backend class, so that the backend
imports its helpers and never the other way round.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import numpy.typing as npt

from concilium.mpc.backend import Shares
from concilium.mpc.randomness import ReplicatedRandomness
from concilium.ring.arithmetic import RingArray

__all__ = ["Messenger", "ReplicatedParty"]


class Messenger(Protocol):
    """Sends and receives the ring arrays of a protocol between compute parties."""

    def send(self, peer: int, tag: int, array: npt.NDArray[np.generic]) -> None: ...

    def receive_ring(self, peer: int, tag: int, shape: tuple[int, ...]) -> RingArray: ...


class ReplicatedParty(Messenger, Protocol):
    """One compute party of a replicated-sharing protocol, as its helpers see it."""

    @property
    def index(self) -> int:
        """This party's position among the compute parties (protocol order)."""
        ...

    @property
    def randomness(self) -> ReplicatedRandomness: ...

    def peer(self, offset: int) -> int:
        """Network index of the compute party ``index + offset`` (cyclically)."""
        ...

    def next_tag(self, count: int = 1) -> int: ...

    def mul(self, x: Shares, y: Shares) -> Shares: ...
