"""A model file's bytes as a model: ONNX (``.onnx``, through the operator whitelist of
:mod:`~concilium.evaluation.onnx_import`) or a Concilium JSON model
(:func:`~concilium.evaluation.models.model_to_json`)."""

from __future__ import annotations

from concilium.evaluation.models import Model, model_from_json
from concilium.evaluation.onnx_import import from_onnx

__all__ = ["load_model"]


def load_model(content: bytes, name: str = "model") -> Model:
    """The model in a file's bytes; ``name`` (the file name) says which format."""
    if name.endswith(".onnx"):
        return from_onnx(content)
    return model_from_json(content)
