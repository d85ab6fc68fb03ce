"""The names a pipeline's validations may read, the last step's outputs, and the check that
every rule reads only those, shared by the operator, `publish push` and `pipeline apply`.

What is checkable depends on where the check runs, and the rule is the same everywhere:

- A last step with a postprocess answers ``detections``, whatever its model: known
  everywhere, without the model (the operator, ``pipeline apply``, ``publish push``).
- Otherwise the names are the last model's outputs, known only where its signature can be
  read: a local ONNX file (``publish push``, with onnxruntime), or an ``oci://`` model whose
  manifest (written by ``edgepipe model push``) lists them, where the manifest is read
  anyway. A model given by ``path`` in a Pipeline (a file in the engine's image) or by an
  ``http(s)://`` URL is not read there: its rules are checked by the engine, at load.

An unknown signature is not an error: the check then leaves the names to the engine.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from .config import ConfigError, ModelRef, PipelineConfig
from .expressions import ExpressionError, parse

# The YOLOv8 postprocess's one output (the engine's runtime answers it under this name).
DETECTIONS = "detections"

# (field path of a model, the model) -> its output names, or None where they are unknown.
OutputsOf = Callable[[str, ModelRef], list[str] | None]


def output_names(config: PipelineConfig, outputs_of: OutputsOf | None = None) -> list[str] | None:
    """The last step's output names, or None when they cannot be known here."""
    i = len(config.steps) - 1
    last = config.steps[i]
    if last.postprocess is not None:
        return [DETECTIONS]
    return outputs_of(f"steps[{i}].model", last.model) if outputs_of else None


def check_validations(
    config: PipelineConfig, outputs_of: OutputsOf | None = None, prefix: str = ""
) -> None:
    """Raise ConfigError naming every validation that reads a name the pipeline does not
    answer (``{prefix}validations[i].expr``); nothing when the names are unknown."""
    if not config.validations:  # nothing to check: no model signature read for nothing
        return
    names = output_names(config, outputs_of)
    if names is None:
        return
    problems = []
    for i, validation in enumerate(config.validations):
        try:
            parse(validation.expr, frozenset(names))
        except ExpressionError as exc:
            problems.append((f"{prefix}validations[{i}].expr", str(exc)))
    if problems:
        text = "; ".join(f"{field}: {why}" for field, why in problems)
        raise ConfigError(text, problems[0][0])


def local_outputs(_: str, ref: ModelRef) -> list[str] | None:
    """A local model file's output names (onnxruntime reads them); None for any other."""
    if not ref.path or not Path(ref.path).is_file():
        return None
    try:
        from . import onnxfile

        _, outputs = onnxfile.signature(ref.path)
    except ImportError:  # a library install without onnxruntime: the engine checks
        return None
    return [o["name"] for o in outputs]


def readable_outputs(where: str, ref: ModelRef) -> list[str] | None:
    """Output names where ``publish push`` can read them: a local file, or an ``oci://``
    model's manifest (a registry that does not answer leaves them unknown here; the
    publish itself then says what is wrong)."""
    if ref.url and ref.url.startswith("oci://"):
        from . import oci

        try:
            return oci.model_info(ref.url).outputs
        except oci.OciError:
            return None
    return local_outputs(where, ref)
