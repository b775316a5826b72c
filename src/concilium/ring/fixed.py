"""Signed fixed-point numbers in Z_2^64.

A real ``x`` is stored as the ring element ``round(x * 2^f) mod 2^64`` with
``f`` fractional bits (default 16, so one unit in the last place is
2^-16 ~ 1.5e-5). The encoder refuses NaN, infinities and magnitudes at or above
``2^integer_bits`` (default 2^31): a value is never silently wrapped.

Why a safe range well below 2^47 (the largest encodable magnitude at f = 16):
a product of two fixed-point values carries 2f fractional bits before it is
truncated, and the truncation protocols state their guarantees for encoded
products below 2^62 (see ``docs/fixed-point.md``). Keeping inputs inside the
stated range, and products inside ``|x * y| < 2^(62 - 2f)`` (2^30 at f = 16),
is what makes results trustworthy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from concilium.errors import ConfigurationError, FixedPointRangeError, InputError
from concilium.ring.arithmetic import RING_DTYPE, RingArray, to_signed

__all__ = ["DEFAULT_FRACTIONAL_BITS", "FixedPointCodec"]

DEFAULT_FRACTIONAL_BITS = 16


@dataclass(frozen=True)
class FixedPointCodec:
    """Encode reals to ring elements and back.

    ``fractional_bits`` (f): precision, one unit is 2^-f.
    ``integer_bits``: the encoder refuses ``|x| >= 2^integer_bits``.
    """

    fractional_bits: int = DEFAULT_FRACTIONAL_BITS
    integer_bits: int = 31

    def __post_init__(self) -> None:
        if not 0 <= self.fractional_bits <= 40:
            raise ConfigurationError(
                f"fractional_bits must be between 0 and 40, got {self.fractional_bits}"
            )
        if not self.integer_bits >= 1 or self.integer_bits + self.fractional_bits > 62:
            raise ConfigurationError(
                "integer_bits must be at least 1 and integer_bits + fractional_bits at "
                f"most 62, got {self.integer_bits} + {self.fractional_bits}"
            )

    @property
    def scale(self) -> int:
        """2^f: the encoded value of 1.0."""
        return 1 << self.fractional_bits

    @property
    def max_magnitude(self) -> float:
        """Values must satisfy ``|x| < max_magnitude`` to be encoded."""
        return float(2**self.integer_bits)

    @property
    def resolution(self) -> float:
        """One unit in the last place, 2^-f."""
        return 1.0 / self.scale

    def encode(self, values: Any) -> RingArray:
        """Round reals to the nearest multiple of 2^-f and encode them.

        Raises :class:`FixedPointRangeError` naming how many values are bad and
        the index of the first, for NaN, infinities or ``|x| >= 2^integer_bits``.
        """
        array = np.asarray(values)
        if array.dtype.kind not in "biuf":
            raise InputError(
                f"cannot encode values of dtype {array.dtype} as fixed point; "
                "pass numbers (int or float)"
            )
        real = array.astype(np.float64, copy=False)
        finite = np.isfinite(real)
        if not finite.all():
            bad = np.argwhere(~finite)
            raise FixedPointRangeError(
                f"{len(bad)} value(s) are NaN or infinite (first at index "
                f"{tuple(int(i) for i in bad[0])}); fixed-point inputs must be finite numbers"
            )
        too_big = np.abs(real) >= self.max_magnitude
        if too_big.any():
            bad = np.argwhere(too_big)
            raise FixedPointRangeError(
                f"{len(bad)} value(s) have magnitude >= 2^{self.integer_bits} (first at "
                f"index {tuple(int(i) for i in bad[0])}); this is outside the fixed-point "
                "codec's safe range. Rescale the data (e.g. thousands instead of units) "
                "or raise integer_bits"
            )
        scaled = np.rint(real * float(self.scale)).astype(np.int64)
        return scaled.view(RING_DTYPE)

    def decode(self, ring: npt.NDArray[np.uint64], fractional_bits: int | None = None) -> (
        npt.NDArray[np.float64]
    ):
        """Read ring elements as reals with ``fractional_bits`` (default f) fraction bits."""
        bits = self.fractional_bits if fractional_bits is None else fractional_bits
        return to_signed(ring).astype(np.float64) / float(1 << bits)

    def encode_scalar(self, value: float) -> int:
        """Encode one public constant as a signed integer, with :meth:`encode`'s checks."""
        return int(to_signed(self.encode(np.array([value])))[0])
