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
from edgepipe.resources import PublishSpec

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


def refresh_all(kube: Kube, namespace: str | None) -> None:
    for obj in kube.list_custom("publishes", namespace):
        name = f"{obj['metadata']['namespace']}/{obj['metadata']['name']}"
        try:
            refresh(kube, obj)
        except (oci.OciError, SecretProblem, ValueError) as exc:  # ValueError: a bad spec
            log.info("publish %s: cannot read its edges' log uploads: %s", name, exc)
        except ApiError as exc:
            if exc.status != 409:
                log.warning("publish %s: %s", name, exc)


async def poll(memo: kopf.Memo) -> None:
    """Read every Publish's edges' uploads every ``edge_poll_seconds``, until cancelled."""
    settings: OperatorSettings = memo.settings
    kube, interval = memo.kube, settings.edge_poll_seconds
    namespaces = memo.get("watch_namespaces") or settings.namespaces or [None]
    while True:
        for namespace in namespaces:  # None: the whole cluster
            try:
                await asyncio.to_thread(refresh_all, kube, namespace)
            except (ApiError, Unreachable) as exc:
                log.warning("reading Publishes for their edges: %s", exc)
        await asyncio.sleep(interval)
