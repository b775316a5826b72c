"""The consortium manifest: who takes part, where they listen, how they are recognised.

One TOML file that every member holds an identical copy of::

    [consortium]
    name = "hospitals"
    protocol = "rep3"
    approval = "dataset_owners"   # or "all_owners"

    [[party]]
    name = "hospital-a"
    mpc_address = "127.0.0.1:7001"
    api_address = "127.0.0.1:8001"
    tls_fingerprint = "sha256:..."
    tls_certificate = "-----BEGIN CERTIFICATE-----..."
    signing_key = "ed25519:..."
    roles = ["data_owner", "compute"]

Roles: ``data_owner`` (contributes datasets), ``compute`` (holds shares and
runs the protocol), ``recipient`` (may receive results without either). A
data owner or recipient that does not compute takes part in runs as an
outside party.

The approval rule says whose approval a computation needs:
``dataset_owners`` (the default: the owners of the datasets it uses, each as
many approvers as its own dataset rules ask) or ``all_owners`` (every data
owner of the consortium, whether its data is used or not).

The protocol must be one the registry (:mod:`concilium.mpc.protocols`)
implements and allows in deployment; it says how many compute parties it
runs on.

Its canonical hash (SHA-256 of canonical JSON: sorted keys, no whitespace) is
part of every session id, so two nodes with different manifests cannot run a
computation together. Parties are indexed in manifest order; the compute
parties, in that order, are the protocol's parties 0, 1, 2, ...
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import tomli_w

from concilium.errors import ConfigurationError
from concilium.governance.identity import (
    NAME_PATTERN,
    NodeIdentity,
    certificate_fingerprint,
    parse_address,
)
from concilium.mpc.protocols import deployable, protocol

__all__ = [
    "APPROVAL_RULES",
    "ROLES",
    "Manifest",
    "PartyEntry",
    "add_party",
    "load_manifest",
    "save_manifest",
]

ROLES = ("data_owner", "compute", "recipient")
APPROVAL_RULES = ("dataset_owners", "all_owners")


@dataclass(frozen=True)
class PartyEntry:
    """One member of the consortium."""

    name: str
    mpc_address: str
    api_address: str
    tls_fingerprint: str
    tls_certificate: str
    signing_key: str
    roles: tuple[str, ...]

    @property
    def is_compute(self) -> bool:
        return "compute" in self.roles

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "mpc_address": self.mpc_address,
                "api_address": self.api_address, "tls_fingerprint": self.tls_fingerprint,
                "tls_certificate": self.tls_certificate, "signing_key": self.signing_key,
                "roles": list(self.roles)}


@dataclass(frozen=True)
class Manifest:
    """A validated consortium manifest (structure always; readiness on demand)."""

    name: str
    protocol: str
    parties: tuple[PartyEntry, ...] = ()
    approval: str = "dataset_owners"

    def __post_init__(self) -> None:
        _validate(self)

    def as_dict(self) -> dict[str, Any]:
        return {"consortium": {"name": self.name, "protocol": self.protocol,
                               "approval": self.approval},
                "party": [party.as_dict() for party in self.parties]}

    @property
    def data_owners(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.parties if "data_owner" in p.roles)

    def canonical_json(self) -> bytes:
        return json.dumps(self.as_dict(), sort_keys=True, separators=(",", ":"),
                          ensure_ascii=True).encode()

    @property
    def hash(self) -> str:
        """Hex SHA-256 of the canonical JSON form."""
        return hashlib.sha256(self.canonical_json()).hexdigest()

    @property
    def compute_parties(self) -> tuple[PartyEntry, ...]:
        return tuple(party for party in self.parties if party.is_compute)

    def index(self, name: str) -> int:
        """Network index of a party (its position in the manifest)."""
        for position, party in enumerate(self.parties):
            if party.name == name:
                return position
        raise ConfigurationError(f"{name!r} is not a party of consortium {self.name!r}; "
                                 f"parties: {', '.join(p.name for p in self.parties)}")

    def readiness_problems(self) -> list[str]:
        """Why this manifest cannot run its protocol yet (empty when ready)."""
        spec = protocol(self.protocol)
        count = len(self.compute_parties)
        if spec.parties_problem(count) is None:
            return []
        return [f"protocol {self.protocol} needs {spec.parties_wanted} compute parties; the "
                f"manifest has {count}"]

    def require_ready(self) -> None:
        problems = self.readiness_problems()
        if problems:
            raise ConfigurationError("; ".join(problems))


def _validate(manifest: Manifest) -> None:
    if not NAME_PATTERN.match(manifest.name):
        raise ConfigurationError(f"consortium name {manifest.name!r} must be lowercase letters, "
                                 "digits or hyphens")
    spec = protocol(manifest.protocol)  # names the known protocols if unknown
    if not spec.deployable:
        raise ConfigurationError(f"protocol {spec.name!r} is a plaintext test backend with no "
                                 f"security; a consortium cannot run it (choose one of "
                                 f"{', '.join(deployable())})")
    if not spec.implemented:
        raise ConfigurationError(f"protocol {spec.name!r} is not implemented yet; choose one "
                                 f"of {', '.join(deployable())}")
    if manifest.approval not in APPROVAL_RULES:
        raise ConfigurationError(f"unknown approval rule {manifest.approval!r}; choose one of "
                                 f"{', '.join(APPROVAL_RULES)}")
    seen: dict[str, dict[str, str]] = {"name": {}, "MPC address": {}, "API address": {},
                                       "TLS fingerprint": {}, "signing key": {}}
    for party in manifest.parties:
        _validate_party(party)
        for what, value in (("name", party.name), ("MPC address", party.mpc_address),
                            ("API address", party.api_address),
                            ("TLS fingerprint", party.tls_fingerprint),
                            ("signing key", party.signing_key)):
            if value in seen[what]:
                raise ConfigurationError(f"parties {seen[what][value]!r} and {party.name!r} "
                                         f"have the same {what} {value!r}")
            seen[what][value] = party.name


def _validate_party(party: PartyEntry) -> None:
    where = f"party {party.name!r}"
    if not NAME_PATTERN.match(party.name):
        raise ConfigurationError(f"{where}: invalid name")
    parse_address(party.mpc_address, f"{where} MPC address")
    parse_address(party.api_address, f"{where} API address")
    if not party.tls_certificate.strip():
        raise ConfigurationError(f"{where} has no TLS certificate")
    if certificate_fingerprint(party.tls_certificate) != party.tls_fingerprint:
        raise ConfigurationError(f"{where}: the TLS certificate does not match its fingerprint")
    if not party.signing_key.startswith("ed25519:") or len(party.signing_key) != 8 + 64:
        raise ConfigurationError(f"{where} has no valid Ed25519 signing key")
    try:
        bytes.fromhex(party.signing_key[8:])
    except ValueError:
        raise ConfigurationError(f"{where}: signing key is not hex") from None
    unknown = set(party.roles) - set(ROLES)
    if unknown or not party.roles:
        raise ConfigurationError(f"{where}: roles must be among {', '.join(ROLES)}, got "
                                 f"{', '.join(party.roles) or 'none'}")


def add_party(manifest: Manifest, identity: NodeIdentity, roles: tuple[str, ...]) -> Manifest:
    """A new manifest with the node added (validated)."""
    if any(party.name == identity.name for party in manifest.parties):
        raise ConfigurationError(f"{identity.name} is already a party of consortium "
                                 f"{manifest.name!r}")
    entry = PartyEntry(
        name=identity.name, mpc_address=str(identity.mpc_address),
        api_address=str(identity.api_address), tls_fingerprint=identity.tls_fingerprint,
        tls_certificate=identity.tls_certificate_pem,
        signing_key=identity.signing_public_key, roles=tuple(roles),
    )
    return replace(manifest, parties=(*manifest.parties, entry))


def load_manifest(path: Path | str) -> Manifest:
    """Read and validate a manifest file."""
    file = Path(path)
    if not file.exists():
        raise ConfigurationError(f"no manifest at {file}; create one with: concilium "
                                 "consortium create MANIFEST --name NAME --protocol rep3")
    try:
        document = tomllib.loads(file.read_text())
        head = document["consortium"]
        parties = tuple(
            PartyEntry(name=str(p["name"]), mpc_address=str(p["mpc_address"]),
                       api_address=str(p["api_address"]),
                       tls_fingerprint=str(p["tls_fingerprint"]),
                       tls_certificate=str(p["tls_certificate"]),
                       signing_key=str(p["signing_key"]),
                       roles=tuple(str(r) for r in p["roles"]))
            for p in document.get("party", [])
        )
        return Manifest(name=str(head["name"]), protocol=str(head["protocol"]), parties=parties,
                        approval=str(head.get("approval", "dataset_owners")))
    except tomllib.TOMLDecodeError as error:
        raise ConfigurationError(f"{file} is not valid TOML: {error}") from None
    except (KeyError, TypeError) as error:
        raise ConfigurationError(f"{file} is missing a required entry: {error}") from None


def save_manifest(manifest: Manifest, path: Path | str) -> None:
    Path(path).write_text(tomli_w.dumps(manifest.as_dict()))
