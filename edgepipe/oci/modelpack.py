"""The CNCF ModelPack spec v1 (``github.com/modelpack/model-spec``, pinned): its media
types, annotation keys and config schema, and the config document edgepipe writes."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

# The Go module the constants and modelspec/config-schema.json come from; the suite
# compares both with that version's copy (tests/test_modelpack.py).
MODEL_SPEC_MODULE = "github.com/modelpack/model-spec"
MODEL_SPEC_VERSION = "v0.0.7"

# specs-go/v1/mediatype.go
ARTIFACT_TYPE = "application/vnd.cncf.model.manifest.v1+json"
CONFIG = "application/vnd.cncf.model.config.v1+json"
WEIGHT_RAW = "application/vnd.cncf.model.weight.v1.raw"
WEIGHT_TAR = "application/vnd.cncf.model.weight.v1.tar"
WEIGHT_TAR_GZIP = "application/vnd.cncf.model.weight.v1.tar+gzip"
WEIGHT_TAR_ZSTD = "application/vnd.cncf.model.weight.v1.tar+zstd"
WEIGHTS = (WEIGHT_RAW, WEIGHT_TAR, WEIGHT_TAR_GZIP, WEIGHT_TAR_ZSTD)
# specs-go/v1/annotations.go
FILEPATH = "org.cncf.model.filepath"
# What oras (and most OCI tools) name a pulled file after.
TITLE = "org.opencontainers.image.title"

SCHEMA_PATH = Path(__file__).parent / "modelspec" / "config-schema.json"


@cache
def config_schema() -> dict[str, Any]:
    """The spec's JSON schema for a model config (draft-04)."""
    return json.loads(SCHEMA_PATH.read_text())


def config_document(name: str, version: str, digests: list[str]) -> dict[str, Any]:
    """A model config for ONNX weights: the model's name and version, and the digests of
    its weight files (``modelfs.diffIds``; a raw layer's is the file's own).

    No ``createdAt``: the same file pushed again gives the same manifest digest."""
    return {
        "descriptor": {"name": name, "version": version},
        "config": {"format": "onnx"},
        "modelfs": {"type": "layers", "diffIds": list(digests)},
    }


def config_bytes(document: dict[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":"), sort_keys=True).encode()


def filepath(layer: dict[str, Any]) -> str | None:
    """The file a layer holds, as the spec's annotation (or, failing it, the title) says."""
    ann = layer.get("annotations") or {}
    return ann.get(FILEPATH) or ann.get(TITLE)
