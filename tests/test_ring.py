"""ring/: Z_2^64 encoding, fixed point, bit packing, the AES-CTR PRG."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from concilium.errors import ConfigurationError, FixedPointRangeError, InputError, RingRangeError
from concilium.ring import (
    FixedPointCodec,
    Prg,
    from_signed,
    pack_bits,
    to_signed,
    unpack_bits,
)
from concilium.ring.blocks import blocks
from concilium.ring.prg import stream_nonce


@given(hnp.arrays(np.int64, hnp.array_shapes(min_dims=0, max_dims=3)))
def test_signed_integers_round_trip(values: np.ndarray) -> None:
    ring = from_signed(values)
    assert ring.dtype == np.uint64
    assert np.array_equal(to_signed(ring), values)


def test_python_integers_at_the_ring_edges() -> None:
    ring = from_signed([-(2**63), 2**64 - 1, 0, -1, True])
    assert ring.tolist() == [2**63, 2**64 - 1, 0, 2**64 - 1, 1]


@pytest.mark.parametrize("value", [2**64, -(2**63) - 1, 10**30])
def test_integers_outside_the_ring_are_refused(value: int) -> None:
    with pytest.raises(RingRangeError, match="does not fit the 64-bit ring"):
        from_signed([1, value])


def test_floats_are_not_silently_truncated_to_integers() -> None:
    with pytest.raises(InputError, match="fixed=True"):
        from_signed(np.array([1.5]))


@given(hnp.arrays(np.float64, hnp.array_shapes(max_dims=2),
                  elements=st.floats(-(2.0**31) + 1, 2.0**31 - 1)))
def test_fixed_point_round_trip_within_half_a_unit(values: np.ndarray) -> None:
    codec = FixedPointCodec()
    decoded = codec.decode(codec.encode(values))
    assert np.all(np.abs(decoded - values) <= 2.0**-17)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ([1.0, float("nan")], r"1 value\(s\) are NaN or infinite \(first at index \(1,\)\)"),
        ([float("-inf")], "NaN or infinite"),
        ([0.0, 2.0**31], r"magnitude >= 2\^31 \(first at index \(1,\)\)"),
        ([[0.0], [-(2.0**40)]], r"first at index \(1, 0\)"),
    ],
)
def test_fixed_point_refuses_unsafe_values(values: list, message: str) -> None:
    with pytest.raises(FixedPointRangeError, match=message):
        FixedPointCodec().encode(np.array(values))


def test_fixed_point_configuration_is_checked() -> None:
    with pytest.raises(ConfigurationError, match="at most 62"):
        FixedPointCodec(fractional_bits=40, integer_bits=30)
    codec = FixedPointCodec(fractional_bits=20, integer_bits=20)
    assert codec.resolution == 2.0**-20
    assert codec.decode(codec.encode([-1.25]))[0] == -1.25


@given(st.lists(st.booleans(), max_size=300))
def test_bit_packing_round_trip(bits: list[bool]) -> None:
    packed = pack_bits(bits)
    assert packed.dtype == np.uint64
    assert packed.size == (len(bits) + 63) // 64
    assert unpack_bits(packed, len(bits)).tolist() == bits


def test_packed_layout_is_bit_i_of_word_j() -> None:
    bits = np.zeros(130, dtype=bool)
    bits[[0, 63, 64, 129]] = True
    assert pack_bits(bits).tolist() == [1 | (1 << 63), 1, 2]


def test_prg_streams_are_deterministic_and_chunking_invariant() -> None:
    key = bytes(range(16))
    whole = Prg(key, stream_nonce(7, 3)).integers(3000)
    stream = Prg(key, stream_nonce(7, 3))
    pieces = np.concatenate([stream.integers(1000), stream.integers(1500), stream.integers(500)])
    assert np.array_equal(whole, pieces)
    other_purpose = Prg(key, stream_nonce(7, 4)).integers(3000)
    other_tag = Prg(key, stream_nonce(8, 3)).integers(3000)
    assert not np.array_equal(whole, other_purpose)
    assert not np.array_equal(whole, other_tag)


def test_prg_fills_large_buffers_beyond_its_zero_block() -> None:
    key = bytes(16)
    big = Prg(key).integers(300_000)  # 2.4 MB, several zero blocks
    again = Prg(key)
    assert np.array_equal(big[:1000], again.integers(1000))
    # AES-CTR output looks uniform: each byte value about equally often
    counts = np.bincount(big.view(np.uint8), minlength=256)
    assert counts.min() > 0.9 * counts.mean()


def test_prg_refuses_bad_keys_and_buffers() -> None:
    with pytest.raises(ConfigurationError):
        Prg(b"short")
    with pytest.raises(ValueError, match="C-contiguous"):
        Prg.from_urandom().fill(np.zeros((4, 4), dtype=np.uint64)[:, ::2])


def test_blocks_cover_the_range_exactly() -> None:
    covered = [i for block in blocks(1000, size=64) for i in range(block.start, block.stop)]
    assert covered == list(range(1000))
    assert list(blocks(0)) == []
