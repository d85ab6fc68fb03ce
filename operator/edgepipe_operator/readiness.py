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
from typing import Any

import kopf
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError as Urllib3Error

from edgepipe.enginepod import ENGINE_PORT
from edgepipe.timestamps import now

from . import cache, health
from .builders import (
    PIPELINE_LABEL,
    deployment_conditions,
    deployment_phase,
    engine_name,
    merge_conditions,
    selector_labels,
)
from .kube import Kube


def sync_from_deployment(
    kube: Kube,
    name: str,
    namespace: str,
    extra: dict[str, Any] | None = None,
    attempts: int = 5,
    probe=None,
    deployment: dict[str, Any] | None = None,
    pods: list[dict[str, Any]] | None = None,
    pipeline: dict[str, Any] | None = None,
) -> dict[str, Any] | None:
    """Copy a deployed pipeline's readiness from its Deployment; the Pipeline as written
    (None when nothing was).

    Two writers meet here: the reconciler (after applying, with ``extra`` fields, then once
    more without) and the Deployment watch, which waits until the status is this spec's.
    Each reads the Pipeline, then the Deployment, then writes only if the Pipeline is
    unchanged since it read it (resourceVersion precondition), else starts over. So the
    last successful write always saw a Deployment at least as new as any write before it,
    and no race leaves a stale phase behind, nor a phase without its version.

    ``pipeline`` and ``deployment`` (the handler's body, an apply's or a watch event's
    answer) save the first reads; ``pods`` (the pod index's) saves listing them. Nothing is
    written when nothing would change.
    """
    for _ in range(attempts):
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
        phase, fields = deployment_phase(deployment)
        problem = None
        if phase != "Running":
            if pods is None:
                pods = kube.list_pods(namespace, selector_labels(name))
            problem = health.pods_problem(pods, probe=probe)
        fields["message"] = problem
        generation = (extra or {}).get("observedGeneration", status.get("observedGeneration"))
        conditions = merge_conditions(
            status.get("conditions"),
            deployment_conditions(deployment, phase, now(), generation, problem),
        )
        changed = (
            any(status.get(k) != v for k, v in (extra or {}).items())
            or status.get("phase") != phase
            or any(status.get(k) != v for k, v in fields.items())
            or [(c["type"], c["status"]) for c in conditions]
            != [(c.get("type"), c.get("status")) for c in status.get("conditions") or []]
        )
        if not changed:
            return None
        new = {**(extra or {}), "phase": phase, **fields, "conditions": conditions}
        try:
            written = kube.patch_status(
                "pipelines",
                name,
                namespace,
                new,
                resource_version=pipeline["metadata"]["resourceVersion"],
            )
        except ApiException as exc:
            if exc.status == 409:
                deployment = pods = pipeline = None  # someone wrote in between: read again
                continue
            raise
        ready = f"{fields['readyReplicas']}/{fields['replicas']}"
        if phase == "Running" and status.get("phase") != "Running":
            kopf.info(pipeline, reason="Running", message=f"{ready} engine replicas ready")
        elif phase != "Running" and status.get("phase") == "Running":
            why = problem or "waiting for engine replicas"
            kopf.warn(pipeline, reason="EngineNotReady", message=f"{ready} ready: {why}")
        elif problem and problem != status.get("message"):
            kopf.warn(pipeline, reason="EngineNotReady", message=problem)
        return written
    raise kopf.TemporaryError("the Pipeline's status kept changing while being written", delay=2)


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


@kopf.on.event("apps", "v1", "deployments", labels=cache.ENGINE_OBJECTS)
@kopf.on.event("", "v1", "pods", labels=cache.ENGINE_OBJECTS)
def engine_changed(
    type: str,
    body: kopf.Body,
    namespace: str,
    labels: kopf.Labels,
    memo: kopf.Memo,
    pod_index: kopf.Index,
    **_: Any,
) -> None:
    """A Deployment rolls, or a pod's container waits, crashes, restarts or is running but
    unready: the Pipeline's status follows. (A pod that starts or becomes ready changes its
    Deployment's status too; that event carries the news.)"""
    if type == "DELETED":
        return  # an undeploy, a delete or a replaced pod; other events carry the news
    pipeline = labels[PIPELINE_LABEL]
    deployment = None
    if body.get("kind") == "Deployment":
        deployment = dict(body)
    elif not (health.pod_problem(dict(body)) or health.unready_running_pods([dict(body)])):
        return
    try:
        sync_from_deployment(
            memo.kube,
            pipeline,
            namespace,
            probe=memo.probe,
            deployment=deployment,
            pods=cache.listed(pod_index, namespace, pipeline),
        )
    except (ApiException, Urllib3Error, kopf.TemporaryError) as exc:
        kopf.warn(body, reason="StatusSyncFailed", message=str(exc))
