"""Model artifacts: an ONNX file pushed by digest with its signature, and read back."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgepipe import onnxfile

from .client import Client
from .refs import (
    ANNOTATION,
    EMPTY_CONFIG,
    MANIFEST,
    MODEL_ARTIFACT,
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
    """Push an ONNX file as a model artifact; re-pushing the same file uploads nothing."""
    from edgepipe.config import digest_to_uuid

    path = Path(path)
    digest, size = file_digest(path)
    sha = digest.removeprefix("sha256:")
    inputs, outputs = onnxfile.signature(path)
    version = version or digest_to_uuid(sha)
    uploaded = client.push_blob(repository, path, digest, size, progress)
    empty_config = client.push_bytes(repository, b"{}", EMPTY_CONFIG)
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "artifactType": MODEL_ARTIFACT,
        "config": empty_config,
        "layers": [
            {
                "mediaType": MODEL_LAYER,
                "digest": digest,
                "size": size,
                "annotations": {
                    "org.opencontainers.image.title": path.name,
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


def model_layer(manifest: dict[str, Any], ref: object) -> dict[str, Any]:
    for layer in manifest.get("layers", []):
        if layer.get("mediaType") == MODEL_LAYER:
            return layer
    raise OciError(f"{ref} is not an edgepipe model (no {MODEL_LAYER} layer)")


@dataclass(frozen=True)
class ModelInfo:
    """What an ``oci://`` model's manifest says: the ONNX file's sha256, and its output
    names (None when the manifest does not list them)."""

    sha256: str
    outputs: list[str] | None


def model_info(
    url: str, credentials: Credentials | None = None, plain_http: bool | None = None
) -> ModelInfo:
    """Read an ``oci://`` model reference's manifest (one small request)."""
    ref = Reference.parse(url)
    client = Client(
        ref.registry, credentials, plain_http=speaks_plain_http(ref.registry, plain_http)
    )
    manifest, _ = client.get_manifest(ref)
    layer = model_layer(manifest, ref)
    return ModelInfo(layer["digest"].removeprefix("sha256:"), _output_names(layer))


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
