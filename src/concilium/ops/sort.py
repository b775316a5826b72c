"""Shuffle, stable sort with payload, ranking, and segmented aggregation.

**Sort** follows Hamada, Kikuchi, Ikarashi, Chida and Takahashi, "Practically
Efficient Multi-party Sorting Protocols from Comparison Sort Algorithms"
(ICISC 2012): shuffle the rows with a secret permutation, then run a
comparison sort (here a vectorized quicksort: every element of every open
segment is compared with its segment's first element in one batch per level)
whose comparison results are *opened*. Ties are broken by each row's original
position, carried as a secret column, so every compared pair is distinct and
the sort is stable.

Reveals: the outcomes of comparisons between shuffled rows. Because all rows
are distinct (original positions break ties) and the shuffle is a uniformly
random permutation unknown to every single party, those outcomes are a
function of the uniformly random order in which the shuffle placed the rows,
and nothing else: their distribution is the same for every input of the same
length. The number of quicksort levels (and so the number of rounds) is a
function of the same random order. No key, payload value or group size is
revealed.

Costs per comparison and level (rep3): the signs of ``key_a - key_b``,
``key_b - key_a`` and of the position difference in one batch (equality is
``1 ^ lt ^ gt``), one AND per key and one opened bit: 10 rounds per level,
about ``1.4 n log2 n`` comparisons in all.

**Ranking** runs the same sort, then applies the inverse of the secret
shuffle to the (public, uniformly random) sorted positions of the shuffled
rows: each row gets its rank without anyone learning which row has which
rank. **Segmented sums** over rows sorted by a group key use a log-depth
segmented scan (Blelloch, "Prefix sums and their applications", 1990): one
multiplication round per level, ``ceil(log2 n)`` levels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from concilium.errors import InputError, ShapeMismatch
from concilium.mpc.backend import Backend, Shares, value_shape
from concilium.ops.compare import equal, less_than_bits, logical_not
from concilium.ops.conversion import and_bits
from concilium.ring.arithmetic import RING_DTYPE
from concilium.ring.bits import pack_bits, unpack_bits

__all__ = ["SortKey", "SortOutcome", "rank", "segment_starts", "segmented_scan", "segmented_sum",
           "shuffle", "sort"]

Indices = npt.NDArray[np.intp]


@dataclass(frozen=True)
class SortKey:
    """One sort key column (shares of shape (components, n)), its range, its order."""

    shares: Shares
    full_range: bool = False
    descending: bool = False


@dataclass(frozen=True)
class SortOutcome:
    """The sorted columns, and how the shuffled rows were ordered."""

    keys: list[Shares]
    payload: list[Shares]
    order: Indices  # public: shuffled row at each sorted position (uniformly random)
    permutation: object  # the secret shuffle applied first


def _columns_length(columns: Sequence[Shares]) -> int:
    lengths = {value_shape(column) for column in columns}
    if len(lengths) != 1:
        raise ShapeMismatch(f"sort and shuffle columns must have one common shape, got "
                            f"{sorted(lengths)}")
    (shape,) = lengths
    if len(shape) != 1:
        raise ShapeMismatch(f"sort and shuffle take one-dimensional columns, got shape {shape}")
    return shape[0]


def shuffle(backend: Backend, columns: Sequence[Shares]) -> tuple[list[Shares], object]:
    """Apply one fresh secret permutation to every column (rows stay together).

    Reveals: nothing.
    """
    length = _columns_length(columns)
    permutation = backend.new_permutation(length)
    stacked = backend.permute(permutation, np.stack(list(columns), axis=1))
    return [stacked[:, k] for k in range(len(columns))], permutation


def _less_rows(backend: Backend, keys: list[SortKey], rows: Shares, pivots: Shares,
               position: int) -> Shares:
    """Boolean ``[row < pivot]`` in lexicographic (keys..., original position) order.

    Every key is compared in both directions in the same batch as the positions,
    so equality costs no extra rounds: ``eq = 1 ^ lt ^ gt``.
    """
    left: dict[bool, list[Shares]] = {False: [], True: []}
    right: dict[bool, list[Shares]] = {False: [], True: []}
    slots: list[tuple[bool, int]] = []
    for k, key in enumerate(keys):
        a, b = rows[:, k], pivots[:, k]
        if key.descending:
            a, b = b, a
        slots.append((key.full_range, len(left[key.full_range])))
        left[key.full_range] += [a, b]
        right[key.full_range] += [b, a]
    slots.append((False, len(left[False])))
    left[False].append(rows[:, position])
    right[False].append(pivots[:, position])
    bits = {full: less_than_bits(backend, np.stack(left[full], axis=1),
                                 np.stack(right[full], axis=1), full)
            for full in (False, True) if left[full]}
    full, slot = slots[-1]
    result = bits[full][:, slot]
    for full, slot in reversed(slots[:-1]):
        smaller, larger = bits[full][:, slot], bits[full][:, slot + 1]
        same = backend.xor_public(smaller ^ larger, np.asarray(np.uint64(1)))
        result = smaller ^ and_bits(backend, same, result)  # lt or (eq and result)
    return result


def _open_bits(backend: Backend, bits: Shares) -> npt.NDArray[np.bool_]:
    """Open boolean bits (bit 0 of each word), 64 per word on the wire."""
    count = bits.shape[1]
    packed = np.stack([pack_bits(bits[c] & np.uint64(1)) for c in range(bits.shape[0])])
    opened = backend.reveal(packed, boolean=True)
    assert opened is not None
    return unpack_bits(opened, count)


def _quicksort_order(backend: Backend, keys: list[SortKey], rows: Shares) -> Indices:
    """The public order of the shuffled rows, by levels of opened comparisons.

    Each level compares every element of every open segment with the segment's
    first element (its pivot) in one batch, then partitions each segment stably
    into (smaller, pivot, larger) with prefix counts: linear public work per level.
    """
    length = rows.shape[-1]
    position = len(keys)
    places = np.arange(length)
    order = np.arange(length)
    start = np.zeros(length, dtype=np.intp)  # first position of each position's segment
    size = np.full(length, length, dtype=np.intp)
    while True:
        active = np.flatnonzero((size > 1) & (places != start))
        if active.size == 0:
            return order
        less = _open_bits(backend, _less_rows(backend, keys, rows[..., order[active]],
                                              rows[..., order[start[active]]], position))
        smaller = np.zeros(length, dtype=np.intp)
        larger = np.zeros(length, dtype=np.intp)
        smaller[active[less]] = 1
        larger[active[~less]] = 1
        # exclusive prefix counts, so rank = count before p - count before its segment
        before_smaller = np.cumsum(smaller) - smaller
        before_larger = np.cumsum(larger) - larger
        in_segment_smaller = np.bincount(start, weights=smaller, minlength=length).astype(
            np.intp)
        pivot = start + in_segment_smaller[start]
        target = np.where(smaller == 1, start + before_smaller - before_smaller[start],
                          np.where(larger == 1, pivot + 1 + before_larger - before_larger[start],
                                   np.where(size > 1, pivot, places)))
        new_order = np.empty_like(order)
        new_order[target] = order
        new_start = np.where(smaller == 1, start, np.where(larger == 1, pivot + 1, target))
        new_size = np.where(smaller == 1, in_segment_smaller[start],
                            np.where(larger == 1, start + size - pivot - 1, 1))
        new_size = np.where(size > 1, new_size, size)
        order = new_order
        start = np.empty_like(start)
        size = np.empty_like(size)
        start[target], size[target] = new_start, new_size


def sort(backend: Backend, keys: Sequence[SortKey], payload: Sequence[Shares] = ()) -> SortOutcome:
    """Stable sort of rows by ``keys`` (lexicographic), carrying ``payload``.

    Reveals: see the module docstring (comparison outcomes between shuffled,
    distinct rows: a uniformly random permutation, independent of the data).
    """
    if not keys:
        raise InputError("sort needs at least one key column")
    columns = [key.shares for key in keys]
    length = _columns_length([*columns, *payload])
    positions = backend.share_public(np.arange(length, dtype=RING_DTYPE))
    shuffled, permutation = shuffle(backend, [*columns, positions, *payload])
    rows = np.stack(shuffled, axis=1)
    compared = np.ascontiguousarray(rows[:, :len(keys) + 1])  # keys and positions only
    order = (_quicksort_order(backend, list(keys), compared) if length > 1
             else np.arange(length))
    ordered = rows[..., order]
    count = len(keys)
    return SortOutcome(keys=[ordered[:, k] for k in range(count)],
                       payload=[ordered[:, count + 1 + j] for j in range(len(payload))],
                       order=order, permutation=permutation)


def rank(backend: Backend, keys: Sequence[SortKey]) -> Shares:
    """Each row's 0-based position in the stable sort by ``keys``, in the rows'
    original order.

    Reveals: what :func:`sort` reveals, nothing more (the ranks of the shuffled
    rows are opened to nobody but used as public values before unshuffling).
    """
    outcome = sort(backend, keys)
    length = len(outcome.order)
    shuffled_rank = np.empty(length, dtype=RING_DTYPE)
    shuffled_rank[outcome.order] = np.arange(length, dtype=RING_DTYPE)
    public = backend.share_public(shuffled_rank)
    return backend.permute(outcome.permutation, public, inverse=True)


def segment_starts(backend: Backend, group_keys: Shares) -> Shares:
    """Arithmetic 0/1: 1 where a row's key differs from the previous row's (row 0: 1).

    Reveals: nothing.
    """
    length = value_shape(group_keys)[-1]
    changed = logical_not(backend, equal(backend, group_keys[..., 1:], group_keys[..., :-1]))
    first = backend.share_public(np.ones(min(length, 1), dtype=RING_DTYPE))
    return np.concatenate([first, changed], axis=-1)


def segmented_scan(backend: Backend, starts: Shares, values: Shares) -> tuple[Shares, Shares]:
    """Running sums of ``values`` (components, columns, n) restarted wherever the 0/1
    ``starts`` (components, n) is 1, and whether a start has been seen (a log-depth
    scan, Blelloch 1990: one multiplication round per level). With values that are
    zero except on start rows, it copies each start row's values forward.

    Reveals: nothing.
    """
    length = value_shape(starts)[-1]
    if value_shape(values)[-1] != length:
        raise ShapeMismatch("values and flags must have the same number of rows")
    sums, flags = values, starts
    shift = 1
    while shift < length:
        keep = logical_not(backend, flags[..., shift:])  # 1 - f_i
        left = np.concatenate([np.broadcast_to(keep[:, None], sums[..., shift:].shape),
                               keep[:, None]], axis=1)
        right = np.concatenate([sums[..., :-shift], flags[:, None, :-shift]], axis=1)
        product = backend.mul(left, right)
        width = sums.shape[1]
        sums = np.concatenate([sums[..., :shift], sums[..., shift:] + product[:, :width]],
                              axis=-1)
        joined = backend.add(flags[..., shift:], product[:, width])  # f_i or f_(i-s)
        flags = np.concatenate([flags[..., :shift], joined], axis=-1)
        shift *= 2
    return sums, flags


def segmented_sum(backend: Backend, group_keys: Shares, values: Shares) -> tuple[Shares, Shares]:
    """Running sums of ``values`` (shape (components, columns, n)) within runs of equal
    ``group_keys`` (rows sorted by group), and the 0/1 flag of each run's last row,
    where the running sum is the group's total.

    Reveals: nothing.
    """
    length = value_shape(group_keys)[-1]
    if value_shape(values)[-1] != length:
        raise ShapeMismatch("values and group keys must have the same number of rows")
    starts = segment_starts(backend, group_keys)
    last = np.concatenate([starts[..., 1:], backend.share_public(
        np.ones(min(length, 1), dtype=RING_DTYPE))], axis=-1)
    sums, _ = segmented_scan(backend, starts, values)
    return sums, last
