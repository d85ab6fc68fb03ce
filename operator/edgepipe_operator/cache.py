"""What the operator owns, as its watches last saw it: the digest each owned object was
applied from, each Pipeline's kept revisions and its engine pods (the informers' stores,
engine_events.py and stores.py), and the Pipelines (a kopf index).

So a reconcile lists nothing (a label-selected LIST costs the apiserver a scan of the
namespace: O(N) per call, O(N^2) for N Pipelines), and a manifest that has not changed
is not written again: a restarted operator re-applies nothing, and a new engine image
rewrites only the Deployments. Both are filled before any handler runs (the informers
list in a startup handler, kopf fills its indices before handling).

The watches lag the operator's own writes by a moment, so ``Applied`` also remembers what
this process last wrote: a manifest is skipped only when both agree it is current.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import kopf

from edgepipe.resources import GROUP, VERSION

from .builders import MANAGED_BY, PIPELINE_LABEL, VERSION_LABEL

APPLIED_ANNOTATION = "edgepipe.io/applied-digest"
PLURALS = {
    "Deployment": "deployments",
    "Service": "services",
    "ConfigMap": "configmaps",
    "ControllerRevision": "controllerrevisions",
    "HorizontalPodAutoscaler": "horizontalpodautoscalers",
}
MANAGED = {"app.kubernetes.io/managed-by": MANAGED_BY}
REVISIONS = {VERSION_LABEL: kopf.PRESENT}
# A pipeline's engine pods (the pod store, and the status sync's news).
ENGINE_OBJECTS = {**MANAGED, PIPELINE_LABEL: kopf.PRESENT}


def stamp(manifest: dict[str, Any]) -> str:
    """Put the digest of the manifest (all but the digest itself) in its annotations."""
    meta = manifest["metadata"]
    annotations = dict(meta.get("annotations") or {})
    annotations.pop(APPLIED_ANNOTATION, None)
    meta["annotations"] = annotations
    text = json.dumps(manifest, sort_keys=True, separators=(",", ":"), default=str)
    digest = hashlib.sha256(text.encode()).hexdigest()[:24]
    annotations[APPLIED_ANNOTATION] = digest
    return digest


def key(manifest: dict[str, Any]) -> tuple[str, str, str]:
    meta = manifest["metadata"]
    return PLURALS[manifest["kind"]], meta["namespace"], meta["name"]


class Applied:
    """The digests this process applied, beside the index of what the watches saw."""

    def __init__(self) -> None:
        self.written: dict[tuple[str, str, str], str] = {}

    def current(self, index: Any, manifest: dict[str, Any]) -> bool:
        """True when the cluster already has this (stamped) manifest."""
        k = key(manifest)
        digest = manifest["metadata"]["annotations"][APPLIED_ANNOTATION]
        seen = list(index.get(k, []))
        return seen == [digest] and self.written.get(k, digest) == digest

    def wrote(self, manifest: dict[str, Any]) -> None:
        self.written[key(manifest)] = manifest["metadata"]["annotations"][APPLIED_ANNOTATION]


def lighten(body: kopf.Body) -> None:
    """Drop the object's managedFields from the watch event kopf holds (the indices run
    first on every event), if slim.py left any: nothing here or in kopf reads them, and
    kopf keeps each object's last event while its worker waits for the next one."""
    raw = getattr(body, "_src", None)  # kopf.Body is a view of the event's own dict
    meta = raw.get("metadata") if isinstance(raw, dict) else None
    if isinstance(meta, dict):
        meta.pop("managedFields", None)


@kopf.index(GROUP, VERSION, "pipelines")
async def pipeline_index(
    body: kopf.Body, namespace: str, name: str, **_: Any
) -> dict[tuple[str, str], dict[str, Any]]:
    """What the status sync reads of a Pipeline (so a Deployment's event costs no GET).
    Async, so kopf runs it on its loop: a sync index function waits for a handler thread
    (behind the reconciles) and pays kopf's thread hop on every event."""
    lighten(body)
    return {(namespace, name): slim_pipeline(body)}


def slim_pipeline(body: Any) -> dict[str, Any]:
    """A Pipeline's identity and versions, whether (and how) it is deployed, its status."""
    meta, spec = body["metadata"], body.get("spec") or {}
    keep = ("name", "namespace", "uid", "generation", "resourceVersion")
    return {
        "apiVersion": body.get("apiVersion"),
        "kind": body.get("kind"),
        "metadata": {k: meta.get(k) for k in keep},
        "spec": {
            "deployed": spec.get("deployed"),
            "deployment": {"autoscaling": (spec.get("deployment") or {}).get("autoscaling")},
        },
        "status": dict(body.get("status") or {}),
    }


class Pipelines:
    """The Pipelines as the watch last saw them or as this process last wrote them,
    whichever is newer: the watch lags our own status writes by a moment, and a sync that
    read the older copy would skip a write it needs (nothing to change, it would think).

    Newer is the higher resourceVersion: etcd's revision, an integer on every apiserver
    (a version that is not one sends the caller to read the Pipeline itself). A copy that
    is stale anyway (another writer's lagging write) costs one 409 and a read: every
    status write has the copy's resourceVersion as its precondition.
    """

    def __init__(self) -> None:
        self.written: dict[tuple[str, str], dict[str, Any]] = {}

    def get(self, index: kopf.Index | None, namespace: str, name: str) -> dict[str, Any] | None:
        seen = next(iter(index.get((namespace, name), [])), None) if index is not None else None
        ours = self.written.get((namespace, name))
        if ours is None or seen is None:
            if seen is None:  # gone, or not seen yet: the caller reads it
                self.written.pop((namespace, name), None)
            return seen
        try:
            caught_up = _version(seen) >= _version(ours)
        except ValueError:
            return None
        if caught_up:
            self.written.pop((namespace, name), None)
            return seen
        return ours

    def wrote(self, pipeline: dict[str, Any] | None) -> None:
        if pipeline:
            meta = pipeline["metadata"]
            self.written[(meta["namespace"], meta["name"])] = slim_pipeline(pipeline)


def _version(pipeline: dict[str, Any]) -> int:
    return int(pipeline["metadata"]["resourceVersion"])


def listed(index: Any, namespace: str, pipeline: str) -> list[dict[str, Any]]:
    if index is None:
        return []
    return list(index.get((namespace, pipeline), []))
