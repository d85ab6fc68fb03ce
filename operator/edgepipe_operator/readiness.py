"""A Pipeline's phase, conditions and message, copied from its engine Deployment and pods.

Deployment and autoscaler changes, and pod changes with a problem to report, call
``sync_from_deployment`` (``sync_engine``, run by engine_events.py's dispatcher).
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

from . import cache, health
from .builders import (
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
    event's answer) save the first reads; ``pods`` (the pod store's) saves listing them.
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
    # How Events are posted: kopf's queue from a handler (None), or a direct call where
    # kopf's queue is out of reach (the dispatcher's threads): (object, type, reason, text).
    post: Callable[[dict[str, Any], str, str, str], None] | None = None


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
        _announce(pipeline, status, new, sync.post or kopf_post)
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


def kopf_post(obj: dict[str, Any], type: str, reason: str, message: str) -> None:
    """An Event through kopf's queue (from a handler: kopf's context is there)."""
    kopf.event(obj, type=type, reason=reason, message=message)


def _announce(
    pipeline: dict[str, Any],
    old: dict[str, Any],
    new: dict[str, Any],
    post: Callable[[dict[str, Any], str, str, str], None],
) -> None:
    """An event for each change a user would want to hear about."""
    phase, problem = new["phase"], new["message"]
    ready = f"{new['readyReplicas']}/{new['replicas']}"
    if phase == "Running" and old.get("phase") != "Running":
        post(pipeline, "Normal", "Running", f"{ready} engine replicas ready")
    elif phase != "Running" and old.get("phase") == "Running":
        why = problem or "waiting for engine replicas"
        post(pipeline, "Warning", "EngineNotReady", f"{ready} ready: {why}")
    elif problem and problem != old.get("message"):
        post(pipeline, "Warning", "EngineNotReady", problem)
    why = (new.get("autoscaling") or {}).get("reason")
    if why and why != (old.get("autoscaling") or {}).get("reason"):
        message = (new["autoscaling"].get("message") or "").strip()
        post(pipeline, "Warning", "AutoscalingInactive", f"{why}: {message}")


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


def sync_engine(memo: kopf.Memo, pipeline_index: kopf.Index | None) -> Callable[..., None]:
    """What the engine objects' dispatcher runs (engine_events.py) on a handler thread
    when a Pipeline's Deployment rolls, its autoscaler scales (or cannot), or one of its
    pods' containers waits, crashes, restarts or is running but unready: the Pipeline's
    status follows. A failure is posted as an Event on the object that changed."""

    def post(obj: dict[str, Any], type: str, reason: str, message: str) -> None:
        from .rollouts import Event, post_event  # imported when first needed, not at start

        post_event(memo.kube, obj, Event(type, reason, message))

    def run(key: tuple[str, str], work: Any) -> None:
        namespace, pipeline = key
        try:
            written = sync_from_deployment(
                Sync(
                    memo.kube,
                    pipeline,
                    namespace,
                    probe=memo.probe,
                    # The watch's copy, or ours when the watch has not seen our last write
                    # yet: a rolling update's many events cost no Pipeline GET.
                    pipeline=memo.pipelines.get(pipeline_index, namespace, pipeline),
                    deployment=work.deployment,
                    pods=cache.listed(memo.engine.pods, namespace, pipeline),
                    hpa=work.hpa,
                    post=post,
                )
            )
            memo.pipelines.wrote(written)
        except (ApiError, Unreachable, kopf.TemporaryError) as exc:
            post(work.subject, "Warning", "StatusSyncFailed", str(exc))

    return run
