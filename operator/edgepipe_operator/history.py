"""A Pipeline's past versions, kept whole: one ControllerRevision per version (the object
Deployments and StatefulSets keep their own history in), owned by the Pipeline, holding
its resolved pipeline config. Pinning ``spec.version`` deploys one of them again, and a
Publish of a past version pushes one of them."""

from __future__ import annotations

from collections.abc import Callable

import kopf
from pydantic import ValidationError

from edgepipe.config import ConfigError, PipelineConfig

from . import cache
from .builders import (
    VERSION_LABEL,
    build_revision,
    next_revision,
    revision_versions,
    revisions_to_prune,
    selector_labels,
)
from .kube import Kube


class VersionNotKept(ConfigError):
    """A version asked for that is not kept (or no longer validates); ``detail`` says
    which, without the field's name (a Publish names its pipeline instead)."""

    reason = "VersionNotAvailable"

    def __init__(self, detail: str) -> None:
        super().__init__(f"spec.version: {detail}", "spec.version")
        self.detail = detail


def pinned_config(kube: Kube, pipeline: str, namespace: str, version: str) -> PipelineConfig:
    """The kept config of a past version, or VersionNotKept (a ConfigError naming spec.version)."""
    revisions = kube.list_revisions(namespace, selector_labels(pipeline))
    for rev in revisions:
        if (rev["metadata"].get("labels") or {}).get(VERSION_LABEL) == version:
            try:
                return PipelineConfig.model_validate(rev["data"])
            except ValidationError as exc:
                raise VersionNotKept(
                    f"the kept config of {version} no longer validates: {exc}"
                ) from None
    known = ", ".join(revision_versions(revisions)) or "none yet"
    raise VersionNotKept(f"{version} is not among this Pipeline's kept versions ({known})")


def remember(
    kube: Kube,
    body: kopf.Body,
    config: PipelineConfig,
    namespace: str,
    keep: int,
    cached: list[dict] | None = None,
    current: Callable[[dict], bool] | None = None,
) -> None:
    """Keep this version's config (as the newest revision) and prune beyond ``keep``.

    ``cached`` (the revision index's) and ``current`` (is this manifest already applied?)
    save all calls when this version is already the newest kept; anything else lists the
    revisions first, since a new revision's number must not come from a lagging cache.
    """
    if cached is not None and current is not None and len(cached) <= keep:
        manifest = build_revision(config, namespace, next_revision(cached, config.version))
        kopf.adopt(manifest, owner=body)
        if current(manifest):
            return
    revisions = kube.list_revisions(namespace, selector_labels(config.name))
    manifest = build_revision(config, namespace, next_revision(revisions, config.version))
    kopf.adopt(manifest, owner=body)
    digest = cache.stamp(manifest)
    name = manifest["metadata"]["name"]
    # A second look at an event the revision index had not caught up with (kopf re-handles
    # a creation when its watch lags our own writes): the list is read from etcd, so a
    # revision already there with this digest needs no second write.
    if not any(_is(r, name, digest) for r in revisions):
        kube.apply(manifest)
    # The list as it now stands, without reading it again: this version's one replaced.
    revisions = [r for r in revisions if r["metadata"]["name"] != name] + [manifest]
    for name in revisions_to_prune(revisions, keep):
        kube.delete("ControllerRevision", name, namespace)


def _is(revision: dict, name: str, digest: str) -> bool:
    meta = revision.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    return meta.get("name") == name and annotations.get(cache.APPLIED_ANNOTATION) == digest


def kept_versions(kube: Kube, pipeline: str, namespace: str) -> list[str]:
    return revision_versions(kube.list_revisions(namespace, selector_labels(pipeline)))


__all__ = ["VersionNotKept", "kept_versions", "pinned_config", "remember"]
