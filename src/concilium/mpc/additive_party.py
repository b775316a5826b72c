"""The interface the ``additive`` helpers are typed against
(:mod:`concilium.mpc.additive_bits`, :mod:`concilium.mpc.oblivious_switching`), so
the backend imports its helpers and never the reverse."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from concilium.mpc.backend import Shares
from concilium.mpc.ot_triples import PairwiseOt
from concilium.net.channel import Channel
from concilium.ring.arithmetic import RingArray

__all__ = ["AdditiveParty"]


class AdditiveParty(Protocol):
    """One party of the ``additive`` protocol, as its helpers see it."""

    index: int
    peers: tuple[int, ...]

    @property
    def peer(self) -> int: ...

    @property
    def party(self) -> int: ...

    @property
    def channel(self) -> Channel: ...

    @property
    def compute_parties(self) -> tuple[int, ...]: ...

    @property
    def ot(self) -> PairwiseOt: ...

    def next_tag(self, count: int = 1) -> int: ...

    def dabits(self, count: int) -> tuple[RingArray, RingArray]: ...

    def reveal(self, x: Shares, to: Sequence[int] | None = None, *,
               boolean: bool = False) -> RingArray | None: ...
