"""A Pipeline's phase, conditions and message, copied from its engine Deployment and pods.

Deployment events and pod events with a problem to report call ``sync_from_deployment``.
(No kopf timer: timers make kopf put a finalizer on every Pipeline, and then a Pipeline
could not be deleted while the operator is down. A restarted operator re-reads every
Deployment on resume instead.)
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import kopf

from edgepipe.enginepod import ENGINE_PORT
from edgepipe.timestamps import now

from . import cache, health, slim
from .builders import (
    PIPELINE_LABEL,
    condition,
    deployment_conditions,
    deployment_phase,
    engine_name,
    merge_conditions,
    selector_labels,
)
from .hpa import CONDITION, autoscaling_condition, hpa_status
from .kube import ApiError, Kube, Unreachable


@dataclass(frozen=True)
class Sync:
    """One copy of a Pipeline's readiness: whose, and what the caller already holds.

    ``extra`` is the reconciler's own fields (the version, the URL), written with the
    phase. ``pipeline`` and ``deployment`` (the handler's body, an apply's or a watch
    event's answer) save the first reads; ``pods`` (the pod index's) saves listing them.
    """

    kube: Kube
    name: str
    namespace: str
    probe: Callable[[dict[str, Any]], str | None] | None = None
    extra: dict[str, Any] | None = None
    pipeline: dict[str, Any] | None = None
    deployment: dict[str, Any] | None = None
    pods: list[dict[str, Any]] | None = None
    hpa: dict[str, Any] | None = None  # an HPA watch event's body
    attempts: int = 5


def sync_from_deployment(sync: Sync) -> dict[str, Any] | None:
    """Copy a deployed pipeline's readiness from its Deployment; the Pipeline as written
    (None when nothing was).

    Two writers meet here: the reconciler (after applying, with ``extra`` fields, then once
    more without) and the Deployment watch, which waits until the status is this spec's.
    Each reads the Pipeline, then the Deployment, then writes only if the Pipeline is
    unchanged since it read it (resourceVersion precondition), else starts over. So the
    last successful write always saw a Deployment at least as new as any write before it,
    and no race leaves a stale phase behind, nor a phase without its version. Nothing is
    written when nothing would change.
    """
    kube, name, namespace, extra = sync.kube, sync.name, sync.namespace, sync.extra
    pipeline, deployment, pods, hpa = sync.pipeline, sync.deployment, sync.pods, sync.hpa
    for _ in range(sync.attempts):
        if pipeline is None:
            pipeline = kube.get_custom("pipelines", name, namespace)
        if not pipeline or not (pipeline.get("spec") or {}).get("deployed"):
            return None
        status = pipeline.get("status") or {}
        current = status.get("observedGeneration") == pipeline["metadata"].get("generation")
        if extra is None and (not current or status.get("phase") in ("Error", "Pending")):
            # Either the reconciler has not written this spec's status yet (it reads the
            # Deployment again after its own write, so nothing is missed), or this very
            # spec cannot be deployed and its message stays.
            return None
        if deployment is None:
            deployment = kube.read_deployment(engine_name(name), namespace)
        autoscaled = bool(((pipeline.get("spec") or {}).get("deployment") or {}).get("autoscaling"))
        phase, fields = deployment_phase(deployment, autoscaled)
        problem = None
        if phase != "Running":
            if pods is None:
                pods = kube.list_pods(namespace, selector_labels(name))
            problem = health.pods_problem(pods, probe=sync.probe)
        fields["message"] = problem
        if autoscaled:
            if hpa is None:
                hpa = kube.read_hpa(engine_name(name), namespace)
            fields["autoscaling"] = hpa_status(hpa)
        else:
            fields["autoscaling"] = None
        new = _new_status(status, extra or {}, deployment, phase, fields)
        if not _changed(status, extra or {}, new):
            return None
        try:
            written = kube.patch_status(
                "pipelines",
                name,
                namespace,
                new,
                resource_version=pipeline["metadata"]["resourceVersion"],
            )
        except ApiError as exc:
            if exc.status == 409:
                deployment = pods = pipeline = hpa = None  # someone wrote between: read again
                continue
            raise
        _announce(pipeline, status, new)
        return written
    raise kopf.TemporaryError("the Pipeline's status kept changing while being written", delay=2)


def _new_status(
    status: dict[str, Any],
    extra: dict[str, Any],
    deployment: dict[str, Any],
    phase: str,
    fields: dict[str, Any],
) -> dict[str, Any]:
    """The status fields to write: ``extra``, the phase, the replicas and message, and
    the conditions merged into the old ones."""
    generation = extra.get("observedGeneration", status.get("observedGeneration"))
    t = now()
    ours = deployment_conditions(deployment, phase, t, generation, fields["message"])
    if fields["autoscaling"]:
        ours.append(
            condition(CONDITION, *autoscaling_condition(fields["autoscaling"]), t, generation)
        )
    conditions = merge_conditions(status.get("conditions"), ours)
    if not fields["autoscaling"]:  # autoscaling removed: its condition goes too
        conditions = [c for c in conditions if c["type"] != CONDITION]
    return {**extra, "phase": phase, **fields, "conditions": conditions}


def _changed(status: dict[str, Any], extra: dict[str, Any], new: dict[str, Any]) -> bool:
    """Whether writing ``new`` changes anything but the conditions' time stamps (or the
    caller's ``extra`` fields differ from the status, before the Deployment's override
    them)."""
    fields = [*extra.items(), *((k, v) for k, v in new.items() if k != "conditions")]
    return any(_stored(status.get(k)) != _stored(v) for k, v in fields) or [
        (c["type"], c["status"]) for c in new["conditions"]
    ] != [(c.get("type"), c.get("status")) for c in status.get("conditions") or []]


def _stored(value: Any) -> Any:
    """A value as the merge patch leaves it stored: a mapping without its None fields."""
    if isinstance(value, dict):
        return {k: v for k, v in value.items() if v is not None}
    return value


def _announce(pipeline: dict[str, Any], old: dict[str, Any], new: dict[str, Any]) -> None:
    """An event for each change a user would want to hear about."""
    phase, problem = new["phase"], new["message"]
    ready = f"{new['readyReplicas']}/{new['replicas']}"
    if phase == "Running" and old.get("phase") != "Running":
        kopf.info(pipeline, reason="Running", message=f"{ready} engine replicas ready")
    elif phase != "Running" and old.get("phase") == "Running":
        why = problem or "waiting for engine replicas"
        kopf.warn(pipeline, reason="EngineNotReady", message=f"{ready} ready: {why}")
    elif problem and problem != old.get("message"):
        kopf.warn(pipeline, reason="EngineNotReady", message=problem)
    why = (new.get("autoscaling") or {}).get("reason")
    if why and why != (old.get("autoscaling") or {}).get("reason"):
        message = (new["autoscaling"].get("message") or "").strip()
        kopf.warn(pipeline, reason="AutoscalingInactive", message=f"{why}: {message}")


def probe_ready(pod: dict[str, Any]) -> str | None:
    """Ask a running but unready engine why: its ``/health/ready`` answer (1 s at most)."""
    ip = (pod.get("status") or {}).get("podIP")
    try:
        with urllib.request.urlopen(f"http://{ip}:{ENGINE_PORT}/health/ready", timeout=1) as r:
            return health.ready_reason(json.loads(r.read()))
    except urllib.error.HTTPError as exc:
        try:
            return health.ready_reason(json.loads(exc.read()))
        except ValueError:
            return f"/health/ready answered {exc.code}"
    except (OSError, ValueError):
        return None  # not reachable from here (a fake node, another network)


def has_news(type: str, body: kopf.Body, **_: Any) -> bool:
    """Whether an engine object's event is worth a handler thread, decided on kopf's loop:
    not a deletion, not an event a newer one of the same object has overtaken, and for a
    pod, a problem to report. (Behind the reconciles, a waiting event holds its object's
    worker and every event queued behind it: under load, thousands of them.)"""
    if type == "DELETED" or slim.ARRIVALS.superseded(body):
        return False
    if body.get("kind") == "Pod":
        return bool(health.pod_problem(dict(body)) or health.unready_running_pods([dict(body)]))
    return True


@kopf.on.event("apps", "v1", "deployments", labels=cache.ENGINE_OBJECTS, when=has_news)
@kopf.on.event(
    "autoscaling", "v2", "horizontalpodautoscalers", labels=cache.ENGINE_OBJECTS, when=has_news
)
@kopf.on.event("", "v1", "pods", labels=cache.ENGINE_OBJECTS, when=has_news)
def engine_changed(
    type: str,
    body: kopf.Body,
    namespace: str,
    labels: kopf.Labels,
    memo: kopf.Memo,
    pod_index: kopf.Index,
    pipeline_index: kopf.Index,
    **_: Any,
) -> None:
    """A Deployment rolls, or a pod's container waits, crashes, restarts or is running but
    unready: the Pipeline's status follows. (A pod that starts or becomes ready changes its
    Deployment's status too; that event carries the news.)"""
    if type == "DELETED":
        return  # an undeploy, a delete or a replaced pod; other events carry the news
    pipeline = labels[PIPELINE_LABEL]
    deployment = hpa = None
    if body.get("kind") == "Deployment":
        deployment = dict(body)
    elif body.get("kind") == "HorizontalPodAutoscaler":
        hpa = dict(body)  # it scaled, or cannot (its conditions)
    elif not (health.pod_problem(dict(body)) or health.unready_running_pods([dict(body)])):
        return
    try:
        written = sync_from_deployment(
            Sync(
                memo.kube,
                pipeline,
                namespace,
                probe=memo.probe,
                # The watch's copy, or ours when the watch has not seen our last write yet:
                # a rolling update's many events cost no Pipeline GET.
                pipeline=memo.pipelines.get(pipeline_index, namespace, pipeline),
                deployment=deployment,
                pods=cache.listed(pod_index, namespace, pipeline),
                hpa=hpa,
            )
        )
        memo.pipelines.wrote(written)
    except (ApiError, Unreachable, kopf.TemporaryError) as exc:
        kopf.warn(body, reason="StatusSyncFailed", message=str(exc))
