"""``SecretArray``: a secret-shared numpy-like array of integers or fixed-point reals.

Operators follow numpy: shapes broadcast, ``@`` is ``numpy.matmul``, public
operands may be Python numbers or numpy arrays on either side. An integer
array stays an integer array (exact arithmetic modulo 2^64); anything
involving a fixed-point value or a float constant is fixed point with the
session's ``f`` fractional bits.

Costs (rep3, per element): ``+``, ``-``, negation, sums, indexing and public
integer factors are free and local; ``*`` and ``@`` of two secrets cost one
round (integers, or integer times fixed) or a truncation (fixed times fixed,
fused into the multiplication: 1 round ``"fast"``, 2 rounds ``"reliable"``);
multiplying fixed point by a fractional public constant costs a truncation.

Comparisons (``<``, ``<=``, ``>``, ``>=``, ``==``, ``!=``) run the secure
protocols of :mod:`concilium.ops.compare` and return secret 0/1 integer
arrays, usable in arithmetic and in :func:`concilium.data.functions.where`.

A ``SecretArray`` never exposes its value except through :meth:`reveal`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal, Protocol

import numpy as np

from concilium.errors import InputError, SessionMismatch
from concilium.mpc.backend import Backend, Shares, broadcast_shape, matmul_shape
from concilium.ops import compare, fixed_point, select
from concilium.ops.truncation import exact_truncate
from concilium.ring.arithmetic import RING_DTYPE, RingArray, from_signed, to_signed
from concilium.ring.fixed import FixedPointCodec

__all__ = ["ROUNDING_MODES", "Rounding", "SecretArray", "SessionView", "divide"]

#: How fixed-point products are rounded: the backend's two truncations, or the
#: exact floor (``concilium.ops.truncation``: one more comparison).
Rounding = Literal["fast", "reliable", "exact"]
ROUNDING_MODES: tuple[Rounding, ...] = ("fast", "reliable", "exact")



class SessionView(Protocol):
    """What a secret array needs of its session (:class:`concilium.data.session.Session`)."""

    @property
    def backend(self) -> Backend: ...

    @property
    def codec(self) -> FixedPointCodec: ...

    @property
    def truncation(self) -> Rounding: ...

    @property
    def party(self) -> int: ...

    @property
    def protocol(self) -> str: ...

    def constant(self, values: Any, *, fixed: bool = False) -> SecretArray: ...


_INTEGRAL_LIMIT = 2.0**31
_MAX_CONSTANT_BITS = 46  # so the truncation stays within 1..61 bits


class _Public:
    """A public operand encoded for the ring: ``ring`` with ``bits`` fraction bits."""

    __slots__ = ("bits", "is_float", "ring")

    def __init__(self, ring: RingArray, bits: int, is_float: bool) -> None:
        self.ring = ring
        self.bits = bits
        self.is_float = is_float


class SecretArray:
    """One party's shares of a secret array, bound to its session."""

    __slots__ = ("_bits", "_session", "_shares")
    __array_ufunc__ = None  # make numpy defer to our reflected operators
    __hash__ = None  # type: ignore[assignment]

    def __init__(self, session: SessionView, shares: Shares, fractional_bits: int = 0) -> None:
        self._session = session
        self._shares = shares
        self._bits = fractional_bits

    # -- description ----------------------------------------------------------
    @property
    def session(self) -> SessionView:
        return self._session

    @property
    def shares(self) -> Shares:
        """This party's share components (leading axis); random-looking on its own."""
        return self._shares

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self._shares.shape[1:])

    @property
    def ndim(self) -> int:
        return self._shares.ndim - 1

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def fractional_bits(self) -> int:
        """0 for integers, ``f`` for fixed point."""
        return self._bits

    @property
    def is_fixed(self) -> bool:
        return self._bits > 0

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("len() of a 0-dimensional SecretArray")
        return self.shape[0]

    def __repr__(self) -> str:
        kind = f"fixed point, f={self._bits}" if self._bits else "integer"
        return (f"SecretArray(shape={self.shape}, {kind}, protocol={self._session.protocol}, "
                f"party={self._session.party})")

    def __bool__(self) -> bool:
        raise TypeError(
            "a SecretArray has no truth value: branching on it would need its value. "
            "Use reveal() for values you may open, or secure selection in concilium.ops"
        )

    def __array__(self, *args: Any, **kwargs: Any) -> np.ndarray:
        raise TypeError(
            "a SecretArray cannot be converted to a numpy array; call reveal() to open it"
        )

    # -- comparisons (secure; see concilium.ops.compare) ---------------------------
    def _aligned(self, other: Any) -> tuple[Shares, Shares, int]:
        """Both operands' shares at a common scale, and that scale's fraction bits."""
        if isinstance(other, SecretArray):
            self._same_session(other)
            broadcast_shape(self.shape, other.shape)
            bits = max(self._bits, other._bits)
            return self._scaled(bits), other._scaled(bits), bits
        public = self._public(other)
        broadcast_shape(self.shape, public.ring.shape)
        bits = max(self._bits, public.bits,
                   self._session.codec.fractional_bits if public.is_float else 0)
        constant = public.ring * np.uint64(1 << (bits - public.bits))
        return self._scaled(bits), self._session.backend.share_public(constant), bits

    def _compare(self, other: Any, name: str) -> SecretArray:
        left, right, bits = self._aligned(other)
        backend = self._session.backend
        if name in ("equal", "not_equal"):
            result = getattr(compare, name)(backend, left, right)
        else:
            # integers may use the whole 64-bit range; fixed point stays below 2^47
            result = getattr(compare, name)(backend, left, right, full_range=bits == 0)
        return self._wrap(result, 0)

    def __lt__(self, other: Any) -> SecretArray:
        """Secure ``<``: a secret 0/1 integer array. Reveals: nothing."""
        return self._compare(other, "less_than")

    def __le__(self, other: Any) -> SecretArray:
        return self._compare(other, "less_equal")

    def __gt__(self, other: Any) -> SecretArray:
        return self._compare(other, "greater_than")

    def __ge__(self, other: Any) -> SecretArray:
        return self._compare(other, "greater_equal")

    def __eq__(self, other: Any) -> SecretArray:  # type: ignore[override]
        """Secure ``==``: a secret 0/1 integer array (not a Python bool). Reveals: nothing."""
        return self._compare(other, "equal")

    def __ne__(self, other: Any) -> SecretArray:  # type: ignore[override]
        return self._compare(other, "not_equal")

    def __abs__(self) -> SecretArray:
        """Secure ``abs``. Reveals: nothing."""
        return self._wrap(select.absolute(self._session.backend, self._shares)[0], self._bits)

    # -- opening ----------------------------------------------------------------
    def reveal(self, to: Sequence[int] | None = None) -> Any:
        """Open the value to the parties ``to`` (default: all compute parties).

        Reveals: this array's value to the listed parties, nothing to the others.
        Returns, on a listed compute party, an int64 array (integers) or a float64
        array (fixed point), or a Python ``int``/``float`` for a 0-d value; ``None`` on
        the other parties.
        """
        ring = self._session.backend.reveal(self._shares, to)
        if ring is None:
            return None
        value: np.ndarray
        if self._bits:
            value = self._session.codec.decode(ring, self._bits)
        else:
            value = to_signed(ring).copy()
        return value.item() if value.ndim == 0 else value

    # -- helpers -----------------------------------------------------------------
    def _wrap(self, shares: Shares, bits: int) -> SecretArray:
        return SecretArray(self._session, shares, bits)

    def _same_session(self, other: SecretArray) -> None:
        if other._session is not self._session:
            raise SessionMismatch(
                "these secret arrays belong to different sessions (or backends); values "
                "can only be combined within the session that created them"
            )

    def _public(self, value: Any, *, for_product: bool = False) -> _Public:
        """Encode a public operand. Integers (and integral floats) stay integers. For a
        product, a fractional constant gets at least ``f`` fraction bits and enough more
        to keep ``62 - f - integer_bits`` significant bits (15 by default; ``1e-6`` would
        otherwise round to 0), so that any in-range value times it stays below 2^62; the
        product is truncated by as many bits afterwards."""
        array = np.asarray(value)
        kind = array.dtype.kind
        if kind in "biu":
            return _Public(from_signed(array), 0, False)
        if kind != "f":
            raise InputError(f"cannot combine a SecretArray with values of dtype {array.dtype}")
        if bool(np.all(np.isfinite(array))) and bool(np.all(array == np.round(array))) and (
                bool(np.all(np.abs(array) < _INTEGRAL_LIMIT))):
            return _Public(from_signed(array.astype(np.int64)), 0, True)
        codec = self._session.codec
        encoded = codec.encode(array)  # checks NaN, infinities and the safe range
        largest = float(np.max(np.abs(array))) if array.size else 0.0
        if not for_product or largest == 0.0:
            return _Public(encoded, codec.fractional_bits, True)
        # keep |x * constant| < 2^62 for every |x| < 2^integer_bits (the codec's range)
        significant = 62 - codec.fractional_bits - codec.integer_bits
        bits = min(max(codec.fractional_bits, significant - math.frexp(largest)[1]),
                   _MAX_CONSTANT_BITS)
        scaled = np.rint(array.astype(np.float64) * float(2**bits)).astype(np.int64)
        return _Public(scaled.view(RING_DTYPE), bits, True)

    def _scaled(self, bits: int) -> Shares:
        """Shares re-expressed with ``bits`` fraction bits (``bits >= self._bits``)."""
        if bits == self._bits:
            return self._shares
        factor = np.asarray(1 << (bits - self._bits), dtype=RING_DTYPE)
        return self._session.backend.mul_public(self._shares, factor)

    def as_fixed(self) -> SecretArray:
        """The same values in fixed point (free for integers within the codec's range)."""
        return self._wrap(self._scaled(max(self._bits, self._session.codec.fractional_bits)),
                          max(self._bits, self._session.codec.fractional_bits))

    # -- addition ----------------------------------------------------------------
    def _add(self, other: Any, subtract: bool, reflected: bool = False) -> SecretArray:
        backend = self._session.backend
        if isinstance(other, SecretArray):
            self._same_session(other)
            broadcast_shape(self.shape, other.shape)
            bits = max(self._bits, other._bits)
            left, right = self._scaled(bits), other._scaled(bits)
            if reflected:
                left, right = right, left
            shares = backend.sub(left, right) if subtract else backend.add(left, right)
            return self._wrap(shares, bits)
        public = self._public(other)
        broadcast_shape(self.shape, public.ring.shape)
        bits = max(self._bits, public.bits,
                   self._session.codec.fractional_bits if public.is_float else 0)
        constant = public.ring * np.uint64(1 << (bits - public.bits))
        mine = self._scaled(bits)
        if subtract and not reflected:
            constant = np.negative(constant)
        if subtract and reflected:
            mine = backend.neg(mine)
        return self._wrap(backend.add_public(mine, constant), bits)

    def __add__(self, other: Any) -> SecretArray:
        return self._add(other, subtract=False)

    def __radd__(self, other: Any) -> SecretArray:
        return self._add(other, subtract=False, reflected=True)

    def __sub__(self, other: Any) -> SecretArray:
        return self._add(other, subtract=True)

    def __rsub__(self, other: Any) -> SecretArray:
        return self._add(other, subtract=True, reflected=True)

    def __neg__(self) -> SecretArray:
        return self._wrap(self._session.backend.neg(self._shares), self._bits)

    def __pos__(self) -> SecretArray:
        return self

    # -- multiplication ----------------------------------------------------------
    def multiply(self, other: Any, *, truncation: Rounding | None = None) -> SecretArray:
        """``self * other`` with an explicit truncation mode for fixed point."""
        return self._product(other, matrix=False, truncation=truncation)

    def matmul(self, other: Any, *, truncation: Rounding | None = None) -> SecretArray:
        """``self @ other`` with an explicit truncation mode for fixed point."""
        return self._product(other, matrix=True, truncation=truncation)

    def _product(self, other: Any, *, matrix: bool, truncation: Rounding | None,
                 reflected: bool = False) -> SecretArray:
        backend = self._session.backend
        mode = truncation or self._session.truncation
        if isinstance(other, SecretArray):
            self._same_session(other)
            left, right = (other, self) if reflected else (self, other)
            if matrix:
                matmul_shape(left.shape, right.shape)
            else:
                broadcast_shape(left.shape, right.shape)
            drop = min(left._bits, right._bits)
            bits = left._bits + right._bits - drop
            if drop == 0:
                op = backend.matmul if matrix else backend.mul
                return self._wrap(op(left._shares, right._shares), bits)
            if mode == "exact":
                op = backend.matmul if matrix else backend.mul
                return self._wrap(self._truncated(op(left._shares, right._shares), drop, mode),
                                  bits)
            op_trunc = backend.matmul_trunc if matrix else backend.mul_trunc
            return self._wrap(op_trunc(left._shares, right._shares, drop, mode), bits)
        return self._public_product(self._public(other, for_product=True), matrix, mode,
                                    reflected)

    def _public_product(self, public: _Public, matrix: bool, mode: Rounding,
                        reflected: bool) -> SecretArray:
        backend = self._session.backend
        f = self._session.codec.fractional_bits
        constant = public.ring
        if public.is_float and public.bits == 0 and self._bits == 0:
            constant = constant * np.uint64(1 << f)  # integral float: result is fixed point
            result_bits, drop = f, 0
        else:
            result_bits = max(self._bits, f) if public.is_float else self._bits
            drop = self._bits + public.bits - result_bits
        if matrix:
            shape = (public.ring.shape, self.shape) if reflected else (self.shape,
                                                                       public.ring.shape)
            matmul_shape(*shape)
            shares = backend.matmul_public(self._shares, constant, public_left=reflected)
        else:
            broadcast_shape(self.shape, public.ring.shape)
            shares = backend.mul_public(self._shares, constant)
        if drop:
            shares = self._truncated(shares, drop, mode)
        return self._wrap(shares, result_bits)

    def _truncated(self, shares: Shares, bits: int, mode: Rounding) -> Shares:
        if mode == "exact":
            return exact_truncate(self._session.backend, shares, bits)
        return self._session.backend.trunc(shares, bits, mode)

    def __mul__(self, other: Any) -> SecretArray:
        return self._product(other, matrix=False, truncation=None)

    def __rmul__(self, other: Any) -> SecretArray:
        return self._product(other, matrix=False, truncation=None, reflected=True)

    def __matmul__(self, other: Any) -> SecretArray:
        return self._product(other, matrix=True, truncation=None)

    def __rmatmul__(self, other: Any) -> SecretArray:
        return self._product(other, matrix=True, truncation=None, reflected=True)

    def __truediv__(self, other: Any) -> SecretArray:
        """Fixed-point division (see :func:`divide`)."""
        return divide(self, other)

    def __rtruediv__(self, other: Any) -> SecretArray:
        return divide(other, self)

    def truncate(self, bits: int, *, truncation: Rounding | None = None) -> SecretArray:
        """Divide by ``2^bits`` (rounding as the truncation mode states; ``"exact"``
        is the deterministic floor)."""
        mode = truncation or self._session.truncation
        return self._wrap(self._truncated(self._shares, bits, mode), self._bits)

    # -- shape ---------------------------------------------------------------------
    def _value_axes(self, axis: int | Sequence[int] | None) -> tuple[int, ...]:
        if axis is None:
            return tuple(range(1, self.ndim + 1))
        axes = (axis,) if isinstance(axis, int | np.integer) else tuple(axis)
        normalized = []
        for a in axes:
            a = int(a)
            if not -self.ndim <= a < self.ndim:
                raise InputError(f"axis {a} is out of bounds for {self.ndim} dimensions")
            normalized.append((a % self.ndim) + 1)
        return tuple(normalized)

    def sum(self, axis: int | Sequence[int] | None = None, *,
            keepdims: bool = False) -> SecretArray:
        """Sum along value axes (local, free); integer sums wrap modulo 2^64."""
        total = self._shares.sum(axis=self._value_axes(axis), keepdims=keepdims,
                                 dtype=RING_DTYPE)
        return self._wrap(np.asarray(total, dtype=RING_DTYPE), self._bits)

    @staticmethod
    def stack(arrays: Sequence[SecretArray], axis: int = 0) -> SecretArray:
        """numpy.stack for secret arrays of one session (local, free); integers and
        fixed point mix as in addition."""
        if not arrays:
            raise InputError("stack needs at least one array")
        first = arrays[0]
        for array in arrays[1:]:
            first._same_session(array)
        bits = max(a._bits for a in arrays)
        shapes = {a.shape for a in arrays}
        if len(shapes) != 1:
            raise InputError(f"stacked arrays must have one shape, got {sorted(shapes)}")
        position = axis % (first.ndim + 1) + 1
        shares = np.stack([a._scaled(bits) for a in arrays], axis=position)
        return first._wrap(shares, bits)

    @staticmethod
    def concatenate(arrays: Sequence[SecretArray], axis: int = -1) -> SecretArray:
        """numpy.concatenate for secret arrays of one session (local, free)."""
        if not arrays:
            raise InputError("concatenate needs at least one array")
        first = arrays[0]
        for array in arrays[1:]:
            first._same_session(array)
        bits = max(a._bits for a in arrays)
        position = axis % first.ndim + 1 if first.ndim else 1
        try:
            shares = np.concatenate([a._scaled(bits) for a in arrays], axis=position)
        except ValueError as error:
            raise InputError(f"cannot concatenate: {error}") from None
        return first._wrap(shares, bits)

    def cumsum(self, axis: int = -1) -> SecretArray:
        """Prefix sums along ``axis`` (local, free). Reveals: nothing."""
        (value_axis,) = self._value_axes(axis) if self.ndim else (None,)
        if value_axis is None:
            return self.reshape(1)
        return self._wrap(np.cumsum(self._shares, axis=value_axis, dtype=RING_DTYPE), self._bits)

    def _extreme(self, axis: int | None, largest: bool) -> tuple[SecretArray, SecretArray]:
        source = self.ravel() if axis is None else self
        if source.ndim == 0:
            raise InputError("min/max need an array with at least one dimension")
        (value_axis,) = source._value_axes(0 if axis is None else axis)
        values, index = select.extreme(self._session.backend, source._shares, value_axis - 1,
                                       largest=largest, full_range=self._bits == 0)
        return self._wrap(values, self._bits), self._wrap(index, 0)

    def min(self, axis: int | None = None) -> SecretArray:
        """Secure minimum (of all elements, or along ``axis``), log-depth. Reveals: nothing."""
        return self._extreme(axis, largest=False)[0]

    def max(self, axis: int | None = None) -> SecretArray:
        """Secure maximum. Reveals: nothing."""
        return self._extreme(axis, largest=True)[0]

    def argmin(self, axis: int | None = None) -> SecretArray:
        """Secret index of the first minimum (flat index when ``axis`` is None).
        Reveals: nothing."""
        return self._extreme(axis, largest=False)[1]

    def argmax(self, axis: int | None = None) -> SecretArray:
        """Secret index of the first maximum. Reveals: nothing."""
        return self._extreme(axis, largest=True)[1]

    def reshape(self, *shape: Any) -> SecretArray:
        target = shape[0] if len(shape) == 1 and isinstance(shape[0], tuple | list) else shape
        try:
            shares = self._shares.reshape((self._shares.shape[0], *target))
        except ValueError:
            raise InputError(f"cannot reshape an array of shape {self.shape} into "
                             f"{tuple(target)}") from None
        return self._wrap(shares, self._bits)

    def ravel(self) -> SecretArray:
        return self.reshape(-1)

    def transpose(self, *axes: int) -> SecretArray:
        order = axes[0] if len(axes) == 1 and isinstance(axes[0], tuple | list) else axes
        value_order = tuple(order) if order else tuple(reversed(range(self.ndim)))
        if sorted(a % max(self.ndim, 1) for a in value_order) != list(range(self.ndim)):
            raise InputError(f"axes {value_order} do not permute {self.ndim} dimensions")
        perm = (0, *((a % self.ndim) + 1 for a in value_order))
        return self._wrap(self._shares.transpose(perm), self._bits)

    @property
    def T(self) -> SecretArray:  # noqa: N802 - numpy's name
        return self.transpose()

    def __getitem__(self, key: Any) -> SecretArray:
        if isinstance(key, SecretArray):
            raise InputError("indexing with a secret index is not supported; "
                             "indices must be public")
        index = key if isinstance(key, tuple) else (key,)
        try:
            shares = self._shares[(slice(None), *index)]
        except IndexError as error:
            raise InputError(f"bad index for shape {self.shape}: {error}") from None
        return self._wrap(shares, self._bits)


def _session_fixed(x: SecretArray) -> SecretArray:
    fixed = x.as_fixed()
    if fixed.fractional_bits != x.session.codec.fractional_bits:
        raise InputError("this function needs values with the session's fraction bits")
    return fixed


def divide(numerator: Any, denominator: Any) -> SecretArray:
    """``numerator / denominator`` in fixed point, either side secret or public.

    A public denominator costs a multiplication by its reciprocal; a secret one
    runs the division protocol (error within 3 units in the last place plus
    ``2^-24`` relative; see ``docs/ops-library.md``). Dividing by a secret zero
    gives 0. Reveals: nothing.
    """
    if not isinstance(denominator, SecretArray):
        array = np.asarray(denominator, dtype=np.float64)
        if np.any(array == 0):
            raise InputError("division by a public zero")
        return numerator * (1.0 / array)
    b = _session_fixed(denominator)
    a = _session_fixed(numerator if isinstance(numerator, SecretArray)
                       else b.session.constant(numerator, fixed=True))
    shares = fixed_point.divide(b.session.backend, a.shares, b.shares, b.fractional_bits)
    return SecretArray(b.session, shares, b.fractional_bits)
