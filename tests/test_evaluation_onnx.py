"""ONNX import: scikit-learn models exported by skl2onnx, read back by from_onnx, evaluated
in plain numpy and compared with scikit-learn, with from_sklearn and with ONNX's own
reference evaluator; unsupported operators and malformed bytes are refused."""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator
from skl2onnx import to_onnx
from sklearn.datasets import load_breast_cancer, make_classification, make_regression
from sklearn.ensemble import (
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

from concilium.errors import ModelError, UnsupportedModel
from concilium.evaluation.models import (
    LinearModel,
    Model,
    NeuralNetwork,
    TreeEnsemble,
    from_sklearn,
)
from concilium.evaluation.onnx_import import SUPPORTED_OPERATORS, from_onnx, model_hash

FloatArray = npt.NDArray[np.float64]
NO_ZIPMAP = {"zipmap": False}


# -- a plaintext evaluator of the descriptions ------------------------------------------------

def _link(z: FloatArray, link: str) -> FloatArray:
    if link == "logistic":
        return 1.0 / (1.0 + np.exp(-np.clip(z, -500, 500)))
    if link == "softmax":
        exponentials = np.exp(z - z.max(axis=1, keepdims=True))
        return exponentials / exponentials.sum(axis=1, keepdims=True)
    if link == "relu":
        return np.maximum(z, 0.0)
    return z


def _walk(model: TreeEnsemble, x: FloatArray) -> FloatArray:
    """Leaf values (trees, rows, outputs) reached by each row in each complete tree."""
    rows = np.arange(x.shape[0])
    values = []
    for tree in range(model.leaves.shape[0]):
        position = np.zeros(x.shape[0], dtype=np.int64)
        for _ in range(model.depth):
            feature = model.node_features[tree, position]
            left = x[rows, feature] <= model.thresholds[tree, position]
            position = 2 * position + np.where(left, 1, 2)
        values.append(model.leaves[tree, position - ((1 << model.depth) - 1)])
    return np.stack(values)


def evaluate(model: Model, x: FloatArray) -> FloatArray:
    """The model's scores (rows, outputs) in plain numpy."""
    if isinstance(model, LinearModel):
        return _link(x @ model.weights.T + model.intercepts, model.link)
    if isinstance(model, NeuralNetwork):
        for layer in model.layers:
            x = _link(x @ layer.weights + layer.biases, layer.activation)
        return x
    values = _walk(model, x)
    total = values.sum(axis=0) if model.aggregate == "sum" else values.mean(axis=0)
    return _link(total + model.base, model.link)


def probabilities(model: Model, x: FloatArray) -> FloatArray:
    """Class probabilities (rows, classes): a single binary score p becomes (1 - p, p)."""
    scores = evaluate(model, x)
    if len(model.classes) == 2 and scores.shape[1] == 1:
        return np.hstack([1.0 - scores, scores])
    return scores


# -- data and exports --------------------------------------------------------------------------

def _standardized(x: FloatArray) -> npt.NDArray[np.float32]:
    return ((x - x.mean(axis=0)) / x.std(axis=0)).astype(np.float32)


@pytest.fixture(scope="module")
def cancer() -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    x, y = load_breast_cancer(return_X_y=True)
    return _standardized(x), y


@pytest.fixture(scope="module")
def three_classes() -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    x, y = make_classification(n_samples=300, n_features=8, n_informative=5, n_classes=3,
                               random_state=3)
    return _standardized(x), y


@pytest.fixture(scope="module")
def regression() -> tuple[npt.NDArray[np.float32], FloatArray]:
    x, y = make_regression(n_samples=300, n_features=6, noise=0.5, random_state=4)
    return _standardized(x), y / np.std(y)


def _fit(estimator: Any, x: npt.NDArray[np.float32], y: Any) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return estimator.fit(x, y)


def _export(estimator: Any, x: npt.NDArray[np.float32],
            options: dict[str, Any] | None = None) -> onnx.ModelProto:
    exported = to_onnx(estimator, x[:1], options=options, target_opset={"": 17, "ai.onnx.ml": 3})
    assert isinstance(exported, onnx.ModelProto)
    return exported


def _reference(proto: onnx.ModelProto, x: npt.NDArray[np.float32], output: str) -> Any:
    return ReferenceEvaluator(proto).run([output], {proto.graph.input[0].name: x})[0]


def _assert_close(actual: FloatArray, expected: Any) -> None:
    np.testing.assert_allclose(actual, np.asarray(expected, dtype=np.float64),
                               rtol=1e-5, atol=1e-5)


def _assert_same_description(imported: Model, native: Model) -> None:
    assert type(imported) is type(native)
    assert imported.shape() == native.shape()
    assert imported.classes == native.classes
    if isinstance(imported, LinearModel) and isinstance(native, LinearModel):
        pairs = [(imported.weights, native.weights), (imported.intercepts, native.intercepts)]
    elif isinstance(imported, NeuralNetwork) and isinstance(native, NeuralNetwork):
        pairs = [(a, b) for one, other in zip(imported.layers, native.layers, strict=True)
                 for a, b in ((one.weights, other.weights), (one.biases, other.biases))]
    else:
        assert isinstance(imported, TreeEnsemble) and isinstance(native, TreeEnsemble)
        np.testing.assert_array_equal(imported.node_features, native.node_features)
        pairs = [(imported.thresholds, native.thresholds), (imported.leaves, native.leaves),
                 (imported.base, native.base)]
    for one, other in pairs:
        assert one.shape == other.shape
        np.testing.assert_allclose(one, other, rtol=1e-5, atol=1e-6)


# -- the supported families --------------------------------------------------------------------

CLASSIFIERS: dict[str, tuple[Callable[[], Any], str]] = {
    "logistic_binary": (lambda: LogisticRegression(max_iter=2000), "cancer"),
    "logistic_three": (lambda: LogisticRegression(max_iter=2000), "three_classes"),
    "mlp_binary": (lambda: MLPClassifier((8, 4), max_iter=300, random_state=0), "cancer"),
    "mlp_three": (lambda: MLPClassifier((6,), max_iter=300, random_state=0), "three_classes"),
    "tree": (lambda: DecisionTreeClassifier(max_depth=4, random_state=0), "cancer"),
    "tree_three": (lambda: DecisionTreeClassifier(max_depth=5, random_state=0),
                   "three_classes"),
    "forest_binary": (lambda: RandomForestClassifier(6, max_depth=4, random_state=0),
                      "cancer"),
    "forest_three": (lambda: RandomForestClassifier(5, max_depth=5, random_state=0),
                     "three_classes"),
    "boosting_binary": (lambda: GradientBoostingClassifier(n_estimators=8, max_depth=3,
                                                           random_state=0), "cancer"),
    "boosting_three": (lambda: GradientBoostingClassifier(n_estimators=5, max_depth=2,
                                                          random_state=0), "three_classes"),
}

REGRESSORS: dict[str, Callable[[], Any]] = {
    "linear": LinearRegression,
    "mlp": lambda: MLPRegressor(hidden_layer_sizes=(7,), max_iter=400, random_state=0),
    "tree": lambda: DecisionTreeRegressor(max_depth=4, random_state=0),
    "forest": lambda: RandomForestRegressor(4, max_depth=3, random_state=0),
    "boosting": lambda: GradientBoostingRegressor(n_estimators=10, max_depth=3,
                                                  random_state=0),
}


@pytest.mark.parametrize("name", sorted(CLASSIFIERS))
def test_classifiers_match_scikit_learn(name: str, request: pytest.FixtureRequest) -> None:
    factory, dataset = CLASSIFIERS[name]
    x, y = request.getfixturevalue(dataset)
    estimator = _fit(factory(), x, y)
    proto = _export(estimator, x, NO_ZIPMAP)
    imported = from_onnx(proto.SerializeToString())
    rows = x.astype(np.float64)
    _assert_close(probabilities(imported, rows), estimator.predict_proba(x))
    _assert_close(probabilities(imported, rows), _reference(proto, x, "probabilities"))
    assert np.array_equal(np.argmax(probabilities(imported, rows), axis=1),
                          estimator.predict(x))
    assert imported.classes == tuple(range(len(estimator.classes_)))
    _assert_same_description(imported, from_sklearn(estimator))


@pytest.mark.parametrize("name", sorted(REGRESSORS))
def test_regressors_match_scikit_learn(name: str,
                                       regression: tuple[npt.NDArray[np.float32], FloatArray]
                                       ) -> None:
    x, y = regression
    estimator = _fit(REGRESSORS[name](), x, y)
    proto = _export(estimator, x)
    imported = from_onnx(proto)
    scores = evaluate(imported, x.astype(np.float64))
    assert scores.shape == (len(x), 1) and imported.classes == ()
    _assert_close(scores[:, 0], estimator.predict(x))
    _assert_close(scores, _reference(proto, x, proto.graph.output[0].name).reshape(-1, 1))
    native = from_sklearn(estimator)
    if name == "forest":  # skl2onnx sums trees divided by their count: the same mean
        assert isinstance(imported, TreeEnsemble) and imported.aggregate == "mean"
    _assert_same_description(imported, native)


def test_linear_regression_on_breast_cancer(cancer: tuple[Any, Any]) -> None:
    x, y = cancer
    estimator = LinearRegression().fit(x, y.astype(np.float64))
    imported = from_onnx(_export(estimator, x))
    assert isinstance(imported, LinearModel) and imported.link == "identity"
    assert imported.weights.shape == (1, 30)
    _assert_close(evaluate(imported, x.astype(np.float64))[:, 0], estimator.predict(x))


def test_binary_logistic_regression_becomes_one_logit(cancer: tuple[Any, Any]) -> None:
    x, y = cancer
    estimator = LogisticRegression(max_iter=2000).fit(x, y)
    imported = from_onnx(_export(estimator, x, NO_ZIPMAP))
    assert isinstance(imported, LinearModel)
    assert imported.link == "logistic" and imported.weights.shape == (1, 30)
    assert imported.intercepts.shape == (1,) and imported.classes == (0, 1)


def test_mlp_classifier_relu_with_logistic_output(cancer: tuple[Any, Any]) -> None:
    x, y = cancer
    estimator = _fit(MLPClassifier((5,), max_iter=200, random_state=1), x, y)
    imported = from_onnx(_export(estimator, x, NO_ZIPMAP))
    assert isinstance(imported, NeuralNetwork)
    assert [layer.activation for layer in imported.layers] == ["relu", "logistic"]
    assert imported.layers[-1].weights.shape == (5, 1) and imported.classes == (0, 1)


@pytest.mark.parametrize("factory", [
    lambda: LogisticRegression(max_iter=2000),
    lambda: MLPClassifier((6,), max_iter=200, random_state=0),
    lambda: RandomForestClassifier(3, max_depth=3, random_state=0),
], ids=["logistic", "mlp", "forest"])
def test_zipmap_left_on(factory: Callable[[], Any], three_classes: tuple[Any, Any]) -> None:
    x, y = three_classes
    estimator = _fit(factory(), x, y)
    proto = _export(estimator, x)  # ZipMap and the label's Cast are left in
    assert "ZipMap" in {node.op_type for node in proto.graph.node}
    imported = from_onnx(proto)
    _assert_close(probabilities(imported, x.astype(np.float64)), estimator.predict_proba(x))
    assert imported.classes == (0, 1, 2)


def test_sources_and_hash(tmp_path: Path, cancer: tuple[Any, Any]) -> None:
    x, y = cancer
    proto = _export(DecisionTreeClassifier(max_depth=2).fit(x, y), x, NO_ZIPMAP)
    data = proto.SerializeToString()
    path = tmp_path / "model.onnx"
    path.write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    assert model_hash(data) == model_hash(path) == model_hash(str(path)) == digest
    assert model_hash(proto) == digest
    shapes = [from_onnx(source).shape() for source in (data, path, str(path), proto)]
    assert all(shape == shapes[0] for shape in shapes)


# -- tree node modes -----------------------------------------------------------------------------

def _tree_node(proto: onnx.ModelProto) -> onnx.NodeProto:
    return next(node for node in proto.graph.node if node.op_type.startswith("TreeEnsemble"))


def _set_attribute(node: onnx.NodeProto, name: str, value: Any) -> None:
    kept = [a for a in node.attribute if a.name != name]
    del node.attribute[:]
    node.attribute.extend([*kept, helper.make_attribute(name, value)])


def _attribute(node: onnx.NodeProto, name: str) -> Any:
    return next(helper.get_attribute_value(a) for a in node.attribute if a.name == name)


@pytest.fixture(scope="module")
def tree_proto(cancer: tuple[Any, Any]) -> tuple[Any, onnx.ModelProto]:
    x, y = cancer
    estimator = DecisionTreeClassifier(max_depth=3, random_state=0).fit(x, y)
    return estimator, _export(estimator, x, NO_ZIPMAP)


def test_branch_greater_than_with_swapped_children(tree_proto: tuple[Any, onnx.ModelProto],
                                                   cancer: tuple[Any, Any]) -> None:
    estimator, original = tree_proto
    proto = onnx.ModelProto()
    proto.CopyFrom(original)
    node = _tree_node(proto)
    modes = [b"BRANCH_GT" if m == b"BRANCH_LEQ" else m for m in _attribute(node, "nodes_modes")]
    true, false = _attribute(node, "nodes_truenodeids"), _attribute(node, "nodes_falsenodeids")
    _set_attribute(node, "nodes_modes", modes)
    _set_attribute(node, "nodes_truenodeids", false)
    _set_attribute(node, "nodes_falsenodeids", true)
    imported = from_onnx(proto)
    _assert_same_description(imported, from_onnx(original))
    x = cancer[0]
    _assert_close(probabilities(imported, x.astype(np.float64)), estimator.predict_proba(x))


@pytest.mark.parametrize("change", ["BRANCH_LT", "BRANCH_EQ", "BRANCH_GTE", "missing"])
def test_other_tree_rules_are_refused(change: str,
                                      tree_proto: tuple[Any, onnx.ModelProto]) -> None:
    proto = onnx.ModelProto()
    proto.CopyFrom(tree_proto[1])
    node = _tree_node(proto)
    modes = _attribute(node, "nodes_modes")
    if change == "missing":
        _set_attribute(node, "nodes_missing_value_tracks_true", [1] * len(modes))
    else:
        _set_attribute(node, "nodes_modes", [change.encode() if m == b"BRANCH_LEQ" else m
                                             for m in modes])
    with pytest.raises(UnsupportedModel) as caught:
        from_onnx(proto)
    assert caught.value.operator == "ai.onnx.ml:TreeEnsembleClassifier"
    assert "ai.onnx.ml:TreeEnsembleClassifier (opset" in str(caught.value)


def test_multiclass_one_versus_rest_logistic_is_refused(three_classes: tuple[Any, Any]) -> None:
    x, y = three_classes
    proto = _export(LogisticRegression(max_iter=2000).fit(x, y), x, NO_ZIPMAP)
    node = next(n for n in proto.graph.node if n.op_type == "LinearClassifier")
    _set_attribute(node, "post_transform", "LOGISTIC")
    with pytest.raises(UnsupportedModel, match="LOGISTIC") as caught:
        from_onnx(proto)
    assert caught.value.operator == "ai.onnx.ml:LinearClassifier"


def test_raw_scores_are_refused(cancer: tuple[Any, Any]) -> None:
    x, y = cancer
    options = {"zipmap": False, "raw_scores": True}
    proto = _export(LogisticRegression(max_iter=2000).fit(x, y), x, options)
    with pytest.raises(UnsupportedModel, match="post_transform NONE"):
        from_onnx(proto)


def test_one_coefficient_row_for_two_classes(cancer: tuple[Any, Any]) -> None:
    x, y = cancer
    estimator = LogisticRegression(max_iter=2000).fit(x, y)
    proto = _export(estimator, x, NO_ZIPMAP)
    node = next(n for n in proto.graph.node if n.op_type == "LinearClassifier")
    _set_attribute(node, "coefficients", list(_attribute(node, "coefficients"))[30:])
    _set_attribute(node, "intercepts", list(_attribute(node, "intercepts"))[1:])
    imported = from_onnx(proto)
    _assert_close(probabilities(imported, x.astype(np.float64)), estimator.predict_proba(x))
    _assert_close(probabilities(imported, x.astype(np.float64)),
                  _reference(proto, x, "probabilities"))


def test_tensor_attributes_of_ml_opset_3(regression: tuple[Any, Any]) -> None:
    x, y = regression
    estimator = GradientBoostingRegressor(n_estimators=4, max_depth=2).fit(x, y)
    proto = _export(estimator, x)
    node = _tree_node(proto)
    for name in ("nodes_values", "target_weights", "base_values"):
        values = np.asarray(_attribute(node, name), dtype=np.float64)
        kept = [a for a in node.attribute if a.name != name]
        del node.attribute[:]
        node.attribute.extend([*kept, helper.make_attribute(
            f"{name}_as_tensor", numpy_helper.from_array(values, f"{name}_as_tensor"))])
    for entry in proto.opset_import:
        if entry.domain == "ai.onnx.ml":
            entry.version = 3
    imported = from_onnx(proto)
    assert not any(a.name == "nodes_values" for a in node.attribute)
    _assert_close(evaluate(imported, x.astype(np.float64))[:, 0], estimator.predict(x))


def test_gemm_graph_matches_the_reference() -> None:
    generator = np.random.default_rng(5)
    x = generator.normal(size=(40, 4)).astype(np.float32)
    first = generator.normal(size=(6, 4)).astype(np.float32)  # transposed: transB=1
    second = generator.normal(size=(6, 3)).astype(np.float32)
    tensors = [numpy_helper.from_array(a, n) for a, n in (
        (first, "first"), (np.arange(6, dtype=np.float32) / 10, "bias"), (second, "second"))]
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "first", "bias"], ["hidden"], transB=1, alpha=0.5,
                          beta=2.0),
         helper.make_node("Relu", ["hidden"], ["active"]),
         helper.make_node("Gemm", ["active", "second"], ["logits"]),
         helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1)],
        "gemm", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, 3])],
        tensors)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    imported = from_onnx(proto)
    assert isinstance(imported, NeuralNetwork) and imported.classes == (0, 1, 2)
    assert [layer.activation for layer in imported.layers] == ["relu", "softmax"]
    _assert_close(evaluate(imported, x.astype(np.float64)),
                  _reference(proto, x, "probabilities"))


def test_non_finite_numbers_are_refused(tree_proto: tuple[Any, onnx.ModelProto]) -> None:
    proto = onnx.ModelProto()
    proto.CopyFrom(tree_proto[1])
    node = _tree_node(proto)
    _set_attribute(node, "nodes_values", [float("nan")] * len(_attribute(node, "nodes_values")))
    with pytest.raises(ModelError, match="NaN"):
        from_onnx(proto)


def test_external_tensors_are_refused(cancer: tuple[Any, Any]) -> None:
    x, y = cancer
    proto = _export(_fit(MLPClassifier((4,), max_iter=50), x, y), x, NO_ZIPMAP)
    proto.graph.initializer[0].data_location = TensorProto.EXTERNAL
    with pytest.raises(ModelError, match="external"):
        from_onnx(proto)


# -- unsupported operators and malformed models ------------------------------------------------

def _tanh_graph() -> onnx.ModelProto:
    weights = numpy_helper.from_array(np.ones((3, 2), dtype=np.float32), "weights")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "weights"], ["product"]),
         helper.make_node("Tanh", ["product"], ["y"])],
        "tanh", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 2])], [weights])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_unsupported_operator_is_named_with_its_opset() -> None:
    with pytest.raises(UnsupportedModel) as caught:
        from_onnx(_tanh_graph().SerializeToString())
    assert caught.value.operator == "ai.onnx:Tanh"
    message = str(caught.value)
    assert "ai.onnx:Tanh (opset 17) is not supported" in message
    assert all(operator in message for operator in SUPPORTED_OPERATORS)


def test_tanh_mlp_from_skl2onnx_is_refused(cancer: tuple[Any, Any]) -> None:
    x, y = cancer
    estimator = _fit(MLPClassifier((4,), activation="tanh", max_iter=100), x, y)
    with pytest.raises(UnsupportedModel, match=r"ai\.onnx:Tanh \(opset 17\)") as caught:
        from_onnx(_export(estimator, x, NO_ZIPMAP))
    assert caught.value.operator == "ai.onnx:Tanh"


def test_sigmoid_between_layers_is_refused(cancer: tuple[Any, Any]) -> None:
    x, y = cancer
    estimator = _fit(MLPClassifier((4,), activation="logistic", max_iter=100), x, y)
    with pytest.raises(UnsupportedModel, match="between layers") as caught:
        from_onnx(_export(estimator, x, NO_ZIPMAP))
    assert caught.value.operator == "ai.onnx:Sigmoid"


@pytest.mark.parametrize("data", [b"", b"definitely not an onnx model", b"\x08\x07\x12\xff"],
                         ids=["empty", "text", "garbage"])
def test_garbage_bytes_raise_model_error(data: bytes) -> None:
    with pytest.raises(ModelError):
        from_onnx(data)


def test_truncated_models_raise_model_error(tree_proto: tuple[Any, onnx.ModelProto]) -> None:
    data = tree_proto[1].SerializeToString()
    for length in (len(data) // 3, len(data) // 2, len(data) - 7):
        with pytest.raises(ModelError):
            from_onnx(data[:length])


def test_missing_file_raises_model_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="cannot read"):
        from_onnx(tmp_path / "absent.onnx")


def test_missing_initializer_raises_model_error(cancer: tuple[Any, Any]) -> None:
    x, y = cancer
    proto = _export(_fit(MLPClassifier((4,), max_iter=50), x, y), x, NO_ZIPMAP)
    kept = [t for t in proto.graph.initializer if t.name != "coefficient1"]
    del proto.graph.initializer[:]
    proto.graph.initializer.extend(kept)
    with pytest.raises(ModelError, match="coefficient1"):
        from_onnx(proto)


def test_shapes_that_do_not_chain_raise_model_error(cancer: tuple[Any, Any]) -> None:
    x, y = cancer
    proto = _export(_fit(MLPClassifier((4,), max_iter=50), x, y), x, NO_ZIPMAP)
    for tensor in proto.graph.initializer:
        if tensor.name == "coefficient1":
            tensor.CopyFrom(numpy_helper.from_array(np.ones((3, 1), np.float32), tensor.name))
    with pytest.raises(ModelError, match="do not chain"):
        from_onnx(proto)


def test_corrupted_bytes_raise_only_model_errors(tree_proto: tuple[Any, onnx.ModelProto]
                                                 ) -> None:
    data = tree_proto[1].SerializeToString()
    generator = np.random.default_rng(11)
    for _ in range(300):
        corrupted = bytearray(data)
        for position in generator.integers(len(data), size=3):
            corrupted[position] = int(generator.integers(256))
        try:
            model = from_onnx(bytes(corrupted))
        except ModelError:
            continue
        assert isinstance(model, TreeEnsemble)
