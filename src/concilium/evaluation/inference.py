"""A vendor's model on secret-shared rows: its weights shared by the vendor, the rows by
the data owners, every step in MPC, nothing per record revealed.

1. :func:`share_model`: the vendor inputs every secret number of its model
   (weights, biases, thresholds, leaf values: one input each); every other party
   passes the model's public shape (:meth:`~concilium.evaluation.models.LinearModel.shape`,
   which the computation spec carries), and the vendor's model must have that shape.
2. :func:`predict`: the model's raw output (the *decision*: the logit, the class
   scores before softmax, or the regression value), in fixed point. Costs:

   - linear model: one secret matrix product (communication per output, whatever
     the number of features) and its truncation;
   - neural network: per layer a matrix product, and a secure ReLU (a comparison
     and a product) per hidden unit and row;
   - tree ensemble of ``T`` trees of depth ``d``: ``T (2^d - 1)`` comparisons per
     row (the feature each node tests is public, so the row's value is selected
     locally), ``d`` rounds of products for the leaf indicators (``T (2^d - 1)``
     products per row), and one secret matrix product of the indicators with the
     leaf values (communication per output). Rows go through in chunks, so memory
     stays bounded.
3. :meth:`Prediction.probability`, :meth:`Prediction.predicted_class`: the link
   (sigmoid, softmax) and the argmax, only when a metric needs them: accuracy and
   AUC need neither (the link is monotone; the class is the decision's sign).

Reveals: nothing. The model's shape is public by the spec (see
:mod:`concilium.evaluation.models`); its numbers never leave secret shares.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from concilium.data import OutsideParty, SecretArray, Session
from concilium.data import functions as fn
from concilium.errors import ModelError
from concilium.evaluation.models import (
    LinearModel,
    Model,
    NeuralNetwork,
    Task,
)

__all__ = ["Prediction", "SharedLinear", "SharedModel", "SharedNetwork", "SharedTrees",
           "contribute_model", "model_numbers", "predict", "share_model"]

#: Tree comparisons per chunk (rows x trees x nodes): bounds each party's memory.
TREE_CHUNK = 1 << 21


@dataclass(frozen=True)
class SharedLinear:
    weights: SecretArray  # (features, outputs)
    intercepts: SecretArray  # (outputs,)
    task: Task
    link: str


@dataclass(frozen=True)
class SharedNetwork:
    layers: tuple[tuple[SecretArray, SecretArray, str], ...]
    task: Task
    link: str


@dataclass(frozen=True)
class SharedTrees:
    node_features: np.ndarray  # (trees, nodes), public
    thresholds: SecretArray  # (trees, nodes)
    leaves: SecretArray  # (trees * leaves, outputs)
    base: SecretArray  # (outputs,)
    mean: bool
    depth: int
    task: Task
    link: str


SharedModel = SharedLinear | SharedNetwork | SharedTrees


def share_model(session: Session, vendor: int, model: Model | None,
                shape: dict[str, Any]) -> SharedModel:
    """Secret-share the vendor's model. ``model`` at the vendor (None elsewhere),
    ``shape`` (the spec's ``model.shape()``) everywhere; a vendor whose model does
    not have the agreed shape raises ModelError before sharing anything. The
    vendor may be an outside party: it calls :func:`contribute_model` instead."""
    numbers = None
    if session.party == vendor:
        if model is None:
            raise ModelError(f"party {vendor} is the vendor and must pass its model")
        numbers = model_numbers(model, shape, session.codec.fractional_bits)
    elif model is not None:
        raise ModelError(f"party {session.party} passed a model; only the vendor does")
    flags = _input_kinds(shape)
    shared = [session.input(vendor, None if numbers is None else numbers[k][0], fixed=fixed)
              for k, fixed in enumerate(flags)]
    return _assemble(session, shape, shared)


def contribute_model(outside: OutsideParty, model: Model, shape: dict[str, Any]) -> None:
    """An outside vendor's side of :func:`share_model`: secret-share the model's numbers
    into the compute parties, in the order they input them.

    Reveals: the model's shape (public by the spec), nothing of its numbers."""
    for values, fixed in model_numbers(model, shape, outside.codec.fractional_bits):
        outside.contribute(values, fixed=fixed)


def model_numbers(model: Model, shape: dict[str, Any], fractional_bits: int
                  ) -> list[tuple[np.ndarray, bool]]:
    """The vendor's inputs, in order, each with its fixed-point flag: weights and
    intercepts (linear), weights and biases per layer (network), thresholds on the
    half grid (integers, see :func:`_half_grid`), leaf values and base scores
    (trees). ModelError if ``model`` does not have the agreed ``shape``."""
    if _plain(model.shape()) != _plain(shape):
        raise ModelError("the vendor's model does not have the shape the computation "
                         "spec states; re-propose with this model's shape")
    if isinstance(model, LinearModel):
        return [(model.weights.T, True), (model.intercepts, True)]
    if isinstance(model, NeuralNetwork):
        return [(values, True) for layer in model.layers
                for values in (layer.weights, layer.biases)]
    outputs = int(shape["outputs"])
    return [(_half_grid(model.thresholds, fractional_bits), False),
            (model.leaves.reshape(-1, outputs), True), (model.base, True)]


def _input_kinds(shape: dict[str, Any]) -> list[bool]:
    """The fixed-point flag of each of the vendor's inputs, from the public shape."""
    kind = shape["model"]
    if kind == "linear":
        return [True, True]
    if kind == "neural_network":
        return [True, True] * len(shape["layers"])
    if kind == "tree_ensemble":
        return [False, True, True]
    raise ModelError(f"unknown model kind {kind!r} in the spec")


def _assemble(session: Session, shape: dict[str, Any], shared: list[SecretArray]
              ) -> SharedModel:
    task = _shape_task(shape)
    kind = shape["model"]
    if kind == "linear":
        return SharedLinear(shared[0], shared[1], task, str(shape["link"]))
    if kind == "neural_network":
        layers = tuple((shared[2 * k], shared[2 * k + 1], str(activation))
                       for k, (_, activation) in enumerate(shape["layers"]))
        return SharedNetwork(layers, task, str(shape["layers"][-1][1]))
    bits = session.codec.fractional_bits + 1
    return SharedTrees(
        np.asarray(shape["node_features"], dtype=np.int64),
        SecretArray(session, shared[0].shares, bits), shared[1], shared[2],
        shape["aggregate"] == "mean", int(shape["depth"]), task, str(shape["link"]))


def _half_grid(thresholds: np.ndarray, fractional_bits: int) -> np.ndarray:
    """Thresholds with one fraction bit more than the rows: ``x <= t`` is decided as
    ``2 enc(x) <= round(2^(f+1) t)``. Rows on the fixed-point grid then take
    scikit-learn's branch exactly (its thresholds are midpoints between training
    values, which for grid data fall on half steps), and so does a row equal to a
    threshold that is not on the grid (decimal data: scikit-learn may split just
    above a value, at a float32 rounding of it); a row within half a step of a
    threshold that is neither may differ."""
    return np.round(thresholds * float(1 << (fractional_bits + 1))).astype(np.int64)


def _plain(shape: dict[str, Any]) -> dict[str, Any]:
    return {key: (list(value) if isinstance(value, tuple) else value)
            for key, value in shape.items()}


def _shape_task(shape: dict[str, Any]) -> Task:
    task = shape.get("task")
    if task not in ("binary", "multiclass", "regression"):
        raise ModelError("the model's shape must state its task: binary, multiclass or "
                         "regression")
    return task


@dataclass(frozen=True)
class Prediction:
    """A model's secret output for every row: ``decision`` (rows,) for binary
    classifiers and regressors, (rows, classes) for multiclass; ``link`` says what
    it is: ``"logistic"`` (binary: the logit of class 1), ``"softmax"`` (class
    scores before softmax), ``"identity"`` (a regression value, or already a
    probability: forests average their trees' class probabilities)."""

    decision: SecretArray
    task: Task
    link: str

    def probability(self) -> SecretArray:
        """P(class 1) (binary) or per-class probabilities (multiclass).
        Reveals: nothing."""
        if self.task == "regression":
            raise ModelError("a regressor has no class probabilities")
        if self.link == "identity":
            return self.decision
        if self.link == "logistic":
            return fn.sigmoid(self.decision)
        shifted = self.decision - self.decision.max(axis=1).reshape(-1, 1)
        exponentials = fn.exp(shifted)
        return exponentials * fn.reciprocal(exponentials.sum(axis=1)).reshape(-1, 1)

    @property
    def threshold(self) -> float:
        """Binary: class 1 where the decision is above this (0 for a logit, 1/2 for a
        probability), as scikit-learn's ``predict``."""
        return 0.5 if self.link == "identity" else 0.0

    def predicted_class(self) -> SecretArray:
        """Binary: the predicted class as integers 0/1; multiclass: a one-hot
        (rows, classes) integer matrix of the argmax (the first on ties).
        Reveals: nothing."""
        if self.task == "binary":
            return self.decision > self.threshold
        if self.task == "multiclass":
            index = self.decision.argmax(axis=1).reshape(-1, 1)
            classes = self.decision.shape[1]
            session = self.decision.session
            return index == session.constant(np.arange(classes).reshape(1, -1))
        raise ModelError("a regressor has no predicted class")


def predict(model: SharedModel, features: SecretArray) -> Prediction:
    """The model on secret rows ``features`` (rows, features), fixed point."""
    if features.ndim != 2:
        raise ModelError(f"features must be a (rows, features) array, not {features.shape}")
    if isinstance(model, SharedLinear):
        decision = features @ model.weights + model.intercepts
    elif isinstance(model, SharedNetwork):
        decision = _network(model, features)
    else:
        decision = _trees(model, features)
    if model.task != "multiclass":
        decision = decision.reshape(-1)
    return Prediction(decision, model.task, model.link)


def _network(model: SharedNetwork, features: SecretArray) -> SecretArray:
    values = features
    for index, (weights, biases, activation) in enumerate(model.layers):
        values = values @ weights + biases
        last = index == len(model.layers) - 1
        if activation == "relu":
            values = fn.relu(values)
        elif not last and activation != "identity":
            raise ModelError(f"a hidden layer's activation {activation!r} is not supported")
    return values


def _trees(model: SharedTrees, features: SecretArray) -> SecretArray:
    """Compare, descend level by level, then one product with the leaf values."""
    rows = features.shape[0]
    trees, nodes = model.node_features.shape
    per_chunk = max(1, TREE_CHUNK // max(1, trees * nodes))
    parts = [_tree_chunk(model, features[start:start + per_chunk])
             for start in range(0, rows, per_chunk)]
    total = parts[0] if len(parts) == 1 else SecretArray.concatenate(parts, axis=0)
    if model.mean:
        total = total * (1.0 / trees)
    return total + model.base


def _tree_chunk(model: SharedTrees, features: SecretArray) -> SecretArray:
    rows = features.shape[0]
    trees, nodes = model.node_features.shape
    selected = features[:, model.node_features.reshape(-1)].reshape(rows, trees, nodes)
    right = selected > model.thresholds.reshape(1, trees, nodes)  # 1: x > t, go right
    reach = _leaf_indicators(right, model.depth)
    return reach.reshape(rows, -1) @ model.leaves


def _leaf_indicators(right: SecretArray, depth: int) -> SecretArray:
    """(rows, trees, 2^depth) integer 0/1: which leaf each row reaches in each tree.
    Level ``l`` holds ``2^l`` indicators; each child is ``parent * bit`` (right) or
    ``parent - parent * bit`` (left), one product per node, one round per level."""
    rows, trees, _ = right.shape
    level = right[:, :, 0:1]
    reach = SecretArray.concatenate([1 - level, level], axis=2)
    for depth_index in range(1, depth):
        first = (1 << depth_index) - 1
        bits = right[:, :, first:first + (1 << depth_index)]
        go_right = reach * bits
        reach = SecretArray.stack([reach - go_right, go_right], axis=3).reshape(
            rows, trees, 1 << (depth_index + 1))
    return reach


def feature_matrix(session: Session, columns: Sequence[SecretArray]) -> SecretArray:
    """Stack fixed-point columns (rows,) into the (rows, features) matrix ``predict``
    takes. Local. Reveals: nothing."""
    return SecretArray.stack([column.as_fixed() for column in columns], axis=1)
