"""Edge mode: pull a published pipeline (config and model layers) from an OCI registry.

With ``PIPELINE_URL`` set, the engine logs in with ``OCI_REGISTRY``/``OCI_USERNAME``/
``OCI_PASSWORD``, fetches the pipeline's manifest and config, then each model layer, and
serves. Everything lands in ``EDGEPIPE_ENGINE_CACHE_DIR``:

- ``blobs/sha256/<hex>``: model files, written atomically (temp file, digest check,
  rename) and checked again on every start, so a truncated or corrupted file is never
  served: it is fetched again, or, with the registry down, start-up fails.
- ``pipelines/<hash of the URL>.json``: the last manifest and config seen, so a restart
  with the registry down (an offline edge device) still serves the same pipeline.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgepipe import oci
from edgepipe.config import PipelineConfig, model_version
from edgepipe.oci import signing

from .errors import StartupError
from .settings import EdgeSource, RegistryLogin, Settings, SettingsError

log = logging.getLogger("edgepipe.engine")


def reference(edge: EdgeSource) -> oci.Reference:
    url = edge.pipeline_url
    try:
        return oci.Reference.parse(url)
    except oci.OciError:
        if edge.registry:  # PIPELINE_URL without its registry: take OCI_REGISTRY's
            return oci.Reference.parse(f"{edge.registry.rstrip('/')}/{url.lstrip('/')}")
        raise StartupError(f"PIPELINE_URL={url!r}: expected registry/repository:tag") from None


def index_path(cache: Path, url: str) -> Path:
    return cache / "pipelines" / (hashlib.sha256(url.encode()).hexdigest()[:24] + ".json")


def write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def blob_path(cache: Path, digest: str) -> Path:
    return cache / "blobs" / "sha256" / digest.removeprefix("sha256:")


def cached_blob_ok(path: Path, digest: str) -> bool:
    """True when the cached file exists and has the right digest; a bad one is removed."""
    if not path.exists():
        return False
    actual, _ = oci.file_digest(path)
    if actual == digest:
        return True
    log.warning("cached %s is corrupt (digest %s); discarding it", path.name, actual)
    path.unlink(missing_ok=True)
    return False


def client_for(login: RegistryLogin, registry: str) -> oci.Client:
    try:
        creds = login.credentials(registry)
    except SettingsError as exc:
        raise StartupError(str(exc)) from None
    # OCI_PLAIN_HTTP=true forces plain HTTP; unset (or false), loopback decides.
    plain = oci.speaks_plain_http(registry, login.plain_http or None)
    return oci.Client(registry, creds, plain_http=plain)


@dataclass(frozen=True)
class Fetched:
    """A pipeline's manifest and config, and the client to pull its models with: None when
    they came from the cache because the registry is unreachable."""

    manifest: dict[str, Any]
    config: bytes
    client: oci.Client | None


def fetch_pipeline(settings: Settings) -> tuple[PipelineConfig, dict[str, Path]]:
    """The published pipeline's config and its model files, from the registry or cache."""
    edge = settings.edge
    assert edge is not None
    ref = reference(edge)
    log.info("edgepipe engine - standalone (edge) mode")
    fetched = _manifest_and_config(settings, ref, verify_key(edge))
    try:
        config = PipelineConfig.model_validate_json(fetched.config)
    except ValueError as exc:
        raise StartupError(f"{ref}: the pipeline config does not validate: {exc}") from None
    paths = _pull_models(fetched, config, ref, settings.cache_dir)
    prune_cache(settings.cache_dir, settings.cache_versions)
    log.info("Starting engine")
    return config, paths


def _manifest_and_config(settings: Settings, ref: oci.Reference, key: Any) -> Fetched:
    """From the registry (and cached), else, with the registry unreachable, from the cache;
    every failure as a StartupError that says what to fix."""
    login = settings.registry_login
    try:
        client = client_for(login, ref.registry)
        fetched = _from_registry(client, ref, key, settings.cache_dir)
        if login.username:
            log.info("Login Succeeded")
        return fetched
    except oci.RegistryUnavailable as exc:
        return _from_cache(settings.cache_dir, ref, key, exc)
    except signing.SignatureError as exc:
        raise StartupError(f"{exc}; serving nothing from it (OCI_VERIFY_KEY)") from None
    except oci.AuthError as exc:
        raise StartupError(f"cannot log in to {ref.registry}: {exc}") from None
    except oci.OciError as exc:
        raise StartupError(f"cannot fetch {ref}: {exc}") from None


def _from_registry(client: oci.Client, ref: oci.Reference, key: Any, cache: Path) -> Fetched:
    """Fetch the manifest, check its signature (before anything is cached or loaded), fetch
    the config, and cache both for an offline start."""
    log.info("Fetching manifest and config for pipeline: %s", ref)
    raw, manifest_digest = client.get_manifest_bytes(ref)
    manifest = json.loads(raw)
    if manifest.get("artifactType") != oci.PIPELINE_ARTIFACT:
        raise StartupError(
            f"{ref} is not an edgepipe pipeline (artifactType {manifest.get('artifactType')!r})"
        )
    signatures = None
    if key is not None:
        signatures = signing.fetch_signatures(client, ref.repository, manifest_digest)
        signing.verify(signatures, manifest_digest, key, str(ref))
        log.info("signature verified: %s@%s", ref.repository, manifest_digest)
    config = client.get_blob(ref.repository, manifest["config"]["digest"])
    entry = {
        "url": str(ref),
        "manifest": manifest,
        "manifestRaw": raw.decode(),
        "manifestDigest": manifest_digest,
        "config": config.decode(),
        # Cached with the artifact, so an offline start verifies it again.
        "signatures": signatures.to_json() if signatures else None,
    }
    index = index_path(cache, str(ref))
    write_atomic(index, json.dumps(entry).encode())
    log.debug("manifest %s and config cached in %s", manifest_digest, index)
    return Fetched(manifest, config, client)


def _from_cache(cache: Path, ref: oci.Reference, key: Any, why: Exception) -> Fetched:
    """The cached copy of ``ref`` while the registry is unreachable, verified again."""
    index = index_path(cache, str(ref))
    if not index.exists():
        raise StartupError(f"cannot fetch {ref}: {why}; no cached copy in {cache}")
    log.warning("registry unreachable (%s); starting from the cached copy of %s", why, ref)
    saved = json.loads(index.read_text())
    if key is not None:
        try:
            verify_cached(saved, key, str(ref))  # and takes the manifest from its bytes
        except signing.SignatureError as bad:
            raise StartupError(f"{bad}; serving nothing from it (OCI_VERIFY_KEY)") from None
    os.utime(index)  # the most recently used version, for pruning
    return Fetched(saved["manifest"], saved["config"].encode(), None)


def _pull_models(
    fetched: Fetched, config: PipelineConfig, ref: oci.Reference, cache: Path
) -> dict[str, Path]:
    """Each model the config names, as a verified file in the cache (pulled when missing)."""
    by_sha = {
        layer["digest"]: layer
        for layer in fetched.manifest.get("layers", [])
        if oci.is_weight_layer(layer)  # ModelPack's raw weight, or edgepipe's earlier type
    }
    log.info("Fetching model layers")
    paths: dict[str, Path] = {}
    for where, model in config.models():
        digest = f"sha256:{model.sha256}"
        if digest not in by_sha:
            raise StartupError(
                f"{ref}: {where} needs model {digest}, which the manifest does not carry"
            )
        paths[where] = fetch_blob(fetched.client, ref.repository, digest, cache, str(ref))
        _log_model(by_sha[digest], model.name, model_version(model))
    log.info("Fetched")
    return paths


def verify_key(edge: EdgeSource) -> Any:
    """The public key of OCI_VERIFY_KEY (PEM text or a file), or None when unset."""
    if not edge.verify_key:
        return None
    try:
        return signing.load_public_key(edge.verify_key)
    except signing.KeyProblem as exc:
        raise StartupError(f"OCI_VERIFY_KEY: {exc}") from None


def verify_cached(saved: dict[str, Any], key: Any, what: str) -> None:
    """Verify the cached copy as the registry's: manifest bytes, their signature, the config."""
    raw = (saved.get("manifestRaw") or "").encode()
    if not raw or not saved.get("signatures"):
        raise signing.SignatureError(
            f"{what}: the cached copy has no signature (cached before OCI_VERIFY_KEY was set)"
        )
    digest = "sha256:" + hashlib.sha256(raw).hexdigest()
    signing.verify(signing.Signatures.from_json(saved["signatures"]), digest, key, what)
    config = saved["config"].encode()
    if "sha256:" + hashlib.sha256(config).hexdigest() != json.loads(raw)["config"]["digest"]:
        raise signing.SignatureError(f"{what}: the cached config does not match its manifest")
    saved["manifest"] = json.loads(raw)


def prune_cache(cache: Path, keep: int) -> None:
    """Keep the ``keep`` most recently used pipeline versions and the models they need;
    remove older ones, so that pointing PIPELINE_URL back at any of the kept versions
    starts offline while the cache stays bounded."""
    indexes = sorted(
        (cache / "pipelines").glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True
    )
    needed: set[str] = set()
    for i, index in enumerate(indexes):
        if i >= keep:
            log.info("cache: dropping pipeline version %s (keeping %d)", index.name, keep)
            index.unlink(missing_ok=True)
            continue
        try:
            manifest = json.loads(index.read_text())["manifest"]
        except (OSError, ValueError, KeyError):
            continue
        needed |= {layer["digest"].removeprefix("sha256:") for layer in manifest.get("layers", [])}
    blobs = cache / "blobs" / "sha256"
    for blob in blobs.glob("*") if blobs.exists() else []:
        if blob.name not in needed and not blob.name.startswith("."):  # "." : downloading
            blob.unlink(missing_ok=True)


def fetch_blob(
    client: oci.Client | None, repository: str, digest: str, cache: Path, what: str
) -> Path:
    """A verified model file in the cache, fetched when missing or corrupt."""
    dest = blob_path(cache, digest)
    if cached_blob_ok(dest, digest):
        log.debug("%s: %s from the cache", what, digest)
        return dest
    if client is None:
        raise StartupError(
            f"{what}: model {digest} is not in the cache (or was corrupt) "
            "and the registry is unreachable"
        )
    try:
        client.pull_blob(repository, digest, dest)
    except oci.OciError as exc:  # DigestMismatch included: never serve a bad download
        raise StartupError(f"{what}: cannot fetch model {digest}: {exc}") from None
    return dest


def _log_model(layer: dict[str, Any], name: str, version: str) -> None:
    ann = layer.get("annotations") or {}
    log.info("digest: %s", layer["digest"])
    log.info("  filename: %s", layer["digest"].removeprefix("sha256:"))
    log.info("  name: %s", ann.get(f"{oci.ANNOTATION}.name", name))
    log.info("  type: model")
    log.info("  runtime: %s", ann.get(f"{oci.ANNOTATION}.runtime", "onnx"))
    log.info("  version: %s", ann.get(f"{oci.ANNOTATION}.version", version))


def fetch_model(url: str, settings: Settings) -> Path:
    """An ``oci://`` model reference (a Pipeline step's url: a ModelPack artifact, a
    modelcar image, an earlier edgepipe model) as a verified cached file."""
    ref = oci.Reference.parse(url)
    client = client_for(settings.registry_login, ref.registry)
    found = oci.locate(client, ref)
    oci.check_size(found, settings.max_model_bytes)
    if found.digest is not None:  # a raw layer is the file
        return fetch_blob(client, ref.repository, found.digest, settings.cache_dir, url)
    # Layers are read (never extracted) in a folder of the cache; only the ONNX file stays.
    work = settings.cache_dir / "tmp"
    work.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        path, sha = oci.extract(client, found, Path(tmp), settings.max_model_bytes)
        dest = blob_path(settings.cache_dir, f"sha256:{sha}")
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, dest)
    return dest
