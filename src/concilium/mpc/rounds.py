"""Run role-asymmetric protocols on slices of an array, several at once.

Some protocols give the parties unequal work (a helper role, a receiver that
does more). Splitting the array into one slice per role (three for ``rep3``,
four for ``rep4``) and rotating the roles per slice makes every party do the
same total work within a single operation.

A protocol is written as a generator per slice: it sends with
:meth:`SliceContext.send` and, once per communication round, yields the list
of :class:`Receive` requests for that round; it gets the arrays back in the
same order and finally returns. :func:`run_slices` advances all slices round
by round: in round ``r`` every slice first receives what it asked for and then
sends its round ``r + 1`` messages. Every party therefore sends round ``r``
messages of all slices before any round ``r + 1`` message, and a message's tag,
``base + (round * slices + slice) * 2 + index``, grows on every link in sending
order, as the mailbox requires. Deadlock-free: round ``r`` receives only need
messages the peers sent while finishing round ``r - 1``.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass

import numpy as np

from concilium.mpc.replicated import ReplicatedParty
from concilium.ring.arithmetic import RingArray

__all__ = ["MESSAGES_PER_ROUND", "Receive", "SliceContext", "SliceTask", "run_slices",
           "slice_bounds", "tags_needed"]

#: At most this many messages per (round, slice) on one link.
MESSAGES_PER_ROUND = 2
#: Below this many elements per slice, one slice (no rotation) is cheaper.
MINIMUM_SLICE = 4096


@dataclass(frozen=True)
class Receive:
    """A request for one ring array of ``shape`` from ``peer`` under ``tag``."""

    peer: int
    tag: int
    shape: tuple[int, ...]


SliceTask = Generator[list[Receive], list[RingArray], None]


@dataclass(frozen=True)
class SliceContext:
    """Where one slice runs: its role, index range, and tag arithmetic."""

    backend: ReplicatedParty
    role: int
    start: int
    stop: int
    slice_index: int
    slices: int
    base_tag: int

    @property
    def size(self) -> int:
        return self.stop - self.start

    @property
    def stream_tag(self) -> int:
        """A tag naming this slice's PRG streams (unique per slice and operation)."""
        return self.tag(0, 0)

    def tag(self, round_index: int, index: int) -> int:
        return self.base_tag + ((round_index * self.slices) + self.slice_index) * (
            MESSAGES_PER_ROUND) + index

    def send(self, peer: int, round_index: int, index: int, array: np.ndarray) -> None:
        self.backend.send(peer, self.tag(round_index, index), array)

    def expect(self, peer: int, round_index: int, index: int,
               shape: tuple[int, ...] | None = None) -> Receive:
        return Receive(peer, self.tag(round_index, index), shape or (self.size,))


def tags_needed(rounds: int, roles: int) -> int:
    """Tags to reserve for a protocol of ``rounds`` rounds rotating ``roles`` roles
    (one slice per role)."""
    return rounds * roles * MESSAGES_PER_ROUND


def slice_bounds(count: int, roles: int) -> list[tuple[int, int]]:
    """Split ``range(count)`` into one near-equal range per role, or one range if the
    slices would be small."""
    if count < roles * MINIMUM_SLICE:
        return [(0, count)]
    edges = [count * k // roles for k in range(roles + 1)]
    return [(edges[k], edges[k + 1]) for k in range(roles)]


def _advance(task: SliceTask, arrays: list[RingArray] | None) -> list[Receive] | None:
    """Run a slice to its next round; None once it has finished."""
    try:
        return next(task) if arrays is None else task.send(arrays)
    except StopIteration:
        return None


def run_slices(backend: ReplicatedParty, tasks: list[SliceTask]) -> None:
    """Drive the slice generators round by round until all have returned."""
    waiting = [(task, requests) for task in tasks
               if (requests := _advance(task, None)) is not None]
    while waiting:
        still: list[tuple[SliceTask, list[Receive]]] = []
        for task, requests in waiting:
            arrays = [backend.receive_ring(r.peer, r.tag, r.shape) for r in requests]
            following = _advance(task, arrays)
            if following is not None:
                still.append((task, following))
        waiting = still
