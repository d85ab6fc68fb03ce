"""OCI artifacts for models and pipelines, on the oras SDK.

- A **model** is a CNCF ModelPack v1 artifact (``modelpack``: artifact type
  ``application/vnd.cncf.model.manifest.v1+json``, a ``format: onnx`` config, the ONNX file
  as one raw weight layer annotated with its ``org.cncf.model.filepath``, plus edgepipe's
  own annotations: name, version, sha256, runtime, input/output signatures). Its reference
  is ``oci://<registry>/<prefix>/models/<name>@sha256:<manifest digest>``. A model is read
  from a ModelPack artifact of any tool, a KServe modelcar image (``/models``) or edgepipe's
  earlier media types (``modelfiles``), ``?path=FILE`` choosing among several files.
- A **pipeline** is an artifact of type ``application/vnd.edgepipe.pipeline.v1`` whose config
  blob is the pipeline config document (the engine's own bytes) and whose layers are the
  models, by digest, as raw ModelPack weights.

``refs`` names things (media types, references, credentials, errors), ``client`` talks to
a registry, ``target`` says where a publish goes, ``models`` pushes and reads model
artifacts, and ``tars`` reads image layers without extracting them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from . import modelpack
from .refs import *  # noqa: F403 - the names, media types and errors, as refs.__all__ lists
from .tars import TooLarge, UnsafeArchive

if TYPE_CHECKING:
    from .client import Client
    from .modelfiles import (
        DEFAULT_MAX_MODEL_BYTES,
        Located,
        ModelNotFound,
        check_size,
        extract,
        locate,
    )
    from .models import (
        ModelInfo,
        PushedModel,
        is_weight_layer,
        model_info,
        model_layer,
        model_sha256,
        push_model,
    )
    from .target import Target, file_digest

__all__ = [
    "DEFAULT_MAX_MODEL_BYTES",
    "Client",
    "Located",
    "ModelInfo",
    "ModelNotFound",
    "PushedModel",
    "Target",
    "TooLarge",
    "UnsafeArchive",
    "check_size",
    "extract",
    "file_digest",
    "is_weight_layer",
    "locate",
    "model_info",
    "model_layer",
    "model_sha256",
    "modelpack",
    "push_model",
]
__all__ += refs.__all__  # noqa: F405


def __getattr__(name: str) -> Any:
    """The client, the model reads and pushes and the publish target, on first use: they
    need the oras SDK, requests and jsonschema (about 9 MB and 190 modules), which a
    process that only names credentials, references and errors never loads (the operator
    until it publishes or polls edges, an engine that fetches nothing)."""
    if name.startswith("_"):  # dunders Python looks up (and the submodules' privates)
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    for sub in ("client", "modelfiles", "models", "target"):
        module = importlib.import_module(f"{__name__}.{sub}")
        if name in vars(module):
            value = vars(module)[name]
            globals()[name] = value  # once: later reads find it without this function
            return value
    if name in globals():  # a submodule, bound here when it was imported just now
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
