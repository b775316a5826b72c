"""Peer timing for bench/evaluation.py: the same inference jobs in SPU's ABY3 simulator.

SPU pins its own numpy and jax, so run this from the virtual environment that
bench/peer_spu.py describes (spu==0.9.5); it does not import Concilium:

    /tmp/spuenv/bin/python bench/peer_spu_evaluation.py logistic 100000
    /tmp/spuenv/bin/python bench/peer_spu_evaluation.py boosting 10000 [CHUNK]
    /tmp/spuenv/bin/python bench/peer_spu_evaluation.py boosting 1000 --repeats 1 --warmup 0

Jobs, on synthetic numpy data (timing only; the model is random):
``logistic`` scores ``sigmoid(x @ w + b)`` for ``ROWS x 30`` fixed-point rows;
``boosting`` evaluates 100 complete depth-6 trees obliviously: every node
compares ``x[:, feature[node]] <= threshold[node]`` (feature indices are public
constants of the program, thresholds secret), leaf indicators are products
level by level, and the score is their dot product with the secret leaf values,
summed over the trees. Rows, weights, thresholds and leaf values are all SPU
inputs (secret shares); the scores are revealed.

Three parties run as threads of one process (spu.utils.simulation, ABY3, 64-bit
ring, 18 fraction bits, as in bench/peer_spu.py). The program is compiled once
outside the timing; a timed run is the whole job: sharing the inputs, compute,
reconstructing the output. ``CHUNK`` > 0 runs the rows in chunks of that size
(the model is shared again with each chunk) and sums the chunks' times; 0 runs
them in one call. The default is 1000 for ``boosting`` (SPU's peak memory is
~3.5 GB per 1000 rows, so 10^4 rows in one call would need ~36 GB) and 0 for
``logistic``.
``spu_seconds`` is the median of ``--repeats`` runs (3) after ``--warmup``
untimed ones (1); ``spu_times`` lists them. The last stdout line is one JSON
object (SPU logs on stdout before it); it also carries ``spu_version``,
``spu_repeats``, ``spu_warmup`` and ``spu_chunks``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import spu  # type: ignore[import-not-found]
import spu.utils.frontend as spu_fe  # type: ignore[import-not-found]
import spu.utils.simulation as spsim  # type: ignore[import-not-found]

FEATURES, TREES, DEPTH = 30, 100, 6
NODES, LEAVES = 2**DEPTH - 1, 2**DEPTH
REPEATS, WARMUP = 3, 1
DEFAULT_CHUNK = {"logistic": 0, "boosting": 1000}  # rows per simulator call, 0: all
PROTOCOL = "ABY3 simulator, 3 parties"


def _config() -> Any:
    # jax.nn.sigmoid compiles to 1 / (1 + exp(-x)) with SPU's fixed-point exp and
    # reciprocal; RuntimeConfig.sigmoid_mode does not change it (same time and error)
    return spu.RuntimeConfig(protocol=spu.ProtocolKind.ABY3, field=spu.FieldType.FM64,
                             fxp_fraction_bits=18)


def _rows(rows: int, seed: int = 1) -> np.ndarray:
    data = np.random.default_rng(seed).normal(size=(rows, FEATURES))
    return np.round(data * 4096.0) / 4096.0  # a few decimals, like the project's data


def logistic_model() -> tuple[Callable[..., Any], tuple[np.ndarray, ...],
                              Callable[..., np.ndarray]]:
    """(jax function, secret model inputs, numpy reference)."""
    data = np.random.default_rng(2)
    weights, bias = data.normal(size=FEATURES) * 0.3, np.array(data.normal() * 0.5)

    def score(x: jax.Array, w: jax.Array, b: jax.Array) -> jax.Array:
        return jax.nn.sigmoid(x @ w + b)

    def reference(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-(x @ w + b)))
    return score, (weights, bias), reference


def boosting_model() -> tuple[Callable[..., Any], tuple[np.ndarray, ...],
                              Callable[..., np.ndarray]]:
    """(jax function, secret model inputs, numpy reference); nodes in heap order
    (children of ``i`` are ``2i + 1`` left, ``2i + 2`` right), left when ``<=``."""
    data = np.random.default_rng(3)
    feature = data.integers(0, FEATURES, size=(TREES, NODES))  # public constants
    thresholds = data.normal(size=(TREES, NODES)) * 0.8
    leaves = data.normal(size=(TREES, LEAVES)) * 0.1
    # x[:, feature] as a product with a public 0/1 selection matrix, local in SPU; its
    # gather (indexing, take or concatenated slices) takes ~35 s per 1000 rows here
    select = np.eye(FEATURES, dtype=np.float32)[:, feature.ravel()]

    def score(x: jax.Array, threshold: jax.Array, leaf: jax.Array) -> jax.Array:
        chosen = (x @ select).reshape(x.shape[0], TREES, NODES)  # x[:, feature]
        go_left = (chosen <= threshold[None]).astype(jnp.int32)  # (rows, T, N)
        indicator = jnp.stack([go_left[:, :, 0], 1 - go_left[:, :, 0]], axis=-1)
        for level in range(1, DEPTH):
            first = 2**level - 1
            left = indicator * go_left[:, :, first:first + 2**level]
            indicator = jnp.stack([left, indicator - left], axis=-1)
            indicator = indicator.reshape(x.shape[0], TREES, 2**(level + 1))
        return jnp.sum(indicator * leaf[None], axis=(1, 2))

    def reference(x: np.ndarray, threshold: np.ndarray, leaf: np.ndarray) -> np.ndarray:
        node = np.zeros((x.shape[0], TREES), dtype=np.int64)
        trees = np.arange(TREES)
        for _ in range(DEPTH):
            value = np.take_along_axis(x, feature[trees, node], axis=1)
            node = 2 * node + np.where(value <= threshold[trees, node], 1, 2)
        return leaf[trees, node - NODES].sum(axis=1)
    return score, (thresholds, leaves), reference


def run(job: str, rows: int, chunk: int | None = None, repeats: int = REPEATS,
        warmup: int = WARMUP) -> dict[str, Any]:
    function, model, reference = (logistic_model if job == "logistic" else boosting_model)()
    x = _rows(rows)
    if chunk is None:
        chunk = DEFAULT_CHUNK[job]
    size = chunk if 0 < chunk < rows else rows
    starts = list(range(0, rows, size))
    simulator = spsim.Simulator(3, _config())
    executables: dict[int, Any] = {}
    compile_seconds = 0.0
    for length in {min(size, rows - s) for s in starts}:  # at most two chunk shapes
        start = time.perf_counter()
        arguments = (x[:length], *model)
        executables[length], _ = spu_fe.compile(
            spu_fe.Kind.JAX, function, arguments, {}, [f"in{i}" for i in range(len(arguments))],
            [spu.Visibility.VIS_SECRET] * len(arguments),
            lambda outputs: [f"out{i}" for i in range(len(outputs))])
        compile_seconds += time.perf_counter() - start

    def whole_job() -> tuple[float, np.ndarray]:
        seconds, scores = 0.0, []
        for first in starts:
            part = x[first:first + size]
            start = time.perf_counter()
            (out,) = simulator(executables[len(part)], part, *model)  # share, run, reveal
            seconds += time.perf_counter() - start
            scores.append(np.asarray(out, dtype=np.float64))
        return seconds, np.concatenate(scores)

    times, scores = [], np.zeros(0)
    for index in range(warmup + repeats):
        seconds, scores = whole_job()
        print(f"{job} rows={rows} run {index}: {seconds:.2f} s", file=sys.stderr, flush=True)
        if index >= warmup:
            times.append(seconds)
    record: dict[str, Any] = {
        "spu_job": job, "spu_rows": rows, "spu_seconds": statistics.median(times),
        "spu_protocol": PROTOCOL, "spu_version": str(getattr(spu, "__version__", "?")),
        "spu_times": times, "spu_repeats": repeats, "spu_warmup": warmup,
        "spu_chunks": len(starts), "spu_compile_seconds": compile_seconds,
        "spu_max_error": float(np.abs(scores - reference(x, *model)).max())}
    if len(starts) > 1:
        record["spu_note"] = (f"rows in {len(starts)} chunks of {size}, one simulator call "
                              f"each (model shared again per chunk), chunk times summed; "
                              f"SPU peaks at ~3.5 GB per 1000 boosting rows (one call on "
                              f"10^4 rows would need ~36 GB)")
    if job == "logistic":
        record["spu_sigmoid"] = "jax.nn.sigmoid: 1 / (1 + exp(-x)), SPU's exp and reciprocal"
    return record


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("job", choices=["logistic", "boosting"])
    parser.add_argument("rows", type=int)
    parser.add_argument("chunk", type=int, nargs="?", default=None,
                        help="rows per simulator call, 0: all (default per job)")
    parser.add_argument("--repeats", type=int, default=REPEATS, help="timed runs (median)")
    parser.add_argument("--warmup", type=int, default=WARMUP, help="untimed runs first")
    args = parser.parse_args(argv)
    if args.rows < 1 or args.repeats < 1 or args.warmup < 0:
        parser.error("rows and repeats must be positive, warmup not negative")
    record = run(args.job, args.rows, args.chunk, args.repeats, args.warmup)
    print(json.dumps(record), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
