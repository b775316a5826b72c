"""The models a vendor node holds, by SHA-256: registered from a file on the node's
host, kept as a copy next to the node's state (``models/<sha256>.onnx`` or
``.json``), loaded when a run needs them. Only the vendor's node reads its model;
the spec carries its hash and public shape, never its numbers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from concilium.errors import InputError, ModelError
from concilium.evaluation.governed import model_digest
from concilium.evaluation.model_files import load_model
from concilium.evaluation.models import Model
from concilium.governance import audit_events as events

__all__ = ["MAXIMUM_MODEL_BYTES", "held_models", "models_directory", "register_model"]

#: Larger files are refused (the models this evaluates are far smaller).
MAXIMUM_MODEL_BYTES = 256 << 20


def models_directory(context: Any) -> Path:
    """Where this node keeps its models (beside its audit log)."""
    return Path(context.audit_path).parent / "models"


def register_model(context: Any, path: str, by: str) -> dict[str, Any]:
    """Check a model file (parsed, whitelisted operators), keep a copy and log it
    (``model_registered``, by user ``by``); its hash and public shape (what a proposal
    shows approvers)."""
    source = Path(path)
    try:
        if not source.is_file():
            raise InputError(f"the model file {path!r} is not a file on this node's host")
        if source.stat().st_size > MAXIMUM_MODEL_BYTES:
            raise InputError(f"the model file {path!r} is larger than "
                             f"{MAXIMUM_MODEL_BYTES >> 20} MiB")
        content = source.read_bytes()
    except (OSError, ValueError) as error:
        raise InputError(f"cannot read the model file {path!r}: {error}") from None
    suffix = ".onnx" if source.suffix == ".onnx" else ".json"
    model = load_model(content, source.name)
    digest = model_digest(content)
    directory = models_directory(context)
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / f"{digest}{suffix}"
    if not target.exists():
        partial = target.with_suffix(".partial")
        partial.write_bytes(content)
        partial.replace(target)
    shape = model.shape()
    context.audit.record(events.ModelRegistered(digest, source.name, shape, by))
    return {"sha256": digest, "shape": shape, "file": source.name}


def held_models(context: Any) -> dict[str, Model]:
    """Every model this node holds, by hash (a file whose bytes no longer hash to its
    name is refused: the spec's approvals were for the other bytes)."""
    directory = models_directory(context)
    models: dict[str, Model] = {}
    if not directory.exists():
        return models
    for path in sorted(directory.iterdir()):
        if path.suffix not in (".onnx", ".json"):
            continue
        content = path.read_bytes()
        if model_digest(content) != path.stem:
            raise ModelError(f"the model file {path.name} was changed after it was "
                             "registered; register it again and re-propose")
        models[path.stem] = load_model(content, path.name)
    return models
