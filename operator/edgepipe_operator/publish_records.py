"""A Pipeline's list of its Publishes (``status.publishes``): an entry is written when a
Publish is reconciled, removed when the Publish is deleted, and an entry whose Publish is
gone (deleted while the operator was down) is dropped when the Pipeline is reconciled.

Deletion is seen as a watch event, not through a finalizer: a finalizer on every Publish
would block ``kubectl delete publish`` whenever the operator is not running.
"""

from __future__ import annotations

import contextlib
from typing import Any

import kopf

from edgepipe.resources import GROUP, VERSION

from .kube import ApiError, Kube, Unreachable


@kopf.index(GROUP, VERSION, "publishes")
async def publish_index(namespace: str, name: str, spec: kopf.Spec, **_: Any) -> dict:
    """The Publishes of each pipeline, by (namespace, pipeline), as the watch last saw them.
    (async: kopf runs a sync index function on a handler thread, behind the reconciles.)"""
    return {(namespace, spec.get("pipeline")): name}


def _write(kube: Kube, pipeline: str, namespace: str, publishes: list[dict[str, Any]]) -> None:
    kube.patch_status(
        "pipelines",
        pipeline,
        namespace,
        {
            "publishes": publishes,
            "published": any(p.get("phase") == "Published" for p in publishes),
        },
    )


def _entries(kube: Kube, pipeline: str, namespace: str) -> list[dict[str, Any]] | None:
    obj = kube.get_custom("pipelines", pipeline, namespace)
    return None if obj is None else list((obj.get("status") or {}).get("publishes") or [])


def record_on_pipeline(kube: Kube, pipeline: str, namespace: str, entry: dict[str, Any]) -> None:
    """List this publish in the Pipeline's status (replacing an older entry of its name)."""
    entries = _entries(kube, pipeline, namespace)
    if entries is None:
        return
    _write(
        kube, pipeline, namespace, [*(p for p in entries if p.get("name") != entry["name"]), entry]
    )


def remove_from_pipeline(kube: Kube, pipeline: str, namespace: str, name: str) -> None:
    """Take a deleted Publish off its Pipeline's list."""
    entries = _entries(kube, pipeline, namespace)
    if entries is not None and any(p.get("name") == name for p in entries):
        _write(kube, pipeline, namespace, [p for p in entries if p.get("name") != name])


def drop_gone_publishes(
    kube: Kube, pipeline: str, namespace: str, status: dict, index: kopf.Index | None
) -> None:
    """Drop the entries of Publishes that no longer exist. The index answers for the
    Publishes the watch has seen; one missing from it is asked for (it may be that new)."""
    entries = list(status.get("publishes") or [])
    if not entries:
        return
    known = set(index.get((namespace, pipeline), [])) if index is not None else set()
    gone = {
        p.get("name")
        for p in entries
        if p.get("name") not in known
        and kube.get_custom("publishes", p.get("name"), namespace) is None
    }
    if gone:
        _write(kube, pipeline, namespace, [p for p in entries if p.get("name") not in gone])


def _deleted(type: str, **_: Any) -> bool:
    return type == "DELETED"


# Only deletions take a handler thread (the filter runs on kopf's loop).
@kopf.on.event(GROUP, VERSION, "publishes", when=_deleted)
def forget_deleted_publish(
    event: dict[str, Any], spec: kopf.Spec, name: str, namespace: str, memo: kopf.Memo, **_: Any
) -> None:
    if event.get("type") != "DELETED" or not spec.get("pipeline"):
        return
    # The Publish is gone either way; a failed write is mended by the Pipeline's next reconcile.
    with contextlib.suppress(ApiError, Unreachable):
        remove_from_pipeline(memo.kube, spec["pipeline"], namespace, name)
