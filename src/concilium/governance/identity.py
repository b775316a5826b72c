"""A node's identity: its TLS key and certificate, its Ed25519 signing key, node.toml.

``concilium init NODE_DIR --name hospital-a --mpc-address 127.0.0.1:7001``
creates::

    NODE_DIR/node.toml          name, addresses, certificate fingerprint, public signing key
    NODE_DIR/tls/node.crt       self-signed X.509, ECDSA P-256 (pinned by fingerprint)
    NODE_DIR/tls/node.key       its private key            (mode 0600)
    NODE_DIR/keys/signing.key   Ed25519 private key        (mode 0600)

The certificate is self-signed and marked as its own CA: consortium members
trust exactly the certificates listed in the manifest, each pinned by its
SHA-256 fingerprint. Keys come from ``cryptography`` (the OS CSPRNG); nothing
here is hand-rolled. Private keys are created with ``O_EXCL`` and mode 0600,
and an existing node is never overwritten.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

import tomli_w
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from concilium.errors import ConfigurationError

__all__ = [
    "Address",
    "NodeIdentity",
    "certificate_expiry",
    "certificate_fingerprint",
    "complete_rotation",
    "create_node",
    "load_node",
    "load_signing_key",
    "parse_address",
    "prepare_rotation",
    "previous_signing_keys",
]

NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
CERTIFICATE_YEARS = 10


@dataclass(frozen=True)
class Address:
    """A host and port, written ``host:port`` (``[v6]:port`` for IPv6)."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_address(text: str, what: str = "address") -> Address:
    """Parse ``host:port`` with a clear error."""
    match = re.fullmatch(r"\[(?P<v6>[0-9a-fA-F:.]+)\]:(?P<p1>\d+)|(?P<host>[^:\s]+):(?P<p2>\d+)",
                         text.strip())
    if not match:
        raise ConfigurationError(f"{what} {text!r} is not of the form HOST:PORT "
                                 "(e.g. 127.0.0.1:7001)")
    host = match.group("v6") or match.group("host")
    port = int(match.group("p1") or match.group("p2"))
    if not 1 <= port <= 65535:
        raise ConfigurationError(f"{what} {text!r}: port must be between 1 and 65535")
    return Address(host, port)


def certificate_fingerprint(pem: str | bytes) -> str:
    """``sha256:<hex>`` of a certificate's DER encoding."""
    data = pem.encode() if isinstance(pem, str) else pem
    try:
        certificate = x509.load_pem_x509_certificate(data)
    except ValueError as error:
        raise ConfigurationError(f"not a PEM certificate: {error}") from None
    der = certificate.public_bytes(serialization.Encoding.DER)
    return "sha256:" + hashlib.sha256(der).hexdigest()


@dataclass(frozen=True)
class NodeIdentity:
    """What ``node.toml`` says, plus where the key files are."""

    name: str
    directory: Path
    mpc_address: Address
    api_address: Address
    tls_fingerprint: str
    signing_public_key: str

    @property
    def tls_certificate_path(self) -> Path:
        return self.directory / "tls" / "node.crt"

    @property
    def tls_key_path(self) -> Path:
        return self.directory / "tls" / "node.key"

    @property
    def signing_key_path(self) -> Path:
        return self.directory / "keys" / "signing.key"

    @property
    def tls_certificate_pem(self) -> str:
        return self.tls_certificate_path.read_text()


def _write_private(path: Path, data: bytes) -> None:
    """Create a file readable by its owner only; refuse to replace an existing one."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)


def _self_signed(name: str, key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Concilium node")])
    now = datetime.datetime.now(datetime.UTC)
    usage = x509.KeyUsage(digital_signature=True, key_cert_sign=True, key_agreement=True,
                          content_commitment=False, key_encipherment=False,
                          data_encipherment=False, crl_sign=False, encipher_only=False,
                          decipher_only=False)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=365 * CERTIFICATE_YEARS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                              ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(key, hashes.SHA256())
    )


def create_node(directory: Path | str, name: str, mpc_address: str,
                api_address: str | None = None) -> NodeIdentity:
    """Create a node directory with fresh keys; refuses to overwrite an existing node."""
    root = Path(directory)
    if not NAME_PATTERN.match(name):
        raise ConfigurationError(
            f"node name {name!r} must be 1-63 lowercase letters, digits or hyphens, "
            "starting with a letter or digit (e.g. hospital-a)"
        )
    mpc = parse_address(mpc_address, "MPC address")
    api = parse_address(api_address, "API address") if api_address else Address(
        mpc.host, mpc.port + 1000 if mpc.port <= 64535 else mpc.port - 1000)
    if (root / "node.toml").exists() or (root / "tls").exists() or (root / "keys").exists():
        raise ConfigurationError(
            f"{root} already holds a node; refusing to overwrite its keys. Choose another "
            "directory, or remove this one if you really mean to discard that identity"
        )
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    tls_key = ec.generate_private_key(ec.SECP256R1())
    certificate = _self_signed(name, tls_key)
    signing_key = ed25519.Ed25519PrivateKey.generate()
    pkcs8 = serialization.PrivateFormat.PKCS8
    plain = serialization.NoEncryption()
    _write_private(root / "tls" / "node.key",
                   tls_key.private_bytes(serialization.Encoding.PEM, pkcs8, plain))
    _write_private(root / "keys" / "signing.key",
                   signing_key.private_bytes(serialization.Encoding.PEM, pkcs8, plain))
    pem = certificate.public_bytes(serialization.Encoding.PEM)
    (root / "tls" / "node.crt").write_bytes(pem)
    public = signing_key.public_key().public_bytes(serialization.Encoding.Raw,
                                                   serialization.PublicFormat.Raw)
    identity = NodeIdentity(name=name, directory=root, mpc_address=mpc, api_address=api,
                            tls_fingerprint=certificate_fingerprint(pem),
                            signing_public_key="ed25519:" + public.hex())
    document = {"node": {"name": name, "mpc_address": str(mpc), "api_address": str(api),
                         "tls_fingerprint": identity.tls_fingerprint,
                         "signing_public_key": identity.signing_public_key}}
    (root / "node.toml").write_text(tomli_w.dumps(document))
    return identity


def load_node(directory: Path | str) -> NodeIdentity:
    """Read ``node.toml`` and check it against the certificate on disk."""
    root = Path(directory)
    path = root / "node.toml"
    if not path.exists():
        raise ConfigurationError(
            f"{root} is not a node directory (no node.toml); create one with: "
            "concilium init NODE_DIR --name NAME --mpc-address HOST:PORT")
    try:
        node = tomllib.loads(path.read_text())["node"]
        identity = NodeIdentity(
            name=str(node["name"]), directory=root,
            mpc_address=parse_address(str(node["mpc_address"]), "MPC address"),
            api_address=parse_address(str(node["api_address"]), "API address"),
            tls_fingerprint=str(node["tls_fingerprint"]),
            signing_public_key=str(node["signing_public_key"]),
        )
    except (tomllib.TOMLDecodeError, KeyError, TypeError) as error:
        raise ConfigurationError(f"{path} is malformed ({error}); recreate the node") from None
    if certificate_fingerprint(identity.tls_certificate_pem) != identity.tls_fingerprint:
        raise ConfigurationError(f"{identity.tls_certificate_path} does not match the fingerprint "
                                 f"in {path}; the node's files were changed")
    return identity


def load_signing_key(identity: NodeIdentity) -> ed25519.Ed25519PrivateKey:
    """The node's Ed25519 private key."""
    key = serialization.load_pem_private_key(identity.signing_key_path.read_bytes(), None)
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise ConfigurationError(f"{identity.signing_key_path} is not an Ed25519 key")
    return key


# -- key rotation ------------------------------------------------------------------------
def certificate_expiry(pem: str | bytes) -> datetime.datetime:
    """When a certificate stops being valid (UTC)."""
    data = pem.encode() if isinstance(pem, str) else pem
    return x509.load_pem_x509_certificate(data).not_valid_after_utc


def _next_paths(identity: NodeIdentity) -> dict[str, Path]:
    return {"tls_certificate": identity.directory / "tls" / "node.next.crt",
            "tls_key": identity.directory / "tls" / "node.next.key",
            "signing_key": identity.directory / "keys" / "signing.next.key"}


def prepare_rotation(identity: NodeIdentity, *, tls: bool, signing: bool) -> dict[str, str]:
    """New keys for the node, written beside the current ones (``*.next.*``) until the
    consortium has the amendment that announces them. Returns what the manifest entry
    gets: ``tls_fingerprint`` and ``tls_certificate``, and/or ``signing_key``."""
    if not tls and not signing:
        raise ConfigurationError("rotate the TLS key (--tls), the signing key (--signing), "
                                 "or both")
    paths = _next_paths(identity)
    if any(path.exists() for path in paths.values()):
        raise ConfigurationError(f"a rotation of {identity.name} is already prepared "
                                 f"({identity.directory}/*/*.next.*); finish or remove it")
    pkcs8 = serialization.PrivateFormat.PKCS8
    plain = serialization.NoEncryption()
    entry: dict[str, str] = {}
    if tls:
        tls_key = ec.generate_private_key(ec.SECP256R1())
        pem = _self_signed(identity.name, tls_key).public_bytes(serialization.Encoding.PEM)
        _write_private(paths["tls_key"],
                       tls_key.private_bytes(serialization.Encoding.PEM, pkcs8, plain))
        paths["tls_certificate"].write_bytes(pem)
        entry.update(tls_fingerprint=certificate_fingerprint(pem),
                     tls_certificate=pem.decode())
    if signing:
        signing_key = ed25519.Ed25519PrivateKey.generate()
        _write_private(paths["signing_key"],
                       signing_key.private_bytes(serialization.Encoding.PEM, pkcs8, plain))
        public = signing_key.public_key().public_bytes(serialization.Encoding.Raw,
                                                       serialization.PublicFormat.Raw)
        entry["signing_key"] = "ed25519:" + public.hex()
    return entry


def previous_signing_keys(identity: NodeIdentity) -> list[ed25519.Ed25519PrivateKey]:
    """The signing keys a rotation replaced (``keys/signing.previous-*.key``), newest
    first: a node that stopped between putting its new key in place and logging the
    rotation hands its audit log over at the next start."""
    found = []
    for path in sorted(identity.signing_key_path.parent.glob("signing.previous-*.key"),
                       reverse=True):
        key = serialization.load_pem_private_key(path.read_bytes(), None)
        if isinstance(key, ed25519.Ed25519PrivateKey):
            found.append(key)
    return found


def complete_rotation(identity: NodeIdentity) -> NodeIdentity:
    """Put the prepared keys in place (the old ones kept as ``*.previous.*``) and
    record them in ``node.toml``; the node's identity now."""
    paths = _next_paths(identity)
    current = {"tls_certificate": identity.tls_certificate_path,
               "tls_key": identity.tls_key_path, "signing_key": identity.signing_key_path}
    moved = [name for name, path in paths.items() if path.exists()]
    if not moved:
        raise ConfigurationError(f"no rotation of {identity.name} is prepared")
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%S")
    for name in moved:
        old = current[name]
        os.replace(old, old.with_name(f"{old.stem}.previous-{stamp}{old.suffix}"))
        os.replace(paths[name], old)
    pem = identity.tls_certificate_path.read_bytes()
    key = serialization.load_pem_private_key(identity.signing_key_path.read_bytes(), None)
    assert isinstance(key, ed25519.Ed25519PrivateKey)
    public = key.public_key().public_bytes(serialization.Encoding.Raw,
                                           serialization.PublicFormat.Raw)
    document = {"node": {"name": identity.name, "mpc_address": str(identity.mpc_address),
                         "api_address": str(identity.api_address),
                         "tls_fingerprint": certificate_fingerprint(pem),
                         "signing_public_key": "ed25519:" + public.hex()}}
    partial = identity.directory / "node.toml.partial"
    partial.write_text(tomli_w.dumps(document))
    os.replace(partial, identity.directory / "node.toml")
    return load_node(identity.directory)
