"""Correlations made ahead of time and handed out once each, in order.

A :class:`Pool` holds batches of correlated arrays (a triple is three arrays, a
daBit two), element ``k`` of every array belonging to correlation ``k``.
:meth:`Pool.take` removes what it hands out, so a correlation is never used
twice; memory is what was made and not yet taken.
"""

from __future__ import annotations

import numpy as np

from concilium.ring.arithmetic import RingArray

__all__ = ["Pool"]


class Pool:
    """Batches of correlations, taken once each, in the order they were made."""

    def __init__(self, arity: int) -> None:
        self.arity = arity
        self.parts: list[tuple[RingArray, ...]] = []

    def size(self) -> int:
        return sum(p[0].size for p in self.parts)

    def add(self, batch: tuple[RingArray, ...]) -> None:
        self.parts.append(batch)

    def take(self, count: int) -> tuple[RingArray, ...] | None:
        """The next ``count`` correlations (None if fewer are left), removed."""
        if self.size() < count:
            return None
        taken: list[tuple[RingArray, ...]] = []
        needed = count
        while needed:
            first = self.parts[0]
            if first[0].size <= needed:
                taken.append(self.parts.pop(0))
                needed -= first[0].size
            else:  # split: the rest stays for later, never handed out twice
                taken.append(tuple(array[:needed] for array in first))
                self.parts[0] = tuple(array[needed:] for array in first)
                needed = 0
        if not taken:
            return tuple(np.zeros(0, dtype=np.uint64) for _ in range(self.arity))
        return tuple(np.concatenate([t[k] for t in taken]) for k in range(self.arity))
