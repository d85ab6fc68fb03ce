"""Each Publish's edge locations in its status, with their last inference-log upload.

Edges push their logs to the registry, not to the cluster, so the operator reads the
registry: every ``EDGEPIPE_OPERATOR_EDGE_POLL_SECONDS`` one background task lists the
Published Publishes that name edges and lists each edge's log tags (the tags alone say
when and how much; no blob is fetched). A status is written only when it changed.
(A background task, started and stopped by startup.py, not a kopf timer: timers put a
finalizer on every Publish.)
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf

from edgepipe import edgelog, oci
from edgepipe.resources import GROUP, VERSION, PublishSpec

from .kube import ApiError, Kube, Unreachable
from .registry import SecretProblem, publish_target
from .settings import OperatorSettings

log = logging.getLogger("edgepipe.operator")
UPLOAD_FIELDS = ("lastUpload", "lastUploadRecords", "uploadedSegments")


def merge_uploads(
    edges: list[dict[str, Any]], uploads: dict[str, dict[str, Any] | None]
) -> list[dict[str, Any]]:
    """The status's edges with each one's upload fields replaced by what was read."""
    out = []
    for edge in edges:
        entry = {k: v for k, v in edge.items() if k not in UPLOAD_FIELDS}
        entry.update(uploads.get(edge["name"]) or {})
        out.append(entry)
    return out


def read_uploads(target: oci.Target, pipeline: str, edges: list[str]) -> dict[str, Any]:
    client = target.client()
    return {
        e: edgelog.last_upload(client, edgelog.repository(target.prefix, pipeline, e))
        for e in edges
    }


def refresh(kube: Kube, obj: dict[str, Any]) -> bool:
    """Read one Publish's edges' uploads and write them when they changed; True if written."""
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    edges = status.get("edges") or []
    if status.get("phase") != "Published" or not edges:
        return False
    meta = obj["metadata"]
    registry = PublishSpec.model_validate(spec).registry
    target = publish_target(kube, registry, meta["namespace"])
    merged = merge_uploads(
        edges, read_uploads(target, spec["pipeline"], [e["name"] for e in edges])
    )
    if merged == edges:
        return False
    kube.patch_status(
        "publishes",
        meta["name"],
        meta["namespace"],
        {"edges": merged},
        resource_version=meta["resourceVersion"],  # a re-publish in between wins
    )
    return True


@kopf.index(GROUP, VERSION, "publishes")
def edge_publish_index(
    body: kopf.Body, namespace: str, name: str, spec: kopf.Spec, status: kopf.Status, **_: Any
) -> dict[tuple[str, str], dict[str, Any]] | None:
    """The Published Publishes that name edges, with what ``refresh`` reads of them: the
    poll lists nothing (a LIST of every Publish each interval cost the apiserver O(N))."""
    if status.get("phase") != "Published" or not status.get("edges"):
        return None
    meta = {
        "name": name,
        "namespace": namespace,
        "resourceVersion": body.metadata.get("resourceVersion"),
    }
    slim = {"metadata": meta, "spec": dict(spec), "status": {"phase": "Published"}}
    slim["status"]["edges"] = list(status.get("edges") or [])
    return {(namespace, name): slim}


def refresh_all(kube: Kube, publishes: list[dict[str, Any]]) -> None:
    for obj in publishes:
        name = f"{obj['metadata']['namespace']}/{obj['metadata']['name']}"
        try:
            refresh(kube, obj)
        except (oci.OciError, SecretProblem, ValueError) as exc:  # ValueError: a bad spec
            log.info("publish %s: cannot read its edges' log uploads: %s", name, exc)
        except ApiError as exc:
            if exc.status != 409:
                log.warning("publish %s: %s", name, exc)


async def poll(memo: kopf.Memo, index: kopf.Index) -> None:
    """Read the edges' uploads of every Publish in ``index`` (edge_publish_index: the
    watched namespaces' only) every ``edge_poll_seconds``, until cancelled."""
    settings: OperatorSettings = memo.settings
    kube, interval = memo.kube, settings.edge_poll_seconds
    while True:
        publishes = [obj for key in list(index) for obj in index.get(key, [])]
        try:
            await asyncio.to_thread(refresh_all, kube, publishes)
        except (ApiError, Unreachable) as exc:
            log.warning("reading Publishes for their edges: %s", exc)
        await asyncio.sleep(interval)
