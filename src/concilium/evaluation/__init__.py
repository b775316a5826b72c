"""Layer 6 (beside query and governance): a vendor's model scored on secret data.

Modules in dependency order: :mod:`~concilium.evaluation.models` (what a model
is: numbers and a shape, from scikit-learn), :mod:`~concilium.evaluation.onnx_import`
(the same from ONNX, for a whitelist of operators),
:mod:`~concilium.evaluation.inference` (the model on secret-shared rows),
:mod:`~concilium.evaluation.metrics` (metrics of secret scores and labels).
"""

from concilium.evaluation.models import (
    DenseLayer,
    LinearModel,
    Model,
    NeuralNetwork,
    TreeEnsemble,
    from_sklearn,
)

__all__ = ["DenseLayer", "LinearModel", "Model", "NeuralNetwork", "TreeEnsemble",
           "from_sklearn"]
