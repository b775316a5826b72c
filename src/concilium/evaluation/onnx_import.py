"""Models from ONNX, for a whitelist of operators: read, never run.

:func:`from_onnx` interprets an ONNX graph symbolically (parsed with ``onnx``; nothing
executed, unpickled or evaluated; external tensors refused) into a description of
:mod:`concilium.evaluation.models` in from_sklearn's form: binary classifiers have one
output (class 1's logit or probability), trees are padded complete, a sum of trees without
a base score (a forest: skl2onnx divides its leaves by their number) is their mean.
Operators outside :data:`SUPPORTED_OPERATORS`, or supported ones used otherwise (Sub and
Concat only as a binary MLP's ``(1 - p, p)``; Cast, Identity, Reshape, Flatten, Normalizer,
ArgMax, ArrayFeatureExtractor, ZipMap only passing scores through or deriving labels), raise
:class:`UnsupportedModel` naming ``domain:op_type`` and its opset; malformed models raise
:class:`ModelError`. :func:`model_hash` is what approvers sign.

The reading is split by what it reads: :mod:`~concilium.evaluation.onnx_graph` (symbolic
values, the node at hand and its attributes), :mod:`~concilium.evaluation.onnx_layers`
(dense layers) and :mod:`~concilium.evaluation.onnx_trees` (tree ensembles); this module
validates, dispatches each node to its operator and reads linear models, pass-through
operators and labels.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
from google.protobuf.message import DecodeError

from concilium.errors import ModelError, UnsupportedModel
from concilium.evaluation.models import FloatArray, LinearModel, Model, NeuralNetwork, TreeEnsemble
from concilium.evaluation.onnx_graph import (
    Derived,
    Graph,
    Network,
    Scores,
    Value,
    class_labels,
    operator,
    opset,
)
from concilium.evaluation.onnx_layers import (
    activate,
    add,
    concat,
    gemm,
    matmul,
    neural_network,
    sub,
)
from concilium.evaluation.onnx_trees import MAXIMUM_TREE_DEPTH, tree_classifier, tree_regressor

__all__ = ["MAXIMUM_TREE_DEPTH", "SUPPORTED_OPERATORS", "Source", "from_onnx", "model_hash"]

Source = bytes | str | Path | onnx.ModelProto

SUPPORTED_OPERATORS: frozenset[str] = frozenset(
    [f"ai.onnx:{op}" for op in ("Add", "ArgMax", "Cast", "Concat", "Flatten", "Gemm",
                                "Identity", "MatMul", "Relu", "Reshape", "Sigmoid",
                                "Softmax", "Sub")]
    + [f"ai.onnx.ml:{op}" for op in ("ArrayFeatureExtractor", "LinearClassifier",
                                     "LinearRegressor", "Normalizer", "ZipMap",
                                     "TreeEnsembleClassifier", "TreeEnsembleRegressor")])


def model_hash(source: Source) -> str:
    """SHA-256 (hex) of the serialized ONNX bytes: the file or bytes as given, or a
    ModelProto's ``SerializeToString()``. It does not validate the model."""
    return hashlib.sha256(_serialized(source)).hexdigest()


def from_onnx(source: Source) -> Model:
    """The description of an ONNX model given as bytes, a path or a ModelProto."""
    model = source if isinstance(source, onnx.ModelProto) else _parse(_serialized(source))
    _validate(model)
    return _interpret(Graph(model))


def _serialized(source: Source) -> bytes:
    if isinstance(source, onnx.ModelProto):
        return source.SerializeToString()
    if isinstance(source, bytes):
        return source
    try:
        return Path(source).read_bytes()
    except OSError as error:
        raise ModelError(f"cannot read the ONNX model {str(source)!r}: "
                         f"{error.strerror or error}") from error


def _parse(data: bytes) -> onnx.ModelProto:
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except DecodeError as error:
        raise ModelError("not an ONNX model: the bytes do not parse as a ModelProto "
                         "(truncated, or another format)") from error
    return model


def _validate(model: onnx.ModelProto) -> None:
    """The whitelist first (so that an unknown operator is named), then onnx's checker."""
    if not model.HasField("graph") or not model.graph.node:
        raise ModelError("not an ONNX model: no graph (empty, truncated or another format)")
    for node in model.graph.node:
        if operator(node) not in SUPPORTED_OPERATORS:
            raise UnsupportedModel(
                f"the ONNX operator {operator(node)} (opset {opset(model, node)}) is not "
                f"supported; supported: {', '.join(sorted(SUPPORTED_OPERATORS))}",
                operator=operator(node))
    tensors = [*model.graph.initializer,
               *(a.t for n in model.graph.node for a in n.attribute if a.HasField("t"))]
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in tensors):
        raise ModelError("the ONNX model keeps tensors in external files: embed them "
                         "(onnx.save_model(..., save_as_external_data=False))")
    if model.graph.sparse_initializer:
        raise ModelError("the ONNX model has sparse initializers: store them dense")
    try:
        onnx.checker.check_model(model)
    except (onnx.checker.ValidationError, UnicodeDecodeError, ValueError) as error:
        lines = str(error).strip().splitlines() or ["invalid"]
        raise ModelError(f"malformed ONNX model: {lines[0]}") from error


def _interpret(graph: Graph) -> Model:
    """Interprets the nodes in order (ONNX keeps them topologically sorted)."""
    for node in graph.model.graph.node:
        graph.read(node)
        results = _HANDLERS[operator(node)](graph)
        graph.values.update((name, value) for name, value in zip(
            node.output, results, strict=False) if name)
    return _finish([graph.value(output.name, "the graph's outputs")
                    for output in graph.model.graph.output])


# -- the outputs --------------------------------------------------------------------------

def _root(value: Value) -> Value:
    return value.source if isinstance(value, Derived) else value


def _width(value: Value) -> int | None:
    """The number of columns ``value`` has in the ONNX graph."""
    if isinstance(value, Network):
        return value.width
    if isinstance(value, Derived):
        return 2 if value.kind == "probabilities" else None
    if isinstance(value, Scores) and value.model.classes:
        return len(value.model.classes)
    if isinstance(value, Scores) and isinstance(value.model, LinearModel):
        return int(value.model.weights.shape[0])
    if isinstance(value, Scores) and isinstance(value.model, TreeEnsemble):
        return int(value.model.leaves.shape[2])
    return None


def _finish(outputs: list[Value]) -> Model:
    roots = {id(_root(value)): _root(value) for value in outputs}
    root = next(iter(roots.values()), None)
    if len(roots) != 1 or any(isinstance(v, Derived) and v.kind == "complement"
                              for v in outputs):
        raise ModelError("the ONNX graph's outputs must all be one model's scores, or labels "
                         "and probabilities derived from them")
    if isinstance(root, Scores):
        model = root.model
    elif isinstance(root, Network) and not root.is_input:
        model = neural_network(root.closed())
    else:
        raise ModelError("the ONNX graph's outputs are not a model's scores")
    for value in outputs:
        if isinstance(value, Derived) and value.classes not in (None, model.classes):
            raise ModelError(f"the ONNX graph's labels {value.classes} disagree with the "
                             f"model's classes {model.classes}")
    arrays = ([model.weights, model.intercepts] if isinstance(model, LinearModel) else
              [a for layer in model.layers for a in (layer.weights, layer.biases)]
              if isinstance(model, NeuralNetwork) else
              [model.thresholds, model.leaves, model.base])
    if not all(np.all(np.isfinite(array)) for array in arrays):
        raise ModelError("the ONNX model has NaN or infinite weights, thresholds or values")
    return model


# -- pass-through and labels --------------------------------------------------------------

def _scores(graph: Graph) -> Network | Scores:
    value = graph.input(0)
    root = _root(value)
    if (isinstance(value, Derived) and value.kind in ("label", "complement")) or not (
            isinstance(root, Scores) or (isinstance(root, Network) and not root.is_input)):
        raise graph.refuse("is supported only on a model's scores")
    return root


def _identity(graph: Graph) -> tuple[Value, ...]:
    return (graph.input(0),)


def _flatten(graph: Graph) -> tuple[Value, ...]:
    if graph.attributes.get("axis", 1) != 1:
        raise graph.refuse("is supported only with axis=1 (on a matrix: no change)")
    return (graph.input(0),)


def _cast(graph: Graph) -> tuple[Value, ...]:
    value = graph.input(0)
    labels = isinstance(value, Derived) and value.kind in ("label", "map")
    if not labels and graph.attributes.get("to") not in (onnx.TensorProto.FLOAT,
                                                         onnx.TensorProto.DOUBLE):
        raise graph.refuse("is supported only to float or double, except on labels")
    return (value,)


def _reshape(graph: Graph) -> tuple[Value, ...]:
    value = graph.input(0)
    if isinstance(value, Derived) and value.kind == "label":
        return (value,)
    shape = (graph.attributes.get("shape", []) if len(graph.node.input) < 2
             else graph.constant(1))
    target = [int(s) for s in np.asarray(shape).reshape(-1)]
    width = _width(value)
    if width is None or target not in [[-1, width], [0, width]] + [[-1]] * (width == 1):
        raise graph.refuse("is supported only on labels, or to (rows, outputs)")
    return (value,)


def _argmax(graph: Graph) -> tuple[Value, ...]:
    if graph.attributes.get("axis", 0) not in (1, -1):
        raise graph.refuse("is supported only over the classes (axis 1)")
    return (Derived(_scores(graph), "label"),)


def _array_feature_extractor(graph: Graph) -> tuple[Value, ...]:
    classes, label = graph.constant(0), graph.input(1)
    if not (isinstance(label, Derived) and label.kind == "label"):
        raise graph.refuse("is supported only to map a label index to its class")
    return (Derived(label.source, "label", class_labels(classes, graph.where())),)


def _zipmap(graph: Graph) -> tuple[Value, ...]:
    return (Derived(_scores(graph), "map", graph.classes("classlabels_int64s")),)


def _normalizer(graph: Graph) -> tuple[Value, ...]:
    value = graph.input(0)
    model = value.model if isinstance(value, Scores) else None
    if graph.text("norm", "MAX") != "L1" or not isinstance(
            model, LinearModel | TreeEnsemble) or model.link != "softmax":
        raise graph.refuse("is supported only as L1 after a softmax (no change)")
    return (value,)


# -- linear models ------------------------------------------------------------------------

def _opposite(weights: FloatArray, intercepts: FloatArray) -> bool:
    return bool(np.allclose(weights[0], -weights[1], rtol=1e-6, atol=1e-7)
                and np.isclose(intercepts[0], -intercepts[1], rtol=1e-6, atol=1e-7))


def _coefficients(graph: Graph, rows: tuple[int, ...]) -> tuple[FloatArray, FloatArray]:
    """Coefficients (rows, features), for the first row count in ``rows`` that fits."""
    width = graph.network(features=True).width
    flat = graph.floats("coefficients")
    flat = np.zeros(0) if flat is None else flat
    count = next((r for r in rows if flat.size and flat.size % r == 0
                  and width in (None, flat.size // r)), None)
    intercepts = graph.floats("intercepts")
    if count is None or (intercepts is not None and intercepts.size not in (0, count)):
        raise ModelError(f"{graph.where()}: {flat.size} coefficients and the intercepts "
                         f"do not fit {' or '.join(map(str, rows))} outputs of "
                         f"{width or '?'} features")
    if intercepts is None or not intercepts.size:
        intercepts = np.zeros(count)
    return flat.reshape(count, -1), intercepts


def _linear_regressor(graph: Graph) -> tuple[Value, ...]:
    graph.transform("NONE")
    weights, intercepts = _coefficients(graph, (int(graph.attributes.get("targets", 1)),))
    return (Scores(LinearModel(weights, intercepts, "identity")),)


def _linear_classifier(graph: Graph) -> tuple[Value, ...]:
    """Probabilities only (NONE gives raw scores); two classes as class 1's logit."""
    transform = graph.transform("LOGISTIC", "SOFTMAX")
    classes = graph.classes("classlabels_ints")
    binary = len(classes) == 2
    weights, intercepts = _coefficients(graph, (2, 1) if binary else (len(classes),))
    if weights.shape[0] == 1:  # one score s stands for the two classes' (-s, s)
        weights, intercepts = np.vstack([-weights, weights]), np.hstack([-intercepts,
                                                                         intercepts])
    if binary and transform == "SOFTMAX":  # softmax(z0, z1)[1] = sigmoid(z1 - z0)
        weights, intercepts = weights[1:] - weights[:1], intercepts[1:] - intercepts[:1]
    elif binary and _opposite(weights, intercepts):  # LOGISTIC of (-z, z)
        weights, intercepts = weights[1:], intercepts[1:]
    elif transform == "LOGISTIC":
        raise graph.refuse("with post_transform LOGISTIC is supported only for two "
                           "classes with opposite scores (-z, z)")
    scores = Scores(LinearModel(weights, intercepts, "logistic" if binary else "softmax",
                                classes))
    return Derived(scores, "label", classes), scores


_HANDLERS: dict[str, Callable[[Graph], tuple[Value, ...]]] = {
    "ai.onnx:Add": add, "ai.onnx:ArgMax": _argmax, "ai.onnx:Cast": _cast,
    "ai.onnx:Concat": concat, "ai.onnx:Flatten": _flatten,
    "ai.onnx:Gemm": gemm, "ai.onnx:Identity": _identity,
    "ai.onnx:MatMul": matmul, "ai.onnx:Relu": lambda g: activate(g, "relu"),
    "ai.onnx:Reshape": _reshape, "ai.onnx:Sigmoid": lambda g: activate(g, "logistic"),
    "ai.onnx:Softmax": lambda g: activate(g, "softmax"), "ai.onnx:Sub": sub,
    "ai.onnx.ml:ArrayFeatureExtractor": _array_feature_extractor,
    "ai.onnx.ml:LinearClassifier": _linear_classifier,
    "ai.onnx.ml:LinearRegressor": _linear_regressor,
    "ai.onnx.ml:Normalizer": _normalizer, "ai.onnx.ml:ZipMap": _zipmap,
    "ai.onnx.ml:TreeEnsembleClassifier": tree_classifier,
    "ai.onnx.ml:TreeEnsembleRegressor": tree_regressor,
}
