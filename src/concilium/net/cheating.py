"""A channel that cheats: the test harness for malicious security.

:class:`CheatingChannel` wraps one party's real channel and tampers with one
message it sends (the ``at``-th, counting from zero), in one of the ways an
actively corrupted party could:

| kind | what the cheater does to that message |
|---|---|
| ``flip`` | flips the lowest bit of one word (the first, or the last with ``word=-1``) |
| ``offset`` | adds one to one word (the deferred-check attack of eprint 2026/234) |
| ``replay`` | sends instead a payload it sent earlier, under the current tag |
| ``drop`` | withholds it |
| ``reorder`` | swaps the first two words that differ |
| ``equivocate`` | sends this peer a different value (fresh random words) than the others get |

Everything else passes through untouched, and every send is logged
(:attr:`CheatingChannel.sent`), so a test can count a primitive's messages in
an honest run and then inject into each of them. :func:`concilium.testing.run_with_cheater`
runs a program with one party behind this channel.

A tampering that changes nothing (a replay of an identical payload, a reorder
of equal words) is reported in :attr:`CheatingChannel.tampered` as False, so
the harness does not count it as an injection.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt

from concilium.errors import ConfigurationError
from concilium.net.channel import Channel, TrafficSnapshot

__all__ = ["INJECTIONS", "CheatingChannel", "Injection", "Sent"]

InjectionKind = Literal["flip", "offset", "replay", "drop", "reorder", "equivocate"]
INJECTIONS: tuple[InjectionKind, ...] = ("flip", "offset", "replay", "drop", "reorder",
                                         "equivocate")


@dataclass(frozen=True)
class Injection:
    """Tamper with the ``at``-th message this party sends, in the way ``kind`` says."""

    kind: InjectionKind
    at: int
    word: int = 0

    def __post_init__(self) -> None:
        if self.kind not in INJECTIONS:
            raise ConfigurationError(f"unknown injection {self.kind!r}; choose one of "
                                     f"{', '.join(INJECTIONS)}")


@dataclass(frozen=True)
class Sent:
    """One message the cheating party sent (as it was meant to be)."""

    peer: int
    tag: int
    array: npt.NDArray[np.generic] = field(repr=False)


class CheatingChannel(Channel):
    """One party's channel, tampering with one message (see the module docstring)."""

    def __init__(self, inner: Channel, injection: Injection | None = None) -> None:
        self._inner = inner
        self.injection = injection
        self.sent: list[Sent] = []
        self.tampered: bool | None = None  # None: the message was never reached

    @property
    def party(self) -> int:
        return self._inner.party

    @property
    def parties(self) -> int:
        return self._inner.parties

    def receive(self, peer: int, tag: int) -> npt.NDArray[np.generic]:
        return self._inner.receive(peer, tag)

    def stats(self) -> TrafficSnapshot:
        return self._inner.stats()

    def abort(self, reason: str) -> None:
        abort = getattr(self._inner, "abort", None)
        if abort is not None:
            abort(reason)

    def __getattr__(self, name: str) -> object:
        """Everything else (a TLS channel's ``finish``, ``close``, ``session``) is the
        wrapped channel's."""
        if name == "_inner":
            raise AttributeError(name)
        return getattr(self._inner, name)

    def send(self, peer: int, tag: int, array: npt.NDArray[np.generic]) -> None:
        honest = np.array(array, copy=True)
        index = len(self.sent)
        self.sent.append(Sent(peer, tag, honest))
        if self.injection is None or index != self.injection.at:
            self._inner.send(peer, tag, array)
            return
        if self.injection.kind == "drop":
            self.tampered = True
            return
        forged = self._forge(honest, peer, tag)
        self.tampered = forged is not None
        self._inner.send(peer, tag, honest if forged is None else forged)

    def _forge(self, honest: npt.NDArray[np.generic], peer: int,
               tag: int) -> npt.NDArray[np.generic] | None:
        """The tampered payload, or None if this kind cannot change this message."""
        assert self.injection is not None
        kind, word = self.injection.kind, self.injection.word
        flat = np.array(honest, copy=True).reshape(-1)
        if kind == "replay":
            earlier = [s.array for s in reversed(self.sent[:-1])
                       if s.tag != tag and s.array.dtype == honest.dtype]
            earlier.sort(key=lambda a: a.size != honest.size)  # same size first: stealthier
            for array in earlier:
                if not np.array_equal(array, honest):
                    return array
            return None
        if flat.size == 0:
            return None
        if kind in ("flip", "offset"):
            units = flat.view(np.uint8) if flat.dtype.itemsize == 1 else flat
            position = word % units.size
            if kind == "flip":
                units[position] ^= units.dtype.type(1)
            else:
                units[position] += units.dtype.type(1)
            return flat.reshape(honest.shape)
        if kind == "reorder":
            differs = np.flatnonzero(flat != flat[0])
            if differs.size == 0:
                return None
            other = int(differs[0])
            flat[0], flat[other] = flat[other], flat[0]
            return flat.reshape(honest.shape)
        random = np.frombuffer(os.urandom(flat.nbytes), dtype=flat.dtype)  # equivocate
        return random.reshape(honest.shape)
