"""OCI artifacts for models and pipelines, on the oras SDK.

- A **model** is an artifact of type ``application/vnd.edgepipe.model.v1``: an empty config
  and one layer, the ONNX file (``application/vnd.edgepipe.model.onnx``), annotated with
  its name, version, sha256, runtime and input/output signatures. Its reference is
  ``oci://<registry>/<prefix>/models/<name>@sha256:<manifest digest>``.
- A **pipeline** is an artifact of type ``application/vnd.edgepipe.pipeline.v1`` whose config
  blob is the pipeline config document (the engine's own bytes) and whose layers are the
  models, by digest.

``refs`` names things (media types, references, credentials, errors), ``client`` talks to
a registry, ``target`` says where a publish goes, and ``models`` pushes and reads model
artifacts.
"""

from .client import Client
from .models import ModelInfo, PushedModel, model_info, model_layer, model_sha256, push_model
from .refs import *  # noqa: F403 - the names, media types and errors, as refs.__all__ lists
from .target import Target, file_digest

__all__ = [
    "Client",
    "ModelInfo",
    "PushedModel",
    "Target",
    "file_digest",
    "model_info",
    "model_layer",
    "model_sha256",
    "push_model",
]
__all__ += refs.__all__  # noqa: F405
