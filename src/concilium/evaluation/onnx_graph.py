"""The ONNX graph as :mod:`~concilium.evaluation.onnx_import` reads it: symbolic values
and the node at hand.

Each tensor name stands for a :data:`Value`: a constant (an initializer), the features
through dense layers (:class:`Network`), a whole-model operator's scores, or labels and
probabilities derived from them. :class:`Graph` reads the current node's inputs and
attributes (lists, or their ``_as_tensor`` form); its refusals name ``domain:op_type`` and
its opset. Nothing is executed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import onnx
from onnx import helper, numpy_helper

from concilium.errors import ModelError, UnsupportedModel
from concilium.evaluation.models import Activation, DenseLayer, FloatArray, IntArray, Model

__all__ = ["Constant", "Derived", "Graph", "Network", "Scores", "Value", "class_labels",
           "operator", "opset"]


def operator(node: onnx.NodeProto) -> str:
    """``domain:op_type``, the default domain spelt ``ai.onnx``."""
    return f"{node.domain or 'ai.onnx'}:{node.op_type}"


def opset(model: onnx.ModelProto, node: onnx.NodeProto) -> str:
    """The version of ``node``'s domain that ``model`` imports (``?`` if none)."""
    versions = [entry.version for entry in model.opset_import
                if (entry.domain or "ai.onnx") == (node.domain or "ai.onnx")]
    return str(versions[0]) if versions else "?"


def _array(tensor: onnx.TensorProto, where: str) -> npt.NDArray[Any]:
    try:
        return numpy_helper.to_array(tensor)
    except (ValueError, TypeError) as error:
        raise ModelError(f"{where}: the tensor {tensor.name!r} does not match its shape or "
                         "type") from error


def _input_width(value: onnx.ValueInfoProto) -> int | None:
    tensor = value.type.tensor_type
    if not value.type.HasField("tensor_type") or (
            tensor.HasField("shape") and len(tensor.shape.dim) != 2):
        raise ModelError(f"the ONNX input {value.name!r} must be a matrix (rows, features)")
    if not tensor.HasField("shape") or not tensor.shape.dim[1].HasField("dim_value"):
        return None
    return int(tensor.shape.dim[1].dim_value)


def class_labels(labels: Any, where: str) -> tuple[int, ...]:
    """The classes, which must be the integers 0, 1, ..., k-1 (k >= 2)."""
    array = np.asarray(labels if labels is not None else [])
    if array.ndim != 1 or len(array) < 2 or array.dtype.kind not in "iu" or np.any(
            array != np.arange(len(array))):
        shown = [x.decode() if isinstance(x, bytes) else x for x in array.reshape(-1)[:10]]
        raise ModelError(f"class labels must be the integers 0, 1, ..., k-1; {where} has "
                         f"{shown}")
    return tuple(int(c) for c in array)


# -- symbolic values ----------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class Network:
    """The features through ``layers`` (none: the model's input), then, if ``weights``
    is set, ``@ weights + biases`` not activated yet; ``width``: the current columns."""

    layers: tuple[DenseLayer, ...]
    width: int | None
    weights: FloatArray | None = None
    biases: FloatArray | None = None

    @property
    def is_input(self) -> bool:
        return not self.layers and self.weights is None

    def activated(self, activation: Activation) -> Network:
        assert self.weights is not None and self.biases is not None
        layer = DenseLayer(self.weights, self.biases, activation)
        return Network((*self.layers, layer), self.width)

    def closed(self) -> Network:
        return self if self.weights is None else self.activated("identity")


@dataclass(frozen=True, eq=False)
class Constant:
    array: npt.NDArray[Any]


@dataclass(frozen=True, eq=False)
class Scores:
    """The scores (probabilities, regression values) of a whole-model operator."""

    model: Model


@dataclass(frozen=True, eq=False)
class Derived:
    """Derived from ``source``'s scores: its labels, ``1 - p`` of a binary sigmoid,
    both classes' probabilities ``(1 - p, p)``, or a ZipMap of the probabilities."""

    source: Network | Scores
    kind: Literal["label", "complement", "probabilities", "map"]
    classes: tuple[int, ...] | None = None


Value = Network | Constant | Scores | Derived


# -- the graph and the node at hand -------------------------------------------------------

class Graph:
    """What each name stands for so far; ``node`` and ``attributes`` are those of the
    node at hand (set by :meth:`read`)."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        self.node = onnx.NodeProto()
        self.attributes: dict[str, Any] = {}
        self.values: dict[str, Value] = {
            tensor.name: Constant(_array(tensor, "the ONNX model"))
            for tensor in model.graph.initializer}
        inputs = [i for i in model.graph.input if i.name not in self.values]
        if len(inputs) != 1:
            raise ModelError("the ONNX model must have one input (the feature matrix); it "
                             f"has {len(inputs)}")
        self.values[inputs[0].name] = Network((), _input_width(inputs[0]))

    def read(self, node: onnx.NodeProto) -> None:
        """Makes ``node`` the node at hand."""
        self.node = node
        self.attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}

    def value(self, name: str, reader: str) -> Value:
        if name not in self.values:
            raise ModelError(f"{reader} reads {name!r}, which no initializer, input or "
                             "earlier node provides")
        return self.values[name]

    def input(self, index: int) -> Value:
        if index >= len(self.node.input) or not self.node.input[index]:
            raise ModelError(f"{self.where()} lacks its input {index}")
        return self.value(self.node.input[index], self.where())

    def constant(self, index: int) -> npt.NDArray[Any]:
        value = self.input(index)
        if not isinstance(value, Constant):
            raise self.refuse(f"needs a constant (an initializer) as input {index}")
        return value.array

    def network(self, *, features: bool = False) -> Network:
        value = self.input(0)
        if not isinstance(value, Network) or (features and not value.is_input):
            raise self.refuse("is supported only on the model's input" if features else
                              "is supported only on the features or a dense layer")
        return value

    def where(self) -> str:
        name = self.node.name or (self.node.output[0] if self.node.output else "")
        return f"the ONNX node {name!r} ({operator(self.node)})"

    def refuse(self, reason: str, op_type: str = "") -> UnsupportedModel:
        named = f"{self.node.domain or 'ai.onnx'}:{op_type or self.node.op_type}"
        return UnsupportedModel(f"the ONNX operator {named} (opset "
                                f"{opset(self.model, self.node)}) {reason}", operator=named)

    def text(self, name: str, default: str) -> str:
        value = self.attributes.get(name, default)
        return value.decode(errors="replace") if isinstance(value, bytes) else str(value)

    def floats(self, name: str) -> FloatArray | None:
        """A float list attribute, or its ``_as_tensor`` form (ai.onnx.ml opset 3)."""
        tensor = self.attributes.get(f"{name}_as_tensor")
        if tensor is not None:
            return np.asarray(_array(tensor, self.where()), dtype=np.float64).reshape(-1)
        values = self.attributes.get(name)
        return None if values is None else np.asarray(values, dtype=np.float64)

    def integers(self, name: str) -> IntArray:
        return np.asarray(self.attributes.get(name, []), dtype=np.int64)

    def classes(self, integers: str) -> tuple[int, ...]:
        labels = self.attributes.get(integers, self.attributes.get("classlabels_strings"))
        return class_labels(labels, self.where())

    def transform(self, *allowed: str) -> str:
        transform = self.text("post_transform", "NONE")
        if transform not in allowed:
            raise self.refuse(f"is not supported with post_transform {transform}")
        return transform
