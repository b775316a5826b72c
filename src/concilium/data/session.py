"""``Session``: one compute party's handle on a secure computation.

A session wraps a protocol backend with the fixed-point codec and the
truncation policy, and creates :class:`~concilium.data.secret_array.SecretArray`
values from private inputs. Every compute party runs the same program with
its own session (SPMD); only an input's owner passes the values.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from concilium.data.secret_array import ROUNDING_MODES, Rounding, SecretArray
from concilium.errors import ConfigurationError, InputError
from concilium.mpc.backend import Backend
from concilium.mpc.correlations import CorrelationSource
from concilium.mpc.protocols import ThreatModel, protocol
from concilium.net.channel import TrafficSnapshot
from concilium.ring.arithmetic import RingArray, from_signed
from concilium.ring.fixed import FixedPointCodec

__all__ = ["Session", "encode_values"]


def encode_values(codec: FixedPointCodec, values: Any, fixed: bool) -> RingArray:
    """Encode a private input: integers as ring integers, or reals as fixed point.

    Raises a typed :class:`~concilium.errors.InputError` (naming the problem and
    the first bad index) before anything is sent.
    """
    if isinstance(values, SecretArray):
        raise InputError("this value is already secret; pass it on directly instead")
    array = np.asarray(values) if not isinstance(values, list | tuple) else np.asarray(
        values, dtype=object)
    if array.dtype.kind not in "biufO":
        raise InputError(
            f"input values must be numbers, got dtype {array.dtype}; convert them first"
        )
    if fixed:
        return codec.encode(array.astype(np.float64) if array.dtype.kind == "O" else array)
    if array.dtype.kind == "f":
        raise InputError(
            "floating-point values were given for an integer input; pass fixed=True to "
            "share them as fixed point, or round them to integers first"
        )
    return from_signed(values if array.dtype.kind == "O" else array)


class Session:
    """A compute party's secure-computation session.

    ``backend``: the protocol backend (already connected).
    ``codec``: fixed-point format (default 16 fractional bits).
    ``truncation``: ``"reliable"`` (default; no catastrophic rounding error is
    possible), ``"fast"`` (one round less, fails with a small stated
    probability; see ``docs/fixed-point.md``) or ``"exact"`` (the deterministic
    floor, one comparison more; :mod:`concilium.ops.truncation`).
    """

    def __init__(self, backend: Backend, *, codec: FixedPointCodec | None = None,
                 truncation: Rounding = "reliable") -> None:
        if truncation not in ROUNDING_MODES:
            raise ConfigurationError(
                f"unknown truncation mode {truncation!r}; choose "
                f"{', '.join(repr(m) for m in ROUNDING_MODES)}"
            )
        self.backend = backend
        self.codec = codec if codec is not None else FixedPointCodec()
        self.truncation: Rounding = truncation
        self._correlations: CorrelationSource | None = None
        #: set before anything derived from the owners' data is opened or noise is
        #: drawn (the differencing check's bit, noisy values): from then on a failed
        #: run is not refunded its privacy budget
        self.opened = False

    @property
    def party(self) -> int:
        """This party's network index."""
        return self.backend.party

    @property
    def compute_parties(self) -> tuple[int, ...]:
        return self.backend.compute_parties

    @property
    def protocol(self) -> str:
        return self.backend.protocol

    @property
    def security(self) -> str:
        """The protocol's security, in a phrase."""
        return self.backend.security

    @property
    def correlations(self) -> CorrelationSource:
        """This party's correlation source (prepare triples and pairs ahead, take them
        online); made by the protocol's registry entry on first use."""
        if self._correlations is None:
            self._correlations = protocol(self.backend.protocol).create_correlations(
                self.backend)
        return self._correlations

    @property
    def threat_model(self) -> ThreatModel:
        """What results of this session rest on: protocol, compute parties, corruptions
        tolerated, security, and the collusion that would break it (stated with
        every result and in the audit log)."""
        return protocol(self.backend.protocol).threat_model(len(self.compute_parties))

    def stats(self) -> TrafficSnapshot:
        """Payload bytes, messages and rounds this party has used so far."""
        return self.backend.stats()

    def input(self, owner: int, values: Any = None, *, fixed: bool = False) -> SecretArray:
        """Secret-share ``owner``'s values; every compute party calls this, only the
        owner passes ``values`` (others pass ``None``). ``fixed=True`` encodes reals as
        fixed point; otherwise values must be integers.

        Bad values raise :class:`~concilium.errors.InputError` on the owner before
        anything is sent (the other parties then abort with nothing shared).
        """
        encoded: RingArray | None = None
        if self.party == owner:
            if values is None:
                raise ConfigurationError(f"party {owner} owns this input and must pass values")
            encoded = encode_values(self.codec, values, fixed)
        elif values is not None:
            raise ConfigurationError(
                f"party {self.party} passed values for an input owned by party {owner}; "
                "only the owner passes values, the other parties pass None"
            )
        shares = self.backend.input(owner, encoded)
        return SecretArray(self, shares, self.codec.fractional_bits if fixed else 0)

    def constant(self, values: Any, *, fixed: bool = False) -> SecretArray:
        """A public value as a secret array (no communication), to mix into secret code."""
        encoded = encode_values(self.codec, values, fixed)
        shares = self.backend.share_public(encoded)
        return SecretArray(self, shares, self.codec.fractional_bits if fixed else 0)

    def send_public(self, targets: Sequence[int], payload: bytes) -> None:
        """Send public bytes that every compute party knows alike to outside parties.

        Reveals: ``payload`` to ``targets``; it must already be public to the compute
        parties (a result's layout, which cells were suppressed).
        """
        for target in targets:
            self.backend.send_public(int(target), payload)

    def reveal(self, value: SecretArray, to: Sequence[int] | None = None) -> Any:
        """Same as ``value.reveal(to)``."""
        return value.reveal(to)
