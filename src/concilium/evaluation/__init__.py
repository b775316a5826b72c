"""Layer 6 (beside query and governance): a vendor's model scored on secret data.

Modules in dependency order: :mod:`~concilium.evaluation.models` (what a model
is: numbers and a shape, from scikit-learn), :mod:`~concilium.evaluation.onnx_import`
(the same from ONNX, for a whitelist of operators),
:mod:`~concilium.evaluation.inference` (the model on secret-shared rows),
:mod:`~concilium.evaluation.metrics` (metrics of secret scores and labels),
:mod:`~concilium.evaluation.job` (metrics through the output policy),
:mod:`~concilium.evaluation.governed` (an evaluation as a governed computation).
"""

from concilium.evaluation.model_files import load_model
from concilium.evaluation.models import (
    DenseLayer,
    LinearModel,
    Model,
    NeuralNetwork,
    TreeEnsemble,
    from_sklearn,
    model_from_json,
    model_to_json,
)
from concilium.evaluation.onnx_import import from_onnx, model_hash

__all__ = ["DenseLayer", "LinearModel", "Model", "NeuralNetwork", "TreeEnsemble", "from_onnx",
           "from_sklearn", "load_model", "model_from_json", "model_hash", "model_to_json"]
