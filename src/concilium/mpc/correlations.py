"""Correlated randomness behind one interface, with an offline/online split.

Protocols that multiply with precomputed correlations (the ``additive``
backend's Beaver triples from oblivious transfer, say) ask for them through a
:class:`CorrelationSource`: requests are made in batches *ahead* of the
online phase (:meth:`CorrelationSource.prepare`, one generation per kind and
size, vectorized) and taken, in order, while the plan runs
(:meth:`CorrelationSource.take`). A request that was not prepared is made on
the spot and counted as such (:attr:`CorrelationSource.made_online`), so a
benchmark can tell whether a plan's offline phase was complete. Sources are
objects handed to a backend; there is no global configuration (unlike
CrypTen's ``TupleProvider`` settings). References: SPU's
``libspu/mpc/semi2k/beaver/beaver_interface.h``, CrypTen's ``TupleProvider``.

Kinds (:class:`Correlation`), each a tuple of share arrays:

* ``multiplication``: ``(a, b, c)`` with ``c = a * b``, elementwise (Beaver 1991);
* ``matrix``: ``(A, B, C)`` with ``C = A @ B`` for a (left, right) pair of shapes;
* ``and``: boolean words ``(a, b, c)`` with ``c = a & b``;
* ``truncation``: ``(r, s)`` with ``r`` uniform in Z_2^64 and ``s = r >> d``
  (logical shift), for probabilistic truncation (SecureML, Mohassel-Zhang 2017);
* ``random_bit``: ``(b_arithmetic, b_boolean)``, one uniform bit shared both ways;
* ``permutation``: a secret permutation of ``shape[0]`` items (the backend's own
  object, for :meth:`Backend.permute`).

:class:`GeneratedCorrelations` makes every kind with the backend's own
primitives (random values, products, bit injection): the correlation source
of any backend that has no cheaper one. ``rep3`` does not consume triples: its
products, truncations and shuffles draw their masks from the replicated PRG
keys (:mod:`concilium.mpc.randomness`), at the costs documented in
:mod:`concilium.mpc.rep3`, and its source serves the generic kinds when asked.

Reveals: nothing; every tuple stays secret-shared.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from concilium.errors import ConfigurationError
from concilium.mpc.backend import Backend, Shares
from concilium.ring.arithmetic import RING_DTYPE

__all__ = ["Correlation", "CorrelationSource", "GeneratedCorrelations", "Request"]


class Correlation(enum.StrEnum):
    MULTIPLICATION = "multiplication"
    MATRIX = "matrix"
    AND = "and"
    TRUNCATION = "truncation"
    RANDOM_BIT = "random_bit"
    PERMUTATION = "permutation"


@dataclass(frozen=True)
class Request:
    """One correlation: its kind, the value shape (for ``matrix`` the left shape, with
    ``right`` the right one), and the truncation bits."""

    kind: Correlation
    shape: tuple[int, ...]
    bits: int = 0
    right: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.kind is Correlation.TRUNCATION and not 0 < self.bits < 64:
            raise ConfigurationError("a truncation pair needs 1..63 bits")
        if self.kind is Correlation.MATRIX and (len(self.shape) != 2 or len(self.right) != 2
                                                 or self.shape[1] != self.right[0]):
            raise ConfigurationError("a matrix triple needs shapes (m, k) and (k, n)")
        if any(d < 0 for d in (*self.shape, *self.right)):
            raise ConfigurationError("shapes cannot be negative")


@dataclass
class CorrelationSource(ABC):
    """Correlations for one party of one session: prepare in batches, take in order.

    Every compute party must prepare and take the same requests in the same order
    (SPMD), as with every other protocol step."""

    prepared: dict[Request, deque[Any]] = field(default_factory=dict)
    made_offline: int = 0
    made_online: int = 0

    def prepare(self, requests: Sequence[Request]) -> None:
        """Make ``requests`` now, ahead of the online phase: the requests of one kind,
        truncation and shape family are made by one vectorized generation."""
        groups: dict[tuple[Correlation, int, tuple[int, ...]], list[Request]] = {}
        for request in requests:
            key = (request.kind, request.bits, request.right if request.kind is
                   Correlation.MATRIX else ())
            groups.setdefault(key, []).append(request)
        for batch in groups.values():
            for request, made in zip(batch, self._make_batch(batch), strict=True):
                self.prepared.setdefault(request, deque()).append(made)
            self.made_offline += len(batch)

    def take(self, request: Request) -> Any:
        """The next prepared correlation for ``request`` (made on the spot if none)."""
        waiting = self.prepared.get(request)
        if waiting:
            return waiting.popleft()
        self.made_online += 1
        return self._make_batch([request])[0]

    def _make_batch(self, batch: Sequence[Request]) -> list[Any]:
        """Make ``batch`` (one kind and family) in one generation, then split it."""
        kind = batch[0].kind
        if kind in (Correlation.MATRIX, Correlation.PERMUTATION):
            return [self.make(request) for request in batch]
        sizes = [int(np.prod(r.shape, dtype=np.int64)) for r in batch]
        whole = self.make(Request(kind, (sum(sizes),), batch[0].bits))
        edges = np.cumsum([0, *sizes])
        return [tuple(part[:, edges[k]:edges[k + 1]].reshape((part.shape[0], *r.shape))
                      for part in whole) for k, r in enumerate(batch)]

    @abstractmethod
    def make(self, request: Request) -> Any:
        """Generate one correlation (the protocol-specific part)."""


@dataclass
class GeneratedCorrelations(CorrelationSource):
    """Every kind made with the backend's own primitives (a dealer-free fallback that
    costs what those primitives cost: one product per triple, 64 bit injections per
    truncation pair)."""

    backend: Backend | None = None

    def make(self, request: Request) -> Any:
        backend = self.backend
        if backend is None:
            raise ConfigurationError("a generated correlation source needs its backend")
        shape = request.shape
        if request.kind is Correlation.MULTIPLICATION:
            a, b = backend.random(shape), backend.random(shape)
            return a, b, backend.mul(a, b)
        if request.kind is Correlation.AND:
            a, b = backend.random(shape, boolean=True), backend.random(shape, boolean=True)
            return a, b, backend.and_(a, b)
        if request.kind is Correlation.MATRIX:
            a, b = backend.random(shape), backend.random(request.right)
            return a, b, backend.matmul(a, b)
        if request.kind is Correlation.RANDOM_BIT:
            words = backend.and_public(backend.random(shape, boolean=True),
                                       np.ones((), dtype=RING_DTYPE))
            return backend.bit_inject(words), words
        if request.kind is Correlation.TRUNCATION:
            return self._truncation_pair(shape, request.bits)
        return backend.new_permutation(shape[0] if shape else 0)

    def _truncation_pair(self, shape: tuple[int, ...], bits: int) -> tuple[Shares, Shares]:
        """``r = sum_i 2^i b_i`` over 64 shared random bits and ``r >> d`` from the same
        bits: exact, from bit injections only."""
        backend = self.backend
        assert backend is not None
        words = backend.random((64, *shape), boolean=True)
        lowest = backend.and_public(words, np.ones((), dtype=RING_DTYPE))
        arithmetic = backend.bit_inject(lowest)  # (components, 64, *shape)
        powers = (np.uint64(1) << np.arange(64, dtype=RING_DTYPE)).reshape(
            (64,) + (1,) * len(shape))
        shifted = np.zeros_like(powers)
        shifted[bits:] = powers[:64 - bits]
        r = backend.mul_public(arithmetic, powers).sum(axis=1, dtype=RING_DTYPE)
        s = backend.mul_public(arithmetic, shifted).sum(axis=1, dtype=RING_DTYPE)
        return r, s
