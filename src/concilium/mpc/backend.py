"""The primitive interface every protocol backend provides.

A backend holds one party's view of a secret-sharing scheme and offers the
few primitives that differ between protocols; everything else (comparison,
conversions, division, sort, ...) lives in :mod:`concilium.ops` and is written
once over these.

**Shares** are numpy ``uint64`` arrays whose leading axis indexes the share
components this party holds (2 for ``rep3``: ``x_i`` and ``x_(i+1)``); the
remaining axes are the shape of the secret value. Shape manipulation
(indexing, reshape, transpose, sums along value axes) therefore works on any
backend by applying it to the trailing axes, which :mod:`concilium.data` does.
Arithmetic shares live in Z_2^64; boolean shares are XOR shares of 64-bit
words.

**Outside parties** (owners and recipients that are not compute parties) have
their side in :class:`OutsideClient` (defined in :mod:`concilium.mpc.outside`);
the compute parties' side is :meth:`Backend.input`, :meth:`Backend.reveal` and
:meth:`Backend.send_public`.

**Openings.** Every opening of a value goes through :meth:`Backend.reveal` or
:meth:`Backend.reveal_bits`: that is where a malicious-secure backend checks
consistency before anything is opened, so no code above this layer
reconstructs shares by hand.

**Contracts** every backend keeps (``ops`` and ``data`` rely on them):

1. *Component-wise linearity*: share arrays are added, subtracted, negated,
   multiplied by public integers, summed, indexed, reshaped, transposed and
   concatenated along value axes component by component, with no
   communication, and the result is a sharing of the same operation on the
   values (:meth:`Backend.add` and friends, and ``SecretArray``'s shape
   operations, do exactly that). XOR and AND with public words likewise for
   boolean shares.
2. *Public constants* enter only through :meth:`share_public`,
   :meth:`add_public` and :meth:`xor_public` (which party folds them in is the
   backend's business).
3. *Truncation* takes ``1 <= bits <= 61`` and a mode of :data:`TRUNCATION_MODES`;
   anything else raises :class:`~concilium.errors.ConfigurationError`. Values
   must satisfy the mode's stated magnitude bound (below).
4. *SPMD order*: every compute party calls the primitives in the same order
   with the same shapes; message tags come from :meth:`next_tag` (and, for an
   outside party, a counter per outside party from
   :data:`concilium.mpc.outside.OUTSIDE_TAG_BASE`), so a party that disagrees
   fails loudly instead of mixing messages.
5. *Openings* happen only in :meth:`reveal` (and :meth:`send_public` of values
   already public to the compute parties).
6. *Capabilities*: a backend lists what it supports in ``capabilities`` (of
   :data:`CAPABILITIES`); the query planner refuses what it lacks.

**Truncation modes** (fixed point, see ``docs/fixed-point.md``):

* ``"fast"``: one round; the result is ``floor(x / 2^d)`` or that plus one,
  except with probability at most ``|x| / 2^64`` per element, where it is off
  by about ``2^(64-d)`` (a catastrophic error). Rounding is unbiased.
* ``"reliable"``: the result is ``floor(x / 2^d)`` or that plus one, unbiased,
  for *every* ``|x| < 2^62``: no catastrophic error is possible. Costs more
  bytes and one more round than ``"fast"``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Literal, cast

import numpy as np
import numpy.typing as npt

from concilium.errors import ConfigurationError, ProtocolAbort, ShapeMismatch
from concilium.mpc.outside import OUTSIDE_TAG_BASE, OutsideClient
from concilium.net.channel import Channel, TrafficSnapshot
from concilium.ring.arithmetic import RING_DTYPE, RingArray

__all__ = [
    "CAPABILITIES",
    "TRUNCATION_MODES",
    "Backend",
    "ChannelBackend",
    "OutsideClient",
    "Shares",
    "Truncation",
    "align",
    "broadcast_shape",
    "check_truncation",
    "matmul_shape",
    "share_matmul",
    "value_shape",
]

#: What a backend may support (``Backend.capabilities``):
#:
#: * ``boolean``: boolean shares, ``and_``, ``boolean_pair``, ``bit_inject`` (comparisons,
#:   equality, min/max, division, the nonlinear functions);
#: * ``shuffle``: secret permutations (shuffle and sort: quantiles, distinct counts,
#:   secret-key groups, joins, dominance);
#: * ``truncation:fast``, ``truncation:reliable``: the two truncation modes;
#: * ``outside_parties``: owners and recipients that are not compute parties.
CAPABILITIES = ("boolean", "shuffle", "truncation:fast", "truncation:reliable",
                "outside_parties")

Shares = npt.NDArray[np.uint64]
Truncation = Literal["fast", "reliable"]
TRUNCATION_MODES: tuple[Truncation, ...] = ("fast", "reliable")


def check_truncation(bits: int, mode: str) -> None:
    """Refuse an unknown truncation mode or a shift outside 1..61 bits."""
    if mode not in TRUNCATION_MODES:
        raise ConfigurationError(f"unknown truncation mode {mode!r}; choose one of "
                                 f"{', '.join(TRUNCATION_MODES)}")
    if not 0 < bits < 62:
        raise ConfigurationError(f"can only truncate by 1..61 bits, not {bits}")


def value_shape(shares: Shares) -> tuple[int, ...]:
    """The shape of the secret value held in ``shares`` (without the component axis)."""
    return tuple(shares.shape[1:])


def align(shares: Shares, ndim: int) -> Shares:
    """Insert unit axes after the component axis so the value has ``ndim`` axes.

    With the value axes aligned, numpy broadcasting of two share arrays (or a
    share array and a public array) follows numpy's rules for the values.
    """
    missing = ndim - (shares.ndim - 1)
    if missing <= 0:
        return shares
    return shares.reshape((shares.shape[0],) + (1,) * missing + shares.shape[1:])


def broadcast_shape(*shapes: tuple[int, ...]) -> tuple[int, ...]:
    """numpy broadcasting of value shapes, with a typed error."""
    try:
        return tuple(np.broadcast_shapes(*shapes))
    except ValueError:
        raise ShapeMismatch(
            "shapes " + ", ".join(str(s) for s in shapes) + " do not broadcast together"
        ) from None


def matmul_shape(left: tuple[int, ...], right: tuple[int, ...]) -> tuple[int, ...]:
    """The result shape of ``left @ right`` under numpy's rules, with a typed error."""
    if not left or not right:
        raise ShapeMismatch("matrix products need operands with at least one dimension")
    lhs = left if len(left) > 1 else (1, *left)
    rhs = right if len(right) > 1 else (*right, 1)
    if lhs[-1] != rhs[-2]:
        raise ShapeMismatch(
            f"cannot multiply matrices of shapes {left} and {right}: the inner "
            f"dimensions differ ({lhs[-1]} != {rhs[-2]})"
        )
    batch = broadcast_shape(lhs[:-2], rhs[:-2])
    rows = (lhs[-2],) if len(left) > 1 else ()
    columns = (rhs[-1],) if len(right) > 1 else ()
    return batch + rows + columns


def share_matmul(left: npt.NDArray[np.uint64], right: npt.NDArray[np.uint64],
                 left_ndim: int, right_ndim: int) -> npt.NDArray[np.uint64]:
    """``left @ right`` on arrays with a leading component axis (numpy semantics for values).

    Vectors are promoted to matrices and the batch axes aligned, so the
    component axis never mixes with value axes.
    """
    a = left[:, None, :] if left_ndim == 1 else left
    b = right[..., None] if right_ndim == 1 else right
    ndim = max(a.ndim, b.ndim)
    a = a.reshape((a.shape[0],) + (1,) * (ndim - a.ndim) + a.shape[1:])
    b = b.reshape((b.shape[0],) + (1,) * (ndim - b.ndim) + b.shape[1:])
    out = np.matmul(a, b)
    if right_ndim == 1:
        out = out[..., 0]
    if left_ndim == 1:
        out = out[..., 0, :] if right_ndim != 1 else out[..., 0]
    return out


class Backend(ABC):
    """One party's side of a secret-sharing protocol among the compute parties."""

    protocol: ClassVar[str]
    security: ClassVar[str]
    components: ClassVar[int]
    capabilities: ClassVar[frozenset[str]]  # of CAPABILITIES

    @property
    @abstractmethod
    def channel(self) -> Channel:
        """The channel this backend talks through (handed in, never created here)."""

    @property
    @abstractmethod
    def party(self) -> int:
        """This party's network index."""

    @property
    @abstractmethod
    def compute_parties(self) -> tuple[int, ...]:
        """Network indices of the compute parties, in protocol order."""

    @abstractmethod
    def next_tag(self, count: int = 1) -> int:
        """The first of ``count`` new plan tags (every compute party reserves the same
        tags in the same order), for messages outside the primitives."""

    def stats(self) -> TrafficSnapshot:
        """Bytes, messages and rounds this party has used so far."""
        return self.channel.stats()

    # -- sharing and opening ------------------------------------------------
    @abstractmethod
    def input(self, owner: int, values: RingArray | None, *, boolean: bool = False) -> Shares:
        """Secret-share ``values`` held by party ``owner`` (``None`` on other parties).

        ``owner`` may be a compute party or an outside data owner. With
        ``boolean=True`` the values are 64-bit words shared by XOR.
        """

    @abstractmethod
    def reveal(self, x: Shares, to: Sequence[int] | None = None, *,
               boolean: bool = False) -> RingArray | None:
        """Open ``x`` to the parties ``to`` (default: all compute parties).

        Reveals: the value of ``x`` to the listed parties, nothing to others.
        Returns the value on a listed compute party and ``None`` elsewhere.
        """

    @abstractmethod
    def share_public(self, values: RingArray, *, boolean: bool = False) -> Shares:
        """A sharing of a public value, without communication."""

    @abstractmethod
    def send_public(self, target: int, payload: bytes) -> None:
        """Send public bytes (already known to every compute party, such as the shape of
        a result) to outside party ``target``; every compute party sends the same, and
        the outside party checks that they agree.

        Reveals: ``payload`` to ``target`` (it must be public to the compute parties).
        """

    # -- local linear operations ---------------------------------------------
    def add(self, x: Shares, y: Shares) -> Shares:
        ndim = max(x.ndim, y.ndim) - 1
        return align(x, ndim) + align(y, ndim)

    def sub(self, x: Shares, y: Shares) -> Shares:
        ndim = max(x.ndim, y.ndim) - 1
        return align(x, ndim) - align(y, ndim)

    def neg(self, x: Shares) -> Shares:
        return np.negative(x)

    def mul_public(self, x: Shares, constant: RingArray) -> Shares:
        """Multiply by a public ring array (broadcasting)."""
        constant = np.asarray(constant, dtype=RING_DTYPE)
        return align(x, constant.ndim) * constant

    def matmul_public(self, x: Shares, constant: RingArray, *, public_left: bool = False) -> Shares:
        """``x @ constant`` (or ``constant @ x`` with ``public_left``) for a public matrix."""
        constant = np.asarray(constant, dtype=RING_DTYPE)
        public = np.broadcast_to(constant, (x.shape[0], *constant.shape))
        if public_left:
            return share_matmul(public, x, constant.ndim, x.ndim - 1)
        return share_matmul(x, public, x.ndim - 1, constant.ndim)

    @abstractmethod
    def add_public(self, x: Shares, constant: RingArray) -> Shares:
        """Add a public ring array (broadcasting)."""

    def xor(self, x: Shares, y: Shares) -> Shares:
        ndim = max(x.ndim, y.ndim) - 1
        return align(x, ndim) ^ align(y, ndim)

    def and_public(self, x: Shares, constant: RingArray) -> Shares:
        constant = np.asarray(constant, dtype=RING_DTYPE)
        return align(x, constant.ndim) & constant

    @abstractmethod
    def xor_public(self, x: Shares, constant: RingArray) -> Shares:
        """XOR a public word array into boolean shares."""

    # -- interactive operations ----------------------------------------------
    @abstractmethod
    def mul(self, x: Shares, y: Shares) -> Shares:
        """Elementwise product in Z_2^64 (broadcasting)."""

    @abstractmethod
    def matmul(self, x: Shares, y: Shares) -> Shares:
        """Matrix product in Z_2^64; communication independent of the inner dimension."""

    @abstractmethod
    def and_(self, x: Shares, y: Shares) -> Shares:
        """Bitwise AND of boolean shares (broadcasting)."""

    @abstractmethod
    def trunc(self, x: Shares, bits: int, mode: Truncation = "reliable") -> Shares:
        """Signed division by 2^bits, rounded as the mode states."""

    def mul_trunc(self, x: Shares, y: Shares, bits: int,
                  mode: Truncation = "reliable") -> Shares:
        """``trunc(mul(x, y), bits)``; a backend may fuse it into fewer rounds."""
        return self.trunc(self.mul(x, y), bits, mode)

    def matmul_trunc(self, x: Shares, y: Shares, bits: int,
                     mode: Truncation = "reliable") -> Shares:
        """``trunc(matmul(x, y), bits)``, one truncation per output element; a backend
        may fuse it."""
        return self.trunc(self.matmul(x, y), bits, mode)

    @abstractmethod
    def random(self, shape: tuple[int, ...], *, boolean: bool = False) -> Shares:
        """A sharing of uniformly random ring elements (or words), without communication."""

    def sum_of_private(self, values: RingArray) -> Shares:
        """A sharing of the sum, over the compute parties, of a private array each of
        them holds (every compute party passes its own ``values``, of one shape), such
        as its share of distributed noise.

        This default has each party input its array in turn (one input per party);
        a backend may do it in fewer rounds (``rep3``: one reshare).

        Reveals: the shape only; no party's array.
        """
        value = np.require(values, dtype=RING_DTYPE, requirements="C")
        total: Shares | None = None
        for owner in self.compute_parties:
            part = self.input(owner, value if owner == self.party else None)
            total = part if total is None else self.add(total, part)
        assert total is not None
        return total

    # -- conversions and permutations (the protocol-specific halves) ----------
    @abstractmethod
    def boolean_pair(self, x: Shares, transform: Callable[[RingArray], RingArray] | None = None,
                     *, difference: bool = False) -> tuple[Shares, Shares]:
        """Two boolean sharings ``(T(u), T(v))`` of words with ``u + v = x`` mod 2^64
        (``u - v = x`` with ``difference``), for an XOR-linear bit permutation ``T``
        (identity if None). The adder that finishes the conversion is in ``ops``.

        Reveals: nothing.
        """

    def boolean_summands(self, x: Shares) -> list[Shares] | None:
        """Boolean sharings of words whose sum mod 2^64 is ``x``, when the protocol has
        more than two natural summands (``additive`` with ``n > 2`` parties: one per
        party); :func:`concilium.ops.summands.boolean_pair` reduces them to two with
        carry-save adders. None (the default): :meth:`boolean_pair` gives the two.

        Reveals: nothing.
        """
        return None

    @abstractmethod
    def bit_inject(self, bits: Shares) -> Shares:
        """Arithmetic 0/1 sharings of bit 0 of each word of the boolean sharing ``bits``.

        Reveals: nothing.
        """

    @abstractmethod
    def new_permutation(self, length: int) -> Any:
        """A fresh secret permutation of ``length`` items, unknown to every party."""

    @abstractmethod
    def permute(self, permutation: Any, x: Shares, *, inverse: bool = False,
                boolean: bool = False) -> Shares:
        """Apply a secret permutation (or its inverse) along the last value axis,
        resharing every element.

        Reveals: nothing; the same permutation may be applied to several arrays.
        """


class ChannelBackend(Backend):
    """The bookkeeping every backend shares: its channel, the compute parties (this
    party among them), the plan tags, and a tag counter per outside party."""

    def __init__(self, channel: Channel, compute_parties: Sequence[int], *,
                 first_tag: int = 0) -> None:
        parties = tuple(int(p) for p in compute_parties)
        if not parties or len(set(parties)) != len(parties):
            raise ConfigurationError(f"{self.protocol} needs distinct compute parties, got "
                                     f"{list(parties)}")
        if channel.party not in parties:
            raise ConfigurationError(f"party {channel.party} is not one of the compute "
                                     f"parties {list(parties)}")
        self._channel = channel
        self._parties = parties
        self._tag = first_tag
        self._outside_tags: dict[int, int] = {}

    @property
    def channel(self) -> Channel:
        return self._channel

    @property
    def party(self) -> int:
        return self._channel.party

    @property
    def compute_parties(self) -> tuple[int, ...]:
        return self._parties

    def next_tag(self, count: int = 1) -> int:
        """The first of ``count`` consecutive new plan tags; every compute party calls
        this in the same order with the same counts."""
        first = self._tag + 1
        self._tag += count
        return first

    def send_public(self, target: int, payload: bytes) -> None:
        """Reveals: ``payload`` (public to the compute parties) to outside party
        ``target``."""
        if target in self._parties or not 0 <= target < self._channel.parties:
            raise ConfigurationError(f"party {target} is not an outside party")
        self._channel.send(target, self.outside_tag(target),
                           np.frombuffer(payload, dtype=np.uint8))

    def ring_from(self, peer: int, tag: int, shape: tuple[int, ...] | None = None) -> RingArray:
        """Receive a ring array (of ``shape``, if given) from ``peer``; anything else is
        a peer that disagrees on the plan: ProtocolAbort."""
        array = self._channel.receive(peer, tag)
        if array.dtype != RING_DTYPE or (shape is not None and array.shape != shape):
            raise ProtocolAbort(f"party {peer} sent a {array.dtype} array of shape "
                                f"{array.shape} where the plan expects uint64"
                                + ("" if shape is None else f" of shape {shape}"))
        return cast(RingArray, array)

    def outside_share(self, owner: int) -> Shares:
        """This party's one-component share of an input from outside party ``owner``
        (it sent each compute party its share)."""
        if not 0 <= owner < self._channel.parties:
            raise ConfigurationError(f"there is no party {owner} on this network")
        return self.ring_from(owner, self.outside_tag(owner))[None].copy()

    def outside_tag(self, party: int) -> int:
        """The next tag for a message exchanged with outside party ``party``."""
        count = self._outside_tags.get(party, 0)
        self._outside_tags[party] = count + 1
        return OUTSIDE_TAG_BASE + count
