"""Models a vendor brings to an evaluation: numbers and a shape, nothing executable.

A model is one of three frozen descriptions, imported from a scikit-learn
object (:func:`from_sklearn`) or from ONNX (:mod:`concilium.evaluation.onnx_import`):

- :class:`LinearModel`: ``link(x @ weights.T + intercepts)``; linear
  regression (identity), logistic regression (logistic for two classes,
  softmax for more);
- :class:`NeuralNetwork`: dense layers, each ``activation(x @ weights + biases)``
  with ReLU between layers and identity, logistic or softmax at the end;
- :class:`TreeEnsemble`: decision trees padded to one depth (complete binary
  trees in heap order: node ``i`` has children ``2i+1`` (taken when
  ``x[feature] <= threshold``, scikit-learn's rule) and ``2i+2``), their leaf
  values summed (gradient boosting, learning rate folded in) or averaged
  (forests), plus a base score, then the link.

What is secret and what the shape reveals (:meth:`shape` gives it, the spec
states it and approvers see it): weights, biases, thresholds and leaf values
are secret-shared by the vendor; the kinds and sizes of layers, the number
of trees, their padded depth and *which feature each node tests* are public
(revealing the features saves a secret selection per node and row; a padding
node, under a leaf shallower than the depth, tests feature 0 and both its
children carry the leaf's value).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from concilium.errors import ModelError, UnsupportedModel

__all__ = ["JSON_FORMAT", "DenseLayer", "LinearModel", "Model", "NeuralNetwork", "Task",
           "TreeEnsemble", "from_sklearn", "model_from_json", "model_to_json"]

Task = Literal["binary", "multiclass", "regression"]
Link = Literal["identity", "logistic", "softmax"]
Activation = Literal["identity", "relu", "logistic", "softmax"]
FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def _task(classes: tuple[int, ...]) -> Task:
    return "regression" if not classes else "binary" if len(classes) == 2 else "multiclass"


@dataclass(frozen=True)
class LinearModel:
    """``link(x @ weights.T + intercepts)``: ``weights`` (outputs, features)."""

    weights: FloatArray
    intercepts: FloatArray
    link: Link
    classes: tuple[int, ...] = ()

    @property
    def features(self) -> int:
        return int(self.weights.shape[1])

    @property
    def task(self) -> Task:
        return _task(self.classes)

    def shape(self) -> dict[str, Any]:
        return {"model": "linear", "task": self.task, "features": self.features,
                "outputs": int(self.weights.shape[0]), "link": self.link}


@dataclass(frozen=True)
class DenseLayer:
    """``activation(x @ weights + biases)``: ``weights`` (inputs, outputs)."""

    weights: FloatArray
    biases: FloatArray
    activation: Activation


@dataclass(frozen=True)
class NeuralNetwork:
    """Dense layers applied in order."""

    layers: tuple[DenseLayer, ...]
    classes: tuple[int, ...] = ()

    @property
    def features(self) -> int:
        return int(self.layers[0].weights.shape[0])

    @property
    def task(self) -> Task:
        return _task(self.classes)

    def shape(self) -> dict[str, Any]:
        return {"model": "neural_network", "task": self.task, "features": self.features,
                "layers": [[int(layer.weights.shape[1]), layer.activation]
                           for layer in self.layers]}


@dataclass(frozen=True)
class TreeEnsemble:
    """Complete trees of one depth: ``node_features``/``thresholds`` (trees, 2^depth - 1),
    ``leaves`` (trees, 2^depth, outputs); ``aggregate`` sums or averages the trees'
    leaf values, ``base`` (outputs,) is added, then ``link``."""

    node_features: IntArray
    thresholds: FloatArray
    leaves: FloatArray
    base: FloatArray
    aggregate: Literal["sum", "mean"]
    link: Link
    features: int
    classes: tuple[int, ...] = ()
    depth: int = field(init=False)

    def __post_init__(self) -> None:
        depth = int(np.log2(self.leaves.shape[1]))
        if self.leaves.shape[1] != 1 << depth or self.thresholds.shape != (
                self.leaves.shape[0], (1 << depth) - 1):
            raise ModelError("a tree ensemble needs complete trees of one depth")
        object.__setattr__(self, "depth", depth)

    @property
    def task(self) -> Task:
        return _task(self.classes)

    def shape(self) -> dict[str, Any]:
        return {"model": "tree_ensemble", "task": self.task, "features": self.features,
                "trees": int(self.leaves.shape[0]), "depth": self.depth,
                "outputs": int(self.leaves.shape[2]), "aggregate": self.aggregate,
                "link": self.link, "node_features": self.node_features.tolist()}


Model = LinearModel | NeuralNetwork | TreeEnsemble


def from_sklearn(model: Any) -> Model:
    """The description of a fitted scikit-learn estimator. Supported:
    LinearRegression, Ridge, Lasso, LogisticRegression, MLPClassifier, MLPRegressor,
    DecisionTreeClassifier/Regressor, RandomForestClassifier/Regressor,
    GradientBoostingClassifier/Regressor. Anything else raises ModelError."""
    name = type(model).__name__
    if name in ("LinearRegression", "Ridge", "Lasso", "ElasticNet"):
        weights = np.atleast_2d(np.asarray(model.coef_, dtype=np.float64))
        return LinearModel(weights, np.atleast_1d(np.asarray(model.intercept_, np.float64)),
                           "identity")
    if name == "LogisticRegression":
        classes = _classes(model)
        link: Link = "logistic" if len(classes) == 2 else "softmax"
        return LinearModel(np.asarray(model.coef_, dtype=np.float64),
                           np.asarray(model.intercept_, dtype=np.float64), link, classes)
    if name in ("MLPClassifier", "MLPRegressor"):
        return _mlp(model, name == "MLPClassifier")
    if name in ("DecisionTreeClassifier", "DecisionTreeRegressor", "RandomForestClassifier",
                "RandomForestRegressor", "ExtraTreesClassifier", "ExtraTreesRegressor"):
        return _forest(model, name.endswith("Classifier"))
    if name in ("GradientBoostingClassifier", "GradientBoostingRegressor"):
        return _boosting(model, name.endswith("Classifier"))
    raise UnsupportedModel(
        f"cannot evaluate a scikit-learn {name}: supported are linear and logistic "
        "regression, MLPs, decision trees, random forests and gradient boosting",
        operator=f"sklearn:{name}")


def _classes(model: Any) -> tuple[int, ...]:
    classes = np.asarray(model.classes_)
    if classes.dtype.kind not in "iub" or np.any(classes != np.arange(len(classes))):
        raise ModelError("class labels must be the integers 0, 1, ..., k-1; "
                                 f"this model has {classes.tolist()}")
    return tuple(int(c) for c in classes)


def _mlp(model: Any, classifier: bool) -> NeuralNetwork:
    if model.activation not in ("relu", "identity"):
        raise UnsupportedModel(f"MLP activation {model.activation!r} is not supported "
                               "between layers: use relu", operator=f"mlp:{model.activation}")
    hidden: Activation = "relu" if model.activation == "relu" else "identity"
    out = {"identity": "identity", "logistic": "logistic", "softmax": "softmax"}.get(
        model.out_activation_)
    if out is None:
        raise UnsupportedModel(f"MLP output {model.out_activation_!r} is not supported",
                               operator=f"mlp:{model.out_activation_}")
    count = len(model.coefs_)
    layers = tuple(DenseLayer(np.asarray(w, np.float64), np.asarray(b, np.float64),
                              hidden if k < count - 1 else out)  # type: ignore[arg-type]
                   for k, (w, b) in enumerate(zip(model.coefs_, model.intercepts_,
                                                  strict=True)))
    return NeuralNetwork(layers, _classes(model) if classifier else ())


def _complete(tree: Any, depth: int, outputs: int, scale: float,
              column: int | None) -> tuple[IntArray, FloatArray, FloatArray]:
    """One fitted scikit-learn tree as a complete tree of ``depth`` in heap order; leaf
    values times ``scale`` (into output ``column`` only, if given)."""
    inner = tree.tree_
    features = np.zeros((1 << depth) - 1, dtype=np.int64)
    thresholds = np.zeros((1 << depth) - 1, dtype=np.float64)
    leaves = np.zeros((1 << depth, outputs), dtype=np.float64)

    def value(node: int) -> FloatArray:
        raw = np.asarray(inner.value[node], dtype=np.float64).reshape(-1)
        if column is not None:
            one = np.zeros(outputs)
            one[column] = raw[0]
            return one * scale
        return raw * scale

    def walk(node: int, position: int, level: int) -> None:
        leaf = inner.children_left[node] == -1
        if level == depth:
            leaves[position - ((1 << depth) - 1)] = value(node)
            return
        if leaf:
            walk(node, 2 * position + 1, level + 1)
            walk(node, 2 * position + 2, level + 1)
            return
        features[position] = int(inner.feature[node])
        thresholds[position] = float(inner.threshold[node])
        walk(int(inner.children_left[node]), 2 * position + 1, level + 1)
        walk(int(inner.children_right[node]), 2 * position + 2, level + 1)

    walk(0, 0, 0)
    return features, thresholds, leaves


def _ensemble(trees: list[tuple[IntArray, FloatArray, FloatArray]], base: FloatArray,
              aggregate: Literal["sum", "mean"], link: Link, features: int,
              classes: tuple[int, ...]) -> TreeEnsemble:
    return TreeEnsemble(np.stack([t[0] for t in trees]), np.stack([t[1] for t in trees]),
                        np.stack([t[2] for t in trees]), base, aggregate, link, features,
                        classes)


def _forest(model: Any, classifier: bool) -> TreeEnsemble:
    estimators = list(getattr(model, "estimators_", [model]))
    depth = max(1, max(int(e.tree_.max_depth) for e in estimators))
    classes = _classes(model) if classifier else ()
    outputs = len(classes) if classifier else 1
    trees = []
    for estimator in estimators:
        features, thresholds, leaves = _complete(estimator, depth, outputs, 1.0, None)
        if classifier:  # scikit-learn >= 1.4 stores fractions; older versions counts
            leaves = leaves / np.maximum(leaves.sum(axis=1, keepdims=True), 1e-300)
        if len(classes) == 2:  # one output, P(class 1), as binary models have
            leaves = leaves[:, 1:]
        trees.append((features, thresholds, leaves))
    return _ensemble(trees, np.zeros(trees[0][2].shape[1]), "mean", "identity",
                     int(model.n_features_in_), classes)


def _boosting(model: Any, classifier: bool) -> TreeEnsemble:
    stages = np.asarray(model.estimators_)  # (stages, outputs) of regression trees
    depth = max(1, max(int(e.tree_.max_depth) for e in stages.reshape(-1)))
    classes = _classes(model) if classifier else ()
    outputs = stages.shape[1]
    rate = float(model.learning_rate)
    trees = [_complete(stages[s, k], depth, outputs, rate, k)
             for s in range(stages.shape[0]) for k in range(outputs)]
    base = _boosting_base(model, outputs)
    link: Link = ("identity" if not classifier else "logistic" if outputs == 1 else "softmax")
    return _ensemble(trees, base, "sum", link, int(model.n_features_in_), classes)


def _boosting_base(model: Any, outputs: int) -> FloatArray:
    """The raw prediction before the first tree (the init estimator's), taken from
    scikit-learn itself on one zero row, since it does not depend on the features."""
    init = model.init_
    if init == "zero":
        return np.zeros(outputs)
    probe = np.zeros((1, int(model.n_features_in_)))
    return np.asarray(model._raw_predict_init(probe), dtype=np.float64).reshape(-1)


#: The format tag of a model saved by :func:`model_to_json`.
JSON_FORMAT = "concilium-model/v1"


def model_to_json(model: Model) -> bytes:
    """A model as a JSON file (numbers as lists): what a vendor keeps at its node when
    its model is not in ONNX. Canonical, so the same model has the same SHA-256."""
    import json

    def listed(value: Any) -> Any:
        return value.tolist() if isinstance(value, np.ndarray) else value

    if isinstance(model, LinearModel):
        body: dict[str, Any] = {"kind": "linear", "weights": listed(model.weights),
                                "intercepts": listed(model.intercepts), "link": model.link}
    elif isinstance(model, NeuralNetwork):
        body = {"kind": "neural_network",
                "layers": [{"weights": listed(layer.weights), "biases": listed(layer.biases),
                            "activation": layer.activation} for layer in model.layers]}
    else:
        body = {"kind": "tree_ensemble", "node_features": listed(model.node_features),
                "thresholds": listed(model.thresholds), "leaves": listed(model.leaves),
                "base": listed(model.base), "aggregate": model.aggregate,
                "link": model.link, "features": model.features}
    body.update(format=JSON_FORMAT, classes=list(model.classes))
    return json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def model_from_json(content: bytes) -> Model:
    """The model of a file written by :func:`model_to_json`; ModelError if malformed."""
    import json

    try:
        body = json.loads(content)
        if body.get("format") != JSON_FORMAT:
            raise ModelError(f"not a Concilium model file (format {body.get('format')!r}, "
                             f"expected {JSON_FORMAT!r})")
        classes = tuple(int(c) for c in body["classes"])

        def floats(value: Any) -> FloatArray:
            array = np.asarray(value, dtype=np.float64)
            if not np.all(np.isfinite(array)):
                raise ModelError("a model's numbers must be finite")
            return array

        kind = body["kind"]
        if kind == "linear":
            return LinearModel(floats(body["weights"]), floats(body["intercepts"]),
                               body["link"], classes)
        if kind == "neural_network":
            return NeuralNetwork(tuple(DenseLayer(floats(layer["weights"]),
                                                  floats(layer["biases"]), layer["activation"])
                                       for layer in body["layers"]), classes)
        if kind == "tree_ensemble":
            return TreeEnsemble(np.asarray(body["node_features"], dtype=np.int64),
                                floats(body["thresholds"]), floats(body["leaves"]),
                                floats(body["base"]), body["aggregate"], body["link"],
                                int(body["features"]), classes)
        raise ModelError(f"unknown model kind {kind!r}")
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise ModelError(f"malformed model file: {error}") from None

