"""Manifest amendments: how the consortium changes, signed by whoever the change needs.

A manifest (:mod:`concilium.governance.consortium`) changes only by an
amendment. An amendment names the hash of the manifest it amends (its *base*),
carries the whole new manifest and a reason, and is identified by the SHA-256
of its canonical JSON. Members sign that identifier with their Ed25519 signing
keys as the *base* manifest lists them. :func:`classify` compares base and new
manifest and decides whose signatures the change needs (:func:`required_signers`):

- **rotation** (one party's TLS certificate and/or signing key changes, nothing
  else): the rotating party itself, under its *old* signing key, so the new key
  is announced by the key everyone already trusts;
- **revocation** (a party's key changes, or the party is removed, and the
  amendment says ``revoke``): every member except that party, because its key
  may be in an attacker's hands;
- **membership** (anything else: a party added or removed, its addresses or
  roles changed, the protocol, name or approval rule changed): every current
  member.

:func:`apply` refuses an amendment whose base is not the current manifest, whose
new manifest is invalid, whose signatures are forged, or which lacks a required
signature. It names the missing members. The new manifest has another hash, and
every computation spec names the hash of the manifest it was approved under
(:func:`concilium.governance.proposal.check_spec` refuses another consortium's
spec). So every computation approved under the old manifest must be proposed
and approved again.

Reveals: nothing secret; amendments are public to the consortium and logged.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from cryptography.hazmat.primitives.asymmetric import ed25519

from concilium.errors import ApprovalMissing, ConfigurationError
from concilium.governance.approval import signature_valid
from concilium.governance.consortium import Manifest, PartyEntry

__all__ = ["Amendment", "AmendmentSignature", "Change", "apply", "check_signature", "classify",
           "manifest_from_dict", "propose", "required_signers", "sign"]

Kind = Literal["rotation", "revocation", "membership"]


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def manifest_from_dict(data: Mapping[str, Any]) -> Manifest:
    """A manifest from its ``as_dict`` form (validated)."""
    try:
        head = data["consortium"]
        parties = tuple(PartyEntry(name=str(p["name"]), mpc_address=str(p["mpc_address"]),
                                   api_address=str(p["api_address"]),
                                   tls_fingerprint=str(p["tls_fingerprint"]),
                                   tls_certificate=str(p["tls_certificate"]),
                                   signing_key=str(p["signing_key"]),
                                   roles=tuple(str(r) for r in p["roles"]))
                        for p in data.get("party", []))
        return Manifest(str(head["name"]), str(head["protocol"]), parties,
                        str(head.get("approval", "dataset_owners")))
    except (KeyError, TypeError) as error:
        raise ConfigurationError(f"an amendment's manifest is missing {error}") from None


@dataclass(frozen=True)
class Amendment:
    """A proposed change: the manifest it amends (by hash), the new one, why, by whom,
    and whether it revokes a compromised key."""

    base: str
    manifest: dict[str, Any]
    reason: str
    proposer: str
    revoke: str = ""  # the party whose key is revoked (a revocation), or ""

    @property
    def identifier(self) -> str:
        return hashlib.sha256(_canonical(self.as_dict())).hexdigest()

    @property
    def new_manifest(self) -> Manifest:
        return manifest_from_dict(self.manifest)

    def as_dict(self) -> dict[str, Any]:
        return {"base": self.base, "manifest": self.manifest, "reason": self.reason,
                "proposer": self.proposer, "revoke": self.revoke}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Amendment:
        try:
            return cls(str(data["base"]), dict(data["manifest"]), str(data["reason"]),
                       str(data["proposer"]), str(data.get("revoke", "")))
        except (KeyError, TypeError) as error:
            raise ConfigurationError(f"malformed amendment: {error}") from None


@dataclass(frozen=True)
class AmendmentSignature:
    """A member's Ed25519 signature over an amendment's identifier."""

    amendment: str
    node: str
    signature: str

    def as_dict(self) -> dict[str, str]:
        return {"amendment": self.amendment, "node": self.node, "signature": self.signature}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AmendmentSignature:
        try:
            return cls(str(data["amendment"]), str(data["node"]), str(data["signature"]))
        except (KeyError, TypeError) as error:
            raise ConfigurationError(f"malformed amendment signature: {error}") from None


@dataclass(frozen=True)
class Change:
    """What an amendment changes, and whose signatures that needs."""

    kind: Kind
    parties: tuple[str, ...]  # the parties whose entries change (added, removed, edited)
    description: str


def propose(base: Manifest, new: Manifest, reason: str, proposer: str, *,
            revoke: str = "") -> Amendment:
    """An amendment of ``base`` to ``new`` (checked: it must change something)."""
    if new.hash == base.hash:
        raise ConfigurationError("the new manifest is the current one: nothing to amend")
    amendment = Amendment(base.hash, new.as_dict(), reason, proposer, revoke)
    classify(base, amendment)
    return amendment


def sign(amendment: Amendment, node: str, key: ed25519.Ed25519PrivateKey) -> AmendmentSignature:
    return AmendmentSignature(amendment.identifier, node,
                              key.sign(bytes.fromhex(amendment.identifier)).hex())


def classify(base: Manifest, amendment: Amendment) -> Change:
    """What the amendment changes (ConfigurationError for a revocation that does not
    change or remove the revoked party's keys)."""
    new = amendment.new_manifest
    before = {p.name: p for p in base.parties}
    after = {p.name: p for p in new.parties}
    added, removed = sorted(set(after) - set(before)), sorted(set(before) - set(after))
    edited = sorted(n for n in set(before) & set(after) if before[n] != after[n])
    keys_only = [n for n in edited if all(
        getattr(before[n], f) == getattr(after[n], f) for f in
        ("name", "mpc_address", "api_address", "roles"))]
    head_same = (base.name, base.protocol, base.approval) == (new.name, new.protocol,
                                                             new.approval)
    if amendment.revoke:
        target = amendment.revoke
        if target not in before:
            raise ConfigurationError(f"{target!r} is not a party; there is no key to revoke")
        if target not in removed and target not in keys_only:
            raise ConfigurationError(f"a revocation must replace {target}'s keys or remove "
                                     f"{target}")
        if [p for p in (*added, *removed, *edited) if p != target] or not head_same:
            raise ConfigurationError("a revocation changes the revoked party only")
        return Change("revocation", (target,), f"revoke the keys of {target}")
    if head_same and not added and not removed and len(edited) == 1 and keys_only:
        which = [name for field_name, name in (("tls_fingerprint", "TLS certificate"),
                                               ("signing_key", "signing key"))
                 if getattr(before[edited[0]], field_name) != getattr(after[edited[0]],
                                                                      field_name)]
        return Change("rotation", (edited[0],),
                      f"{edited[0]} rotates its {' and '.join(which) or 'TLS certificate'}")
    parts = ([f"add {', '.join(added)}"] if added else []) + (
        [f"remove {', '.join(removed)}"] if removed else []) + (
        [f"change {', '.join(edited)}"] if edited else []) + (
        [] if head_same else ["change the consortium's name, protocol or approval rule"])
    return Change("membership", tuple(sorted({*added, *removed, *edited})), "; ".join(parts))


def required_signers(base: Manifest, amendment: Amendment) -> tuple[str, ...]:
    """The members (of ``base``) who must sign it."""
    change = classify(base, amendment)
    if change.kind == "rotation":
        return change.parties
    members = tuple(p.name for p in base.parties)
    if change.kind == "revocation":
        return tuple(m for m in members if m not in change.parties)
    return members


def check_signature(base: Manifest, amendment: Amendment, signature: AmendmentSignature
                    ) -> None:
    """Refuse a signature that is not the named member's (under ``base``'s key)."""
    if signature.amendment != amendment.identifier:
        raise ApprovalMissing(f"{signature.node}'s signature is for another amendment")
    try:
        party = base.parties[base.index(signature.node)]
    except ConfigurationError:
        raise ApprovalMissing(f"{signature.node!r} is not a member of the consortium being "
                              "amended") from None
    if not signature_valid(party.signing_key, signature.signature,
                           bytes.fromhex(amendment.identifier)):
        raise ApprovalMissing(f"{signature.node}'s signature on amendment "
                              f"{amendment.identifier[:12]}... is forged or damaged (it must "
                              "be made with the key the current manifest lists)")


def apply(base: Manifest, amendment: Amendment, signatures: Iterable[AmendmentSignature]
          ) -> Manifest:
    """The amended manifest, if the amendment is for ``base`` and carries every
    required signature; otherwise ApprovalMissing (or ConfigurationError) naming why."""
    if amendment.base != base.hash:
        raise ApprovalMissing(f"amendment {amendment.identifier[:12]}... amends manifest "
                              f"{amendment.base[:12]}..., not the current one "
                              f"({base.hash[:12]}...): propose it again")
    new = amendment.new_manifest
    signed = set()
    for signature in signatures:
        check_signature(base, amendment, signature)
        signed.add(signature.node)
    missing = [m for m in required_signers(base, amendment) if m not in signed]
    if missing:
        raise ApprovalMissing(f"amendment {amendment.identifier[:12]}... "
                              f"({classify(base, amendment).description}) still needs the "
                              f"signature of {', '.join(missing)}")
    return new
