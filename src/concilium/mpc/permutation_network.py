"""Beneš permutation networks: the switch settings that route a permutation, and
the network applied to public arrays (the reference the oblivious protocol of
:mod:`concilium.mpc.oblivious_switching` is tested against).

A network on ``N = 2^k`` wires has ``2k - 1`` layers of ``N / 2`` two-by-two
switches (Beneš, "Mathematical Theory of Connecting Networks and Telephone
Traffic", 1965). Layer ``l`` pairs the wires whose positions differ only in
bit ``|k - 1 - l|`` (a butterfly, then its mirror image); a switch either
passes its pair straight or swaps it. Any permutation is routed by the
*looping algorithm* (Waksman, "A Permutation Network", JACM 1968): at each
depth, the two inputs of an input switch go to different halves and the two
outputs of an output switch come from different halves, so following the
chain of constraints around each cycle fixes every switch; then both halves
are routed recursively. The routing runs in a compiled kernel
(:mod:`numba`): it is a sequential walk, ``O(N log N)``.

Lengths that are not a power of two are padded: the padding wires map to
themselves.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["apply_network", "layer_pairs", "network_width", "route"]

Switches = npt.NDArray[np.uint8]


def network_width(length: int) -> tuple[int, int]:
    """``(N, k)``: the power of two ``N = 2^k >= length`` (at least 2) the network
    runs on."""
    bits = max(1, int(length - 1).bit_length())
    return 1 << bits, bits


def layer_pairs(width: int, layer: int) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """The (lower, upper) wire positions of each switch of ``layer``, in switch order."""
    bits = width.bit_length() - 1
    step = 1 << abs(bits - 1 - layer)
    positions = np.arange(width, dtype=np.intp)
    lower = positions[(positions & step) == 0]
    return lower, lower | step


_KERNEL: Any = None


def _kernel() -> Any:
    global _KERNEL
    if _KERNEL is None:
        import numba

        @numba.njit(cache=True, nogil=True)
        def kernel(destination, bits, switches):  # numba types it from the arrays
            width = destination.size
            perm = destination.copy()
            inverse = np.empty(width, dtype=np.int64)
            side = np.empty(width, dtype=np.int64)
            routed = np.empty(width, dtype=np.int64)
            last = 2 * bits - 2
            for depth in range(bits - 1):
                step = 1 << (bits - 1 - depth)
                low = step - 1
                for i in range(width):
                    inverse[perm[i]] = i
                    side[i] = -1
                for start in range(width):  # the looping algorithm, one cycle at a time
                    current = start
                    while side[current] == -1:
                        side[current] = 0
                        side[current ^ step] = 1
                        current = inverse[perm[current] ^ step] ^ step
                shift = bits - depth  # compress: drop bit (bits - 1 - depth)
                for i in range(width):
                    half = side[i] * step
                    routed[(i & ~step) | half] = (perm[i] & ~step) | half
                    if i & step == 0:
                        switches[depth, ((i >> shift) << (shift - 1)) | (i & low)] = side[i]
                    target = perm[i]
                    if target & step == 0:
                        index = ((target >> shift) << (shift - 1)) | (target & low)
                        switches[last - depth, index] = side[i]
                for i in range(width):
                    perm[i] = routed[i]
            for i in range(0, width, 2):  # the middle layer: pairs (2i, 2i + 1)
                switches[bits - 1, i >> 1] = 1 if perm[i] != i else 0
            return switches

        _KERNEL = kernel
    return _KERNEL


def route(gather: npt.NDArray[np.integer[Any]]) -> Switches:
    """Switch settings ``(2k - 1, N / 2)`` (1 = swap) of the network that moves
    ``values[gather[i]]`` to position ``i``, for a permutation ``gather`` of
    ``range(length)`` (padded to ``N`` wires)."""
    length = int(np.size(gather))
    width, bits = network_width(length)
    destination = np.arange(width, dtype=np.int64)
    destination[np.asarray(gather, dtype=np.int64)] = np.arange(length, dtype=np.int64)
    switches = np.zeros((2 * bits - 1, width // 2), dtype=np.uint8)
    return np.asarray(_kernel()(destination, bits, switches), dtype=np.uint8)


def apply_network(switches: Switches, values: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """The network on public ``values`` along the last axis (padded to the width and
    cut back): ``values[..., gather]`` for the ``gather`` it was routed for."""
    length = values.shape[-1]
    width = switches.shape[1] * 2
    padded = np.zeros((*values.shape[:-1], width), dtype=values.dtype)
    padded[..., :length] = values
    for layer in range(switches.shape[0]):
        lower, upper = layer_pairs(width, layer)
        swap = switches[layer].astype(bool)
        a, b = padded[..., lower], padded[..., upper]
        padded[..., lower] = np.where(swap, b, a)
        padded[..., upper] = np.where(swap, a, b)
    return padded[..., :length]
