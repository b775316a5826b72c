"""The protocol registry: every backend, what it runs on, what it tolerates, and
how to construct it.

Everything above this layer constructs backends through the registry, never
by class: :func:`concilium.testing.run_parties`, :func:`concilium.simulate`,
the launcher, a node's job and :class:`concilium.data.OutsideParty` ask
``protocol(name).create_backend(channel, compute_parties)``. A consortium
manifest names its protocol; validating the manifest refuses a protocol that
is not implemented yet, or one that is not deployable (``reference``).

| protocol | compute parties | corruptions tolerated | security |
|---|---|---|---|
| ``rep3`` | 3 | 1 | semi-honest, honest majority |
| ``rep4`` | 4 | 1 | malicious with abort, one of four |
| ``additive`` | 2 or more | all but one | semi-honest, dishonest majority |
| ``reference`` | 1 or more | none | NO SECURITY: plaintext, for tests |

Capabilities (:data:`CAPABILITIES`) say what a backend supports; the query
planner refuses a query that needs one the consortium's protocol lacks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from concilium.errors import ConfigurationError
from concilium.mpc.additive import Additive, AdditiveOutsideParty
from concilium.mpc.backend import CAPABILITIES, Backend
from concilium.mpc.correlations import CorrelationSource, GeneratedCorrelations
from concilium.mpc.outside import OutsideClient
from concilium.mpc.reference import Reference, ReferenceOutsideParty
from concilium.mpc.rep3 import Rep3
from concilium.mpc.rep3_outside import Rep3OutsideParty
from concilium.mpc.rep4 import Rep4
from concilium.mpc.rep4_outside import Rep4OutsideParty
from concilium.net.channel import Channel

__all__ = ["CAPABILITIES", "PROTOCOLS", "ProtocolSpec", "ThreatModel", "deployable",
           "implemented", "protocol"]

BackendFactory = Callable[[Channel, Sequence[int]], Backend]
OutsideFactory = Callable[[Channel, Sequence[int]], OutsideClient]
CorrelationFactory = Callable[[Backend], CorrelationSource]


def generated_correlations(backend: Backend) -> CorrelationSource:
    """Correlations made with the backend's own primitives (the default)."""
    return GeneratedCorrelations(backend=backend)


@dataclass(frozen=True)
class ThreatModel:
    """What a result's security rests on (stated with every result and logged)."""

    protocol: str
    compute_parties: int
    corruptions: int
    security: str
    broken_by: str

    def describe(self) -> str:
        return (f"{self.protocol}: {self.security}; {self.compute_parties} compute parties, "
                f"tolerates {self.corruptions} corrupted; broken if {self.broken_by}")

    def as_dict(self) -> dict[str, Any]:
        return {"protocol": self.protocol, "compute_parties": self.compute_parties,
                "corruptions": self.corruptions, "security": self.security,
                "broken_by": self.broken_by, "summary": self.describe()}


@dataclass(frozen=True)
class ProtocolSpec:
    """One protocol of the registry."""

    name: str
    minimum_parties: int
    maximum_parties: int | None
    security: str
    corruptions: Callable[[int], int]
    broken_by: Callable[[int], str]
    paper: str
    backend: BackendFactory | None = None  # None: planned, not implemented yet
    outside: OutsideFactory | None = None
    capabilities: frozenset[str] = field(default_factory=frozenset)
    deployable: bool = True  # False: tests only, refused by manifests and nodes
    correlations: CorrelationFactory = generated_correlations

    @property
    def implemented(self) -> bool:
        return self.backend is not None

    @property
    def default_parties(self) -> int:
        return self.minimum_parties

    @property
    def parties_wanted(self) -> str:
        """How many compute parties it runs on, in words ("3", "at least 2")."""
        high = self.maximum_parties
        return (str(self.minimum_parties) if high == self.minimum_parties else
                f"at least {self.minimum_parties}" if high is None else
                f"{self.minimum_parties} to {high}")

    def parties_problem(self, count: int) -> str | None:
        """Why ``count`` compute parties cannot run this protocol (None if they can)."""
        high = self.maximum_parties
        if count >= self.minimum_parties and (high is None or count <= high):
            return None
        return f"protocol {self.name} runs on {self.parties_wanted} compute parties, not {count}"

    def threat_model(self, parties: int) -> ThreatModel:
        return ThreatModel(self.name, parties, self.corruptions(parties), self.security,
                           self.broken_by(parties))

    def _usable(self, parties: Sequence[int]) -> None:
        if not self.implemented:
            raise ConfigurationError(f"protocol {self.name} is not implemented yet; "
                                     f"implemented: {', '.join(implemented())}")
        problem = self.parties_problem(len(parties))
        if problem:
            raise ConfigurationError(problem)

    def create_backend(self, channel: Channel, compute_parties: Sequence[int]) -> Backend:
        """This party's backend (runs the protocol's set-up, e.g. key agreement)."""
        self._usable(compute_parties)
        assert self.backend is not None
        return self.backend(channel, compute_parties)

    def create_correlations(self, backend: Backend) -> CorrelationSource:
        """The correlation source of a backend of this protocol (offline/online)."""
        return self.correlations(backend)

    def create_outside(self, channel: Channel, compute_parties: Sequence[int]
                       ) -> OutsideClient:
        """The side of an owner or recipient that is not a compute party."""
        self._usable(compute_parties)
        if self.outside is None or "outside_parties" not in self.capabilities:
            raise ConfigurationError(f"protocol {self.name} has no outside parties")
        return self.outside(channel, compute_parties)


def _rep3(channel: Channel, parties: Sequence[int]) -> Backend:
    return Rep3(channel, parties)


def _rep3_outside(channel: Channel, parties: Sequence[int]) -> OutsideClient:
    return Rep3OutsideParty(channel, parties)


def _rep4(channel: Channel, parties: Sequence[int]) -> Backend:
    return Rep4(channel, parties)


def _rep4_outside(channel: Channel, parties: Sequence[int]) -> OutsideClient:
    return Rep4OutsideParty(channel, parties)


def _additive(channel: Channel, parties: Sequence[int]) -> Backend:
    return Additive(channel, parties)


def _additive_outside(channel: Channel, parties: Sequence[int]) -> OutsideClient:
    return AdditiveOutsideParty(channel, parties)


def _reference(channel: Channel, parties: Sequence[int]) -> Backend:
    return Reference(channel, parties)


def _reference_outside(channel: Channel, parties: Sequence[int]) -> OutsideClient:
    return ReferenceOutsideParty(channel, parties)


PROTOCOLS: dict[str, ProtocolSpec] = {
    "rep3": ProtocolSpec(
        "rep3", 3, 3, "semi-honest, honest majority", lambda n: 1,
        lambda n: "any 2 of the 3 compute parties pool what they see",
        "Araki, Furukawa, Lindell, Nof, Ohara, CCS 2016; ABY3 (Mohassel, Rindal, CCS 2018)",
        _rep3, _rep3_outside, Rep3.capabilities),
    "rep4": ProtocolSpec(
        "rep4", 4, 4, "malicious with abort, one of four", lambda n: 1,
        lambda n: "any 2 of the 4 compute parties collude",
        "Fantastic Four (Dalskov, Escudero, Nof, USENIX Security 2021), checks in the same "
        "round as MP-SPDZ's Rep4 since commit 85307a1 (after eprint 2026/234)",
        _rep4, _rep4_outside, Rep4.capabilities),
    "additive": ProtocolSpec(
        "additive", 2, None, "semi-honest, dishonest majority", lambda n: n - 1,
        lambda n: f"all {n} compute parties pool what they see",
        "additive sharing; Beaver triples from Chou-Orlandi base OTs, IKNP extension and "
        "Gilboa products; known-MSB truncation (Cheetah, USENIX Security 2022); "
        "secret shuffle by oblivious switching networks (Mohassel-Sadeghian, EUROCRYPT 2013)",
        _additive, _additive_outside, Additive.capabilities),
    "reference": ProtocolSpec(
        "reference", 1, None, "NONE (plaintext reference backend for tests)", lambda n: 0,
        lambda n: "anyone looks: every party sees every value",
        "none: SPU's REF2K idea", _reference, _reference_outside, Reference.capabilities,
        deployable=False),
}


def protocol(name: str) -> ProtocolSpec:
    """The registry entry of ``name``, or a ConfigurationError listing the known ones."""
    try:
        return PROTOCOLS[name]
    except KeyError:
        raise ConfigurationError(f"unknown protocol {name!r}; known: "
                                 f"{', '.join(PROTOCOLS)}") from None


def implemented() -> list[str]:
    """The protocols that have a backend (the reference backend among them)."""
    return [name for name, spec in PROTOCOLS.items() if spec.implemented]


def deployable() -> list[str]:
    """The protocols a consortium may run."""
    return [name for name, spec in PROTOCOLS.items() if spec.implemented and spec.deployable]
