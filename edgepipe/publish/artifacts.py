"""The pipeline artifact: every model by digest in the pipeline's repository, then the
config blob and a manifest tagged with the pipeline version.

A model is uploaded from a local file, mounted from the repository it was pushed to (same
registry), or copied from another registry.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgepipe import oci, onnxfile
from edgepipe.config import ConfigError, ModelRef, PipelineConfig, model_version

from .errors import PublishError

Log = Callable[[str], None]


def resolve_refs(config: PipelineConfig, target: oci.Target | None = None) -> PipelineConfig:
    """Fill in the sha256 of ``oci://`` models from the registry (local files already
    are), and compute the version. A model in the target's registry is read with its
    login (a modelcar image is downloaded to hash its ONNX file)."""

    def resolve(where: str, model: ModelRef) -> ModelRef:
        if model.url and model.url.startswith("oci://") and not model.sha256:
            try:
                same = target is not None and oci.Reference.parse(model.url).registry == (
                    target.registry
                )
                login = (target.credentials, target.plain_http) if same else (None, None)
                sha = oci.model_sha256(model.url, *login)
                return model.model_copy(update={"sha256": sha})
            except oci.OciError as exc:
                raise ConfigError(f"{where}.url: {exc}", f"{where}.url") from None
        return model

    return config.map_models(resolve).with_version()


def _ensure_model_blob(
    client: oci.Client,
    target: oci.Target,
    repository: str,
    ref_url: str | None,
    path: Path | None,
    digest: str,
    log: Log,
    progress: oci.Progress | None,
) -> int:
    """Put one model file into ``repository``; its size."""
    if path is not None:
        onnxfile.check(path)
        actual, size = oci.file_digest(path)
        if actual != digest:
            raise PublishError(f"{path} has digest {actual}, the pipeline says {digest}")
        client.push_blob(repository, path, digest, size, progress)
        return size
    if ref_url and ref_url.startswith("oci://"):
        src = oci.Reference.parse(ref_url)
        source = (
            client
            if src.registry == target.registry
            else oci.Client(src.registry, plain_http=oci.speaks_plain_http(src.registry))
        )
        found = oci.locate(source, src)
        if found.digest is None:  # inside a modelcar image or a tar weight: copy it out
            return _push_extracted(client, source, found, repository, digest, progress)
        layer = found.layers[0]
        if layer["digest"] != digest:
            raise PublishError(f"{ref_url} holds {layer['digest']}, the pipeline says {digest}")
        if client.blob_exists(repository, digest):
            return layer["size"]
        if source is client and client.mount_blob(repository, digest, src.repository):
            log(f"mounted {digest[:19]} from {src.repository}")
            return layer["size"]
        with tempfile.TemporaryDirectory() as tmp:
            local = source.pull_blob(src.repository, digest, Path(tmp) / "model.onnx")
            client.push_blob(repository, local, digest, layer["size"], progress)
        return layer["size"]
    raise PublishError(
        "a model given as a path inside the engine image cannot be published from here; "
        "push it first (edgepipe model push FILE --registry …) and use its oci:// reference"
    )


def _push_extracted(
    client: oci.Client,
    source: oci.Client,
    found: oci.Located,
    repository: str,
    digest: str,
    progress: oci.Progress | None,
) -> int:
    """The ONNX file of a modelcar image or a tar weight, as its own blob; its size."""
    with tempfile.TemporaryDirectory(prefix="edgepipe-model-") as tmp:
        local, sha = oci.extract(source, found, Path(tmp), oci.DEFAULT_MAX_MODEL_BYTES)
        if f"sha256:{sha}" != digest:
            raise PublishError(f"{found.ref} holds sha256:{sha}, the pipeline says {digest}")
        size = local.stat().st_size
        client.push_blob(repository, local, digest, size, progress)
    return size


def push_pipeline(
    target: oci.Target,
    config: PipelineConfig,
    model_files: dict[str, Path] | None = None,
    *,
    log: Log = lambda _: None,
    progress: oci.Progress | None = None,
) -> tuple[str, str]:
    """Push the pipeline artifact; (pipeline URL, manifest digest)."""
    if not config.version or not config.is_resolved():
        raise PublishError("the pipeline config must be resolved (every model's sha256 known)")
    client = target.client()
    repository = target.repository("pipelines", config.name)
    layers: list[dict[str, Any]] = []
    seen: set[str] = set()
    every = [
        (step, model)
        for i, step in enumerate(config.steps)
        for _, model in step.models(f"steps[{i}]")
    ]
    for step, model in every:
        digest = f"sha256:{model.sha256}"
        local = (model_files or {}).get(model.sha256)
        if local is None and model.path and Path(model.path).exists():
            local = Path(model.path)
        log(f"model {model.name}: {digest}")
        size = _ensure_model_blob(
            client, target, repository, model.url, local, digest, log, progress
        )
        if digest in seen:
            continue
        seen.add(digest)
        layers.append(
            {
                # A standard raw weight; edgepipe's facts are annotations (the config, not
                # the media type, says which step uses it).
                "mediaType": oci.modelpack.WEIGHT_RAW,
                "digest": digest,
                "size": size,
                "annotations": {
                    oci.modelpack.FILEPATH: f"{model.sha256}.onnx",
                    "org.opencontainers.image.title": f"{model.sha256}",
                    f"{oci.ANNOTATION}.name": model.name,
                    f"{oci.ANNOTATION}.version": model_version(model),
                    f"{oci.ANNOTATION}.sha256": model.sha256,
                    f"{oci.ANNOTATION}.runtime": model.runtime,
                    f"{oci.ANNOTATION}.step": step.step_name,
                },
            }
        )
    config_blob = client.push_bytes(repository, config.to_json(), oci.PIPELINE_CONFIG)
    manifest = {
        "schemaVersion": 2,
        "mediaType": oci.MANIFEST,
        "artifactType": oci.PIPELINE_ARTIFACT,
        "config": config_blob,
        "layers": layers,
        "annotations": {
            "io.edgepipe.pipeline.name": config.name,
            "io.edgepipe.pipeline.version": config.version,
        },
    }
    digest = client.put_manifest(repository, manifest, tag=config.version)
    url = f"{target.registry}/{repository}:{config.version}"
    log(f"pipeline {url} ({digest})")
    return url, digest
