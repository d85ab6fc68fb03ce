"""Why an engine is not ready, read from its pods: pure functions over pod objects.

A Pipeline that is not Running says why: the container's waiting reason
(ImagePullBackOff, CrashLoopBackOff, CreateContainerConfigError, ...), the reason of its
last termination (OOMKilled, Error), a pod the scheduler could not place, or, for a
running container that is not ready, the engine's own ``/health/ready`` answer.
"""

from __future__ import annotations

from typing import Any

# Waiting reasons that are the normal course of a start, not a problem to report.
STARTING = {"ContainerCreating", "PodInitializing"}


def pod_problem(pod: dict[str, Any]) -> str | None:
    """One line on what keeps this pod's engine from serving, or None if nothing does."""
    meta = pod.get("metadata") or {}
    if meta.get("deletionTimestamp"):
        return None  # on its way out during a rollout: not the new version's problem
    status = pod.get("status") or {}
    for cond in status.get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
            return f"pod {meta.get('name')} cannot be scheduled: {cond.get('message', '')}".strip()
    for cs in status.get("containerStatuses") or []:
        state = cs.get("state") or {}
        last = (cs.get("lastState") or {}).get("terminated") or {}
        waiting = state.get("waiting") or {}
        if waiting and waiting.get("reason") not in STARTING:
            line = f"container {cs.get('name')}: {waiting.get('reason')}"
            if last.get("reason"):
                line += f" (last exit: {last['reason']}, code {last.get('exitCode')})"
            if waiting.get("message"):
                line += f": {waiting['message']}"
            return line
        terminated = state.get("terminated") or {}
        if terminated:
            return (
                f"container {cs.get('name')}: terminated ({terminated.get('reason')}, "
                f"code {terminated.get('exitCode')})"
            )
        if "running" in state and not cs.get("ready") and last.get("reason"):
            return f"container {cs.get('name')}: restarted after {last['reason']}"
    return None


def unready_running_pods(pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Pods whose engine runs but is not ready: its ``/health/ready`` says why."""
    out = []
    for pod in pods:
        status = pod.get("status") or {}
        if (pod.get("metadata") or {}).get("deletionTimestamp") or not status.get("podIP"):
            continue
        for cs in status.get("containerStatuses") or []:
            if "running" in (cs.get("state") or {}) and not cs.get("ready"):
                out.append(pod)
                break
    return out


def ready_reason(body: dict[str, Any]) -> str | None:
    """The reason in an engine's ``/health/ready`` 503 answer."""
    if body.get("status") == "ready":
        return None
    errors = body.get("errors") or {}
    if errors:
        return "; ".join(f"pipeline {k}: {v}" for k, v in errors.items())
    return body.get("reason") or body.get("status")


def pods_problem(pods: list[dict[str, Any]], probe=None) -> str | None:
    """The first problem among a pipeline's pods; ``probe(pod)`` asks a running but
    unready engine for its ``/health/ready`` reason (None when it cannot tell)."""
    for pod in pods:
        problem = pod_problem(pod)
        if problem:
            return problem
    if probe is not None:
        for pod in unready_running_pods(pods):
            reason = probe(pod)
            if reason:
                return f"engine {pod['metadata']['name']} not ready: {reason}"
    return None
