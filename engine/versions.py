"""The pipeline versions an updating edge keeps: fetching one by digest (verified first,
only the models the cache lacks), reading one back from the cache with no network, and
the device's own record of what runs, what ran before and which digests are bad.

Cache layout, beside what ``edge.py`` writes (``pipelines/<hash of the URL>.json``):

- ``pipelines/<hash of registry/repo@digest>.json``: each version fetched by digest, the
  same entry as a URL's, so a rollback or an offline start needs no network;
- ``updates/<hash of PIPELINE_URL>.json``: the device record (``DeviceRecord``).

The URL's own entry is rewritten only when a version becomes Current, so an edge restarted
offline in the middle of an update starts on its last good version.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgepipe import oci
from edgepipe.config import PipelineConfig
from edgepipe.oci import signing

from .edge import blob_path, cached_blob_ok, index_path, verify_cached, write_atomic

log = logging.getLogger("edgepipe.engine")


class UpdateFailed(Exception):
    """A version that cannot be applied; ``result`` is the metric's label and the state
    (``Rejected`` for signatures), the message the reason."""

    def __init__(self, result: str, message: str, *, retry: bool = False) -> None:
        super().__init__(message)
        self.result = result
        self.retry = retry  # the registry or the disk, not the version: try it again


@dataclass
class Version:
    digest: str
    version: str
    config: PipelineConfig
    paths: dict[str, Path]

    def brief(self) -> dict[str, str]:
        return {"version": self.version, "digest": self.digest}


@dataclass
class DeviceRecord:
    """What this device ran and refuses, kept across restarts."""

    running: dict[str, str] | None = None  # {"version", "digest"} of the last good version
    previous: dict[str, str] | None = None
    bad: dict[str, str] = field(default_factory=dict)  # digest -> why
    pointer: str | None = None  # the digest the pointer named at the last poll

    @classmethod
    def load(cls, path: Path) -> DeviceRecord:
        try:
            return cls(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            return cls()

    def save(self, path: Path) -> None:
        write_atomic(path, json.dumps(asdict(self)).encode())

    def saw_pointer(self, digest: str) -> bool:
        """A pointer that moved forgets the old bad marks: it may name one again on purpose.
        True when the record changed."""
        if digest == self.pointer:
            return False
        self.bad = {d: why for d, why in self.bad.items() if d == digest}
        self.pointer = digest
        return True


def record_path(cache: Path, url: str) -> Path:
    return cache / "updates" / (hashlib.sha256(url.encode()).hexdigest()[:24] + ".json")


def at_digest(ref: oci.Reference, digest: str) -> oci.Reference:
    return oci.Reference(ref.registry, ref.repository, digest=digest)


def fetch(client: oci.Client, ref: oci.Reference, digest: str, key: Any, cache: Path) -> Version:
    """Version ``digest`` of ``ref``'s repository: signature first, then the config, then
    each model the cache lacks (a cut download resumes with HTTP Range)."""
    at = at_digest(ref, digest)
    try:
        raw, _ = client.get_manifest_bytes(at)
        manifest = json.loads(raw)
        if manifest.get("artifactType") != oci.PIPELINE_ARTIFACT:
            raise UpdateFailed("invalid", f"{at} is not an edgepipe pipeline")
        signatures = None
        if key is not None:
            signatures = signing.fetch_signatures(client, ref.repository, digest)
            signing.verify(signatures, digest, key, str(at))
        config_bytes = client.get_blob(ref.repository, manifest["config"]["digest"])
    except signing.SignatureError as exc:
        raise UpdateFailed("Rejected", f"{exc} (OCI_VERIFY_KEY)") from None
    except oci.RegistryUnavailable as exc:
        raise UpdateFailed("registry-down", str(exc), retry=True) from None
    except oci.OciError as exc:
        raise UpdateFailed("invalid", f"cannot fetch {at}: {exc}") from None
    config = _config(config_bytes, str(at))
    entry = {
        "url": str(at),
        "manifest": manifest,
        "manifestRaw": raw.decode(),
        "manifestDigest": digest,
        "config": config_bytes.decode(),
        "signatures": signatures.to_json() if signatures else None,
    }
    paths = _download(client, ref.repository, manifest, config, cache)
    write_atomic(index_path(cache, str(at)), json.dumps(entry).encode())
    return Version(digest, config.version or "", config, paths)


def _config(data: bytes, what: str) -> PipelineConfig:
    try:
        return PipelineConfig.model_validate_json(data)
    except ValueError as exc:
        raise UpdateFailed(
            "invalid", f"{what}: the pipeline config does not validate: {exc}"
        ) from None


def _download(
    client: oci.Client, repository: str, manifest: dict, config: PipelineConfig, cache: Path
) -> dict[str, Path]:
    layers = {x["digest"] for x in manifest.get("layers", []) if oci.is_weight_layer(x)}
    paths: dict[str, Path] = {}
    for where, model in config.models():
        digest = f"sha256:{model.sha256}"
        if digest not in layers:
            raise UpdateFailed("invalid", f"{where} needs model {digest}, not in the manifest")
        dest = blob_path(cache, digest)
        if not cached_blob_ok(dest, digest):
            log.info("update: downloading model %s (%s)", model.name, digest[:19])
            try:
                client.pull_blob(repository, digest, dest)
            except oci.RegistryUnavailable as exc:
                raise UpdateFailed("registry-down", str(exc), retry=True) from None
            except oci.OciError as exc:
                raise UpdateFailed("download", f"model {digest}: {exc}", retry=True) from None
            except OSError as exc:
                if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                    raise UpdateFailed(
                        "disk-full",
                        f"model {digest}: the disk is full ({exc.strerror})",
                        retry=True,
                    ) from None
                raise UpdateFailed("download", f"model {digest}: {exc}", retry=True) from None
        paths[where] = dest
    return paths


def from_cache(cache: Path, ref: oci.Reference, digest: str, key: Any) -> Version:
    """Version ``digest`` from the cache alone (verified again), for a rollback."""
    at = at_digest(ref, digest)
    index = index_path(cache, str(at))
    if not index.exists() and running_digest(cache, str(ref)) == digest:
        index = index_path(cache, str(ref))  # the version the engine started on
    try:
        saved = json.loads(index.read_text())
    except (OSError, ValueError):
        raise UpdateFailed("invalid", f"{at} is not in the cache") from None
    if key is not None:
        try:
            verify_cached(saved, key, str(at))
        except signing.SignatureError as exc:
            raise UpdateFailed("Rejected", str(exc)) from None
    config = _config(saved["config"].encode(), str(at))
    paths = {}
    for where, model in config.models():
        path = blob_path(cache, f"sha256:{model.sha256}")
        if not cached_blob_ok(path, f"sha256:{model.sha256}"):
            raise UpdateFailed("invalid", f"{at}: model {model.sha256[:12]} left the cache")
        paths[where] = path
    os.utime(index)
    return Version(digest, config.version or "", config, paths)


def make_last_good(cache: Path, url: str, ref: oci.Reference, digest: str) -> None:
    """The URL's own cache entry names ``digest``: an offline start runs it."""
    src = index_path(cache, str(at_digest(ref, digest)))
    try:
        entry = json.loads(src.read_text())
    except (OSError, ValueError):
        return
    entry["url"] = url
    write_atomic(index_path(cache, url), json.dumps(entry).encode())
    os.utime(src)


def running_digest(cache: Path, url: str) -> str | None:
    """The digest the engine started on: the URL's entry, written at start-up."""
    try:
        return json.loads(index_path(cache, url).read_text()).get("manifestDigest")
    except (OSError, ValueError):
        return None


def keep_started(cache: Path, url: str, ref: oci.Reference) -> None:
    """Keep the version the engine started on under its digest too, before anything
    replaces it, so that going back to it needs neither the network nor the URL's entry
    (which a restart rewrites)."""
    try:
        entry = json.loads(index_path(cache, url).read_text())
    except (OSError, ValueError):
        return
    digest = entry.get("manifestDigest")
    if not digest:
        return
    entry["url"] = str(at_digest(ref, digest))
    target = index_path(cache, entry["url"])
    if not target.exists():
        write_atomic(target, json.dumps(entry).encode())
