"""ONNX dense layers as a :class:`~concilium.evaluation.models.NeuralNetwork`: read, never run.

Reads MatMul and Gemm (constant weights; ``alpha``, ``beta``, ``transB``) with an optional
constant bias (Gemm's third input or an Add), then Relu, Sigmoid or Softmax, into dense
layers chained on the features; Sub and Concat only as a binary MLP's ``(1 - p, p)``.
:func:`neural_network` gives the finished network from_sklearn's form (a binary MLP has one
output: a softmax over two columns becomes the sigmoid of their difference).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from concilium.errors import ModelError, UnsupportedModel
from concilium.evaluation.models import Activation, DenseLayer, FloatArray, NeuralNetwork
from concilium.evaluation.onnx_graph import Constant, Derived, Graph, Network, Value

__all__ = ["activate", "add", "concat", "gemm", "matmul", "neural_network", "sub"]

_ACTIVATION_OPERATORS = {"relu": "Relu", "logistic": "Sigmoid", "softmax": "Softmax"}


def neural_network(network: Network) -> NeuralNetwork:
    """Binary MLPs with one output, as from_sklearn gives them (a softmax over two
    columns becomes the sigmoid of their difference)."""
    *hidden, last = network.layers
    width = int(last.weights.shape[1])
    if last.activation == "relu" or (last.activation == "logistic" and width != 1):
        operator = f"ai.onnx:{_ACTIVATION_OPERATORS[last.activation]}"
        raise UnsupportedModel(f"the ONNX operator {operator} is not supported as the output "
                               "activation here: use identity, Sigmoid over one column or "
                               "Softmax", operator=operator)
    if last.activation == "softmax" and width == 2:
        last = DenseLayer(last.weights[:, 1:] - last.weights[:, :1],
                          last.biases[1:] - last.biases[:1], "logistic")
    classes = (tuple(range(width)) if last.activation == "softmax" else
               (0, 1) if last.activation == "logistic" else ())
    return NeuralNetwork((*hidden, last), classes)


def _dense(graph: Graph, weights: FloatArray, biases: FloatArray | None
           ) -> tuple[Value, ...]:
    """``x @ weights + biases``; an open layer before it becomes an identity layer."""
    source = graph.network()
    if source.layers and source.weights is None and source.layers[-1].activation in (
            "logistic", "softmax"):
        raise graph.refuse("is supported only as the output activation, not between "
                           "layers (use Relu)",
                           _ACTIVATION_OPERATORS[source.layers[-1].activation])
    source = source.closed()
    if weights.ndim != 2 or source.width not in (None, weights.shape[0]):
        raise ModelError(f"{graph.where()}: shapes do not chain: {source.width} columns "
                         f"times a weight matrix of shape {weights.shape}")
    outputs = int(weights.shape[1])
    bias = np.zeros(outputs) if biases is None else _bias(graph, biases, outputs)
    return (Network(source.layers, outputs, weights, bias),)


def _bias(graph: Graph, array: npt.NDArray[Any], outputs: int) -> FloatArray:
    values = np.asarray(array, dtype=np.float64)
    if values.size == 1:
        return np.full(outputs, float(values.reshape(-1)[0]))
    if values.shape not in ((outputs,), (1, outputs)):
        raise ModelError(f"{graph.where()}: shapes do not chain: a bias of shape "
                         f"{values.shape} for {outputs} columns")
    return values.reshape(outputs)


def matmul(graph: Graph) -> tuple[Value, ...]:
    return _dense(graph, np.asarray(graph.constant(1), dtype=np.float64), None)


def gemm(graph: Graph) -> tuple[Value, ...]:
    if graph.attributes.get("transA", 0):
        raise graph.refuse("is supported only with transA=0")
    weights = np.asarray(graph.constant(1), dtype=np.float64)
    weights = float(graph.attributes.get("alpha", 1.0)) * (
        weights.T if graph.attributes.get("transB", 0) else weights)
    biases = None
    if len(graph.node.input) > 2 and graph.node.input[2]:
        biases = float(graph.attributes.get("beta", 1.0)) * np.asarray(
            graph.constant(2), dtype=np.float64)
    return _dense(graph, weights, biases)


def add(graph: Graph) -> tuple[Value, ...]:
    first, second = graph.input(0), graph.input(1)
    source, constant = (first, second) if isinstance(first, Network) else (second, first)
    if not (isinstance(source, Network) and source.weights is not None
            and source.biases is not None and isinstance(constant, Constant)):
        raise graph.refuse("is supported only as a constant bias after MatMul or Gemm")
    biases = source.biases + _bias(graph, constant.array, int(source.weights.shape[1]))
    return (Network(source.layers, source.width, source.weights, biases),)


def activate(graph: Graph, activation: Activation) -> tuple[Value, ...]:
    source = graph.network()
    if source.weights is None:
        raise graph.refuse("is supported only right after MatMul, Add or Gemm")
    if activation == "softmax" and graph.attributes.get("axis", -1) not in (1, -1):
        raise graph.refuse("is supported only over the last axis")
    return (source.activated(activation),)


def sub(graph: Graph) -> tuple[Value, ...]:
    one, source = graph.input(0), graph.input(1)
    if not (isinstance(one, Constant) and one.array.size == 1
            and one.array.dtype.kind == "f" and float(one.array.reshape(-1)[0]) == 1.0
            and isinstance(source, Network) and source.weights is None and source.layers
            and source.layers[-1].activation == "logistic" and source.width == 1):
        raise graph.refuse("is supported only as 1 - p after a one-column Sigmoid")
    return (Derived(source, "complement"),)


def concat(graph: Graph) -> tuple[Value, ...]:
    complement = graph.input(0)
    source = graph.input(1) if len(graph.node.input) == 2 else None
    if not (isinstance(complement, Derived) and complement.kind == "complement"
            and complement.source is source and isinstance(source, Network)
            and graph.attributes.get("axis") in (1, -1)):
        raise graph.refuse("is supported only as Concat(1 - p, p) along axis 1")
    return (Derived(source, "probabilities"),)
