"""Model artifacts: an ONNX file pushed as a ModelPack artifact, and read back."""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgepipe import onnxfile

from . import modelpack
from .client import Client
from .modelfiles import DEFAULT_MAX_MODEL_BYTES, extract, locate
from .refs import (
    ANNOTATION,
    MANIFEST,
    MODEL_LAYER,
    Credentials,
    OciError,
    Progress,
    Reference,
    speaks_plain_http,
)
from .target import file_digest


@dataclass(frozen=True)
class PushedModel:
    reference: str  # oci://registry/repo@sha256:<manifest digest>
    sha256: str  # the ONNX file's
    manifest_digest: str
    uploaded: bool  # False when the registry already had the file


def push_model(
    client: Client,
    path: str | Path,
    *,
    name: str,
    repository: str,
    version: str | None = None,
    progress: Progress | None = None,
) -> PushedModel:
    """Push an ONNX file as a ModelPack v1 artifact (a ``format: onnx`` config and the file
    as one raw weight layer); re-pushing the same file uploads nothing.

    edgepipe's own facts (name, version, sha256, runtime, signature) ride along as
    annotations, which other tools ignore."""
    from edgepipe.config import digest_to_uuid

    path = Path(path)
    digest, size = file_digest(path)
    sha = digest.removeprefix("sha256:")
    inputs, outputs = onnxfile.signature(path)
    version = version or digest_to_uuid(sha)
    uploaded = client.push_blob(repository, path, digest, size, progress)
    document = modelpack.config_document(name, version, [digest])
    config = client.push_bytes(repository, modelpack.config_bytes(document), modelpack.CONFIG)
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "artifactType": modelpack.ARTIFACT_TYPE,
        "config": config,
        "layers": [
            {
                "mediaType": modelpack.WEIGHT_RAW,
                "digest": digest,
                "size": size,
                "annotations": {
                    modelpack.FILEPATH: path.name,
                    modelpack.TITLE: path.name,
                    f"{ANNOTATION}.name": name,
                    f"{ANNOTATION}.version": version,
                    f"{ANNOTATION}.sha256": sha,
                    f"{ANNOTATION}.runtime": "onnx",
                    f"{ANNOTATION}.inputs": json.dumps(inputs, separators=(",", ":")),
                    f"{ANNOTATION}.outputs": json.dumps(outputs, separators=(",", ":")),
                },
            }
        ],
        "annotations": {f"{ANNOTATION}.name": name, f"{ANNOTATION}.version": version},
    }
    manifest_digest = client.put_manifest(repository, manifest, tag=version)
    ref = f"oci://{client.registry}/{repository}@{manifest_digest}"
    return PushedModel(ref, sha, manifest_digest, uploaded)


def is_weight_layer(layer: dict[str, Any]) -> bool:
    """A model file as one raw layer: a ModelPack raw weight, or edgepipe's earlier type
    (publishes and caches from before ModelPack)."""
    return layer.get("mediaType") in (modelpack.WEIGHT_RAW, MODEL_LAYER)


def model_layer(manifest: dict[str, Any], ref: object) -> dict[str, Any]:
    """The first raw weight layer of a model manifest."""
    for layer in manifest.get("layers", []):
        if is_weight_layer(layer):
            return layer
    raise OciError(f"{ref} is not a model (no {modelpack.WEIGHT_RAW} layer)")


@dataclass(frozen=True)
class ModelInfo:
    """What an ``oci://`` model's manifest says: the ONNX file's sha256, and its output
    names (None when the manifest does not list them)."""

    sha256: str
    outputs: list[str] | None


def model_info(
    url: str,
    credentials: Credentials | None = None,
    plain_http: bool | None = None,
    max_bytes: int = DEFAULT_MAX_MODEL_BYTES,
) -> ModelInfo:
    """Read an ``oci://`` model reference: its manifest (one small request) when a raw
    layer is the file; a modelcar image or a tar weight is downloaded (to a temporary
    folder) and the file hashed, once per manifest digest in this process."""
    ref = Reference.parse(url)
    client = Client(
        ref.registry, credentials, plain_http=speaks_plain_http(ref.registry, plain_http)
    )
    found = locate(client, ref)
    if found.digest is not None:
        layer = found.layers[0]
        return ModelInfo(found.digest.removeprefix("sha256:"), _output_names(layer))
    key = (ref.registry, ref.repository, ref.path, tuple(x["digest"] for x in found.layers))
    if key not in _EXTRACTED:
        with tempfile.TemporaryDirectory(prefix="edgepipe-model-") as work:
            _, sha = extract(client, found, Path(work), max_bytes)
        while len(_EXTRACTED) >= 64:
            _EXTRACTED.pop(next(iter(_EXTRACTED)))
        _EXTRACTED[key] = ModelInfo(sha, None)
    return _EXTRACTED[key]


# An operator resolves the same reference on every reconcile: an image is read once.
_EXTRACTED: dict[tuple[Any, ...], ModelInfo] = {}


def _output_names(layer: dict[str, Any]) -> list[str] | None:
    raw = (layer.get("annotations") or {}).get(f"{ANNOTATION}.outputs")
    try:
        return [o["name"] for o in json.loads(raw)] if raw else None
    except (ValueError, TypeError, KeyError):  # written by something else: not known
        return None


def model_sha256(
    url: str, credentials: Credentials | None = None, plain_http: bool | None = None
) -> str:
    """The ONNX file's sha256 behind an ``oci://`` model reference."""
    return model_info(url, credentials, plain_http).sha256
