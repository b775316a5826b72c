"""ONNX tree ensembles as :class:`~concilium.evaluation.models.TreeEnsemble`: read, never run.

Reads ``ai.onnx.ml`` TreeEnsembleClassifier and TreeEnsembleRegressor attributes (the
``nodes_*`` columns, the ``class_*``/``target_*`` leaf weights, ``base_values``,
``post_transform``, ``aggregate_function``), checks each tree (a root, no cycles, features
in range, weights only on leaves), pads every tree complete to the deepest's depth (at most
:data:`MAXIMUM_TREE_DEPTH`) as models.py pads scikit-learn trees, and gives binary
classifiers one output and a sum of trees without a base score (a forest) as their mean.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from concilium.errors import ModelError
from concilium.evaluation.models import FloatArray, IntArray, Link, TreeEnsemble
from concilium.evaluation.onnx_graph import Derived, Graph, Scores, Value

__all__ = ["MAXIMUM_TREE_DEPTH", "tree_classifier", "tree_regressor"]

Aggregate = Literal["sum", "mean"]

#: Deeper trees are refused: padding makes every tree complete (2^depth leaves).
MAXIMUM_TREE_DEPTH = 20


def _averaged(leaves: FloatArray, base: FloatArray) -> tuple[FloatArray, Aggregate]:
    """A sum of trees without a base score as the mean of the trees' values times their
    number: forests, whose leaves skl2onnx divides by the number of trees."""
    if np.any(base != 0):
        return leaves, "sum"
    return leaves * leaves.shape[0], "mean"


# -- trees: (feature, threshold, left child (x <= threshold), right child); leaves: None --

_Node = tuple[int, float, int, int] | None


def _depth(nodes: dict[int, _Node], root: int, where: str) -> int:
    if any(node is not None and root in node[2:] for node in nodes.values()):
        raise ModelError(f"{where}: a tree's first node is not its root")
    depth, stack, visits = 0, [(root, 0)], 0
    while stack:
        identifier, level = stack.pop()
        visits += 1
        if identifier not in nodes or visits > len(nodes):
            raise ModelError(f"{where}: a tree has a missing child or a cycle")
        depth, node = max(depth, level), nodes[identifier]
        if node is not None:
            stack += [(node[2], level + 1), (node[3], level + 1)]
    return depth


def _complete(nodes: dict[int, _Node], root: int, depth: int, values: dict[int, FloatArray],
              outputs: int) -> tuple[IntArray, FloatArray, FloatArray]:
    """One tree in heap order; a leaf above ``depth`` becomes nodes testing feature 0
    whose children all carry its value (as models.py pads scikit-learn trees)."""
    features = np.zeros((1 << depth) - 1, dtype=np.int64)
    thresholds = np.zeros((1 << depth) - 1, dtype=np.float64)
    leaves = np.zeros((1 << depth, outputs), dtype=np.float64)
    stack = [(root, 0, 0)]
    while stack:
        identifier, position, level = stack.pop()
        node = nodes[identifier]
        if level == depth:
            leaves[position - ((1 << depth) - 1)] = values.get(identifier, 0.0)
            continue
        left, right = (identifier, identifier) if node is None else node[2:]
        if node is not None:
            features[position], thresholds[position] = node[0], node[1]
        stack += [(left, 2 * position + 1, level + 1), (right, 2 * position + 2, level + 1)]
    return features, thresholds, leaves


# -- the attributes of the node at hand ---------------------------------------------------

def _tree_nodes(graph: Graph) -> dict[int, tuple[int, dict[int, _Node]]]:
    """Tree id -> (its first node, the root; node id -> node), in tree id order."""
    columns = [graph.integers(f"nodes_{name}") for name in (
        "treeids", "nodeids", "featureids", "truenodeids", "falsenodeids")]
    thresholds = graph.floats("nodes_values")
    modes = [m.decode(errors="replace") for m in graph.attributes.get("nodes_modes", [])]
    missing = graph.integers("nodes_missing_value_tracks_true")
    if not modes or thresholds is None or len(missing) not in (0, len(modes)) or any(
            len(c) != len(modes) for c in [*columns, thresholds]):
        raise ModelError(f"{graph.where()}: the nodes_* attributes differ in length")
    trees: dict[int, tuple[int, dict[int, _Node]]] = {}
    for k, (tree, identifier, feature, true, false) in enumerate(zip(*columns, strict=True)):
        if modes[k] not in ("LEAF", "BRANCH_LEQ", "BRANCH_GT"):
            raise graph.refuse(f"is supported only with BRANCH_LEQ (or BRANCH_GT) nodes, "
                               f"not {modes[k]}")
        if modes[k] != "LEAF" and len(missing) and missing[k]:
            raise graph.refuse("is not supported with missing-value tracking")
        nodes = trees.setdefault(int(tree), (int(identifier), {}))[1]
        if int(identifier) in nodes:
            raise ModelError(f"{graph.where()}: tree {tree} repeats node {identifier}")
        children = (int(false), int(true)) if modes[k] == "BRANCH_GT" else (
            int(true), int(false))  # x > t true is x <= t false
        nodes[int(identifier)] = None if modes[k] == "LEAF" else (
            int(feature), float(thresholds[k]), *children)
    return dict(sorted(trees.items()))


def _leaf_values(graph: Graph, prefix: str, outputs: int) -> dict[int, dict[int, FloatArray]]:
    """Tree id -> leaf id -> the leaf's value per output (its weights summed)."""
    trees, nodes, ids = (graph.integers(f"{prefix}_{n}") for n in ("treeids", "nodeids",
                                                                   "ids"))
    weights = graph.floats(f"{prefix}_weights")
    weights = np.zeros(0) if weights is None else weights
    if not len(trees) == len(nodes) == len(ids) == len(weights) or (
            len(ids) and (ids.min() < 0 or ids.max() >= outputs)):
        raise ModelError(f"{graph.where()}: the {prefix}_* attributes differ in length or "
                         f"name outputs outside 0..{outputs - 1}")
    values: dict[int, dict[int, FloatArray]] = {}
    for tree, leaf, output, weight in zip(trees, nodes, ids, weights, strict=True):
        leaves = values.setdefault(int(tree), {})
        leaves.setdefault(int(leaf), np.zeros(outputs))[int(output)] += weight
    return values


def _forest(graph: Graph, prefix: str, outputs: int, features: int
            ) -> tuple[IntArray, FloatArray, FloatArray]:
    """Node features, thresholds and leaves of complete trees of the deepest's depth."""
    trees, values = _tree_nodes(graph), _leaf_values(graph, prefix, outputs)
    depth = max(1, *(_depth(nodes, root, graph.where()) for root, nodes in trees.values()))
    if depth > MAXIMUM_TREE_DEPTH:
        raise graph.refuse(f"is supported only for trees up to depth {MAXIMUM_TREE_DEPTH}; "
                           f"this one has depth {depth}")
    for tree, (_, nodes) in trees.items():
        if any(n is not None and not 0 <= n[0] < features for n in nodes.values()):
            raise ModelError(f"{graph.where()}: tree {tree} tests a feature outside "
                             f"0..{features - 1}")
        if any(nodes.get(leaf, ()) is not None for leaf in values.get(tree, {})):
            raise ModelError(f"{graph.where()}: tree {tree} has weights on a branch or a "
                             "missing node")
    if set(values) - set(trees):
        raise ModelError(f"{graph.where()}: weights for trees that have no nodes")
    completed = [_complete(nodes, root, depth, values.get(tree, {}), outputs)
                 for tree, (root, nodes) in trees.items()]
    return (np.stack([c[0] for c in completed]), np.stack([c[1] for c in completed]),
            np.stack([c[2] for c in completed]))


def _base(graph: Graph, outputs: int) -> FloatArray:
    base = graph.floats("base_values")
    if base is not None and base.size not in (0, outputs):
        raise graph.refuse(f"is not supported with {base.size} base_values for {outputs} "
                           "scores")
    return base if base is not None and base.size else np.zeros(outputs)


def _tree_width(graph: Graph) -> int:
    width = graph.network(features=True).width
    if width is None:
        raise ModelError(f"{graph.where()}: the model's input must declare its number of "
                         "features")
    return width


# -- the operators ------------------------------------------------------------------------

def tree_classifier(graph: Graph) -> tuple[Value, ...]:
    """Two classes as one output: class 1's probability (NONE) or logit."""
    transform = graph.transform("NONE", "LOGISTIC", "SOFTMAX")
    classes = graph.classes("classlabels_int64s")
    two, used = len(classes) == 2, set(graph.integers("class_ids").tolist())
    single = two and used <= {0}  # one score s, class 1's: (1 - s, s) or sigmoid(-s, s)
    if two and used == {1}:
        raise graph.refuse("is not supported with weights for class 1 only")
    width, columns = _tree_width(graph), 1 if single else len(classes)
    features, thresholds, leaves = _forest(graph, "class", columns, width)
    base = _base(graph, columns)
    aggregate: Aggregate = "sum"
    link: Link = "logistic" if two else "softmax"
    if transform == "NONE":
        if np.any(leaves < 0) or np.any(base < 0):
            raise graph.refuse("with post_transform NONE is supported only for "
                               "probabilities (non-negative weights)")
        if two and not single:
            leaves, base = leaves[:, :, 1:], base[1:]
        (leaves, aggregate), link = _averaged(leaves, base), "identity"
    elif single and transform == "SOFTMAX":  # softmax(-s, s)[1] = sigmoid(2s)
        leaves, base = 2 * leaves, 2 * base
    elif two and transform == "SOFTMAX":  # softmax(a, b)[1] = sigmoid(b - a)
        leaves, base = leaves[:, :, 1:] - leaves[:, :, :1], base[1:] - base[:1]
    elif transform == "LOGISTIC" and not single:
        raise graph.refuse("with post_transform LOGISTIC is supported only for one score "
                           "(binary)")
    scores = Scores(TreeEnsemble(features, thresholds, leaves, base, aggregate, link,
                                 width, classes))
    return Derived(scores, "label", classes), scores


def tree_regressor(graph: Graph) -> tuple[Value, ...]:
    graph.transform("NONE")
    function = graph.text("aggregate_function", "SUM")
    if function not in ("SUM", "AVERAGE"):
        raise graph.refuse(f"is not supported with aggregate_function {function}")
    targets, width = int(graph.attributes.get("n_targets", 1)), _tree_width(graph)
    features, thresholds, leaves = _forest(graph, "target", targets, width)
    base = _base(graph, targets)
    aggregate: Aggregate = "mean"
    if function == "SUM":
        leaves, aggregate = _averaged(leaves, base)
    return (Scores(TreeEnsemble(features, thresholds, leaves, base, aggregate, "identity",
                                width)),)
