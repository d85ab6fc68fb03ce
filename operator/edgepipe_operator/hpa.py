"""The engine's HorizontalPodAutoscaler: pure functions from a Pipeline's autoscaling spec to
the HPA the operator applies, and from the HPA back to the Pipeline's status.

While an HPA owns the Deployment's replicas, the operator's server-side apply leaves
``spec.replicas`` out. The hand-over follows the Kubernetes docs ("transferring ownership"):
a second field manager applies the replicas alone, so that when the operator's own apply
stops naming them they keep their value (a field nobody owns would be reset to 1); the
HPA's first scale then takes them from that manager.
"""

from __future__ import annotations

from typing import Any

from edgepipe.resources import Autoscaling

from .builders import engine_name, labels
from .kube import FIELD_MANAGER

# Owns the replicas between the operator letting go of them and the HPA's first scale.
HANDOVER_MANAGER = "edgepipe-autoscaling-handover"
# The engine's gauge that the inflight metric reads (prometheus-adapter serves it per pod).
INFLIGHT_METRIC = "edgepipe_inflight_requests"
# The HPA's conditions that say it cannot scale, in the order a user should read them.
BLOCKING = ("ScalingActive", "AbleToScale")
CONDITION = "Autoscaling"


def quantity(value: float) -> str:
    """A Kubernetes quantity: whole numbers as they are, else milli-units (1.5 -> 1500m)."""
    return str(int(value)) if value == int(value) else f"{round(value * 1000)}m"


def metric_spec(auto: Autoscaling) -> dict[str, Any]:
    if auto.metric == "cpu":
        target = {"type": "Utilization", "averageUtilization": int(auto.target)}
        return {"type": "Resource", "resource": {"name": "cpu", "target": target}}
    return {
        "type": "Pods",
        "pods": {
            "metric": {"name": INFLIGHT_METRIC},
            "target": {"type": "AverageValue", "averageValue": quantity(auto.target)},
        },
    }


def build_hpa(
    pipeline: str, namespace: str, version: str | None, auto: Autoscaling
) -> dict[str, Any]:
    """The autoscaling/v2 HPA that scales the pipeline's engine Deployment."""
    spec: dict[str, Any] = {
        "scaleTargetRef": {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": engine_name(pipeline),
        },
        "minReplicas": auto.min_replicas,
        "maxReplicas": auto.max_replicas,
        "metrics": [metric_spec(auto)],
    }
    if auto.behavior:
        spec["behavior"] = auto.behavior
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {
            "name": engine_name(pipeline),
            "namespace": namespace,
            "labels": labels(pipeline, version),
        },
        "spec": spec,
    }


def build_replicas_handover(pipeline: str, namespace: str, replicas: int) -> dict[str, Any]:
    """The Deployment's replicas alone, applied by HANDOVER_MANAGER."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": engine_name(pipeline), "namespace": namespace},
        "spec": {"replicas": replicas},
    }


def operator_owns_replicas(deployment: dict[str, Any] | None) -> bool:
    """Whether the operator's apply owns the Deployment's spec.replicas (so leaving them out
    of its next apply would reset them, unless another manager holds them first)."""
    for entry in (deployment or {}).get("metadata", {}).get("managedFields") or []:
        if entry.get("manager") == FIELD_MANAGER and entry.get("operation") == "Apply":
            spec = (entry.get("fieldsV1") or {}).get("f:spec") or {}
            if "f:replicas" in spec:
                return True
    return False


def handover_replicas(deployment: dict[str, Any] | None, auto: Autoscaling) -> int | None:
    """The replicas HANDOVER_MANAGER should hold before the operator lets go of them: the
    Deployment's own, within min and max (None: nothing to hand over)."""
    if deployment is None:
        return auto.min_replicas if auto.min_replicas > 1 else None
    if not operator_owns_replicas(deployment):
        return None
    now = (deployment.get("spec") or {}).get("replicas", 1)
    return min(max(now, auto.min_replicas), auto.max_replicas)


def _current_value(hpa: dict[str, Any]) -> str | None:
    for metric in (hpa.get("status") or {}).get("currentMetrics") or []:
        if metric.get("type") == "Resource":
            current = (metric.get("resource") or {}).get("current") or {}
            if current.get("averageUtilization") is not None:
                return f"{current['averageUtilization']}%"
        if metric.get("type") == "Pods":
            current = (metric.get("pods") or {}).get("current") or {}
            if current.get("averageValue") is not None:
                return f"{current['averageValue']} in flight"
    return None


def hpa_status(hpa: dict[str, Any] | None) -> dict[str, Any]:
    """status.autoscaling: replicas now and wanted, the metric's value, and the reason of
    the first of ScalingActive / AbleToScale that is False (the HPA's own words)."""
    if hpa is None:
        return {"reason": "NoAutoscaler", "message": "the HorizontalPodAutoscaler is not there yet"}
    st = hpa.get("status") or {}
    out: dict[str, Any] = {
        "currentReplicas": st.get("currentReplicas"),
        "desiredReplicas": st.get("desiredReplicas"),
        "current": _current_value(hpa),
        "reason": None,
        "message": None,
    }
    conditions = {c.get("type"): c for c in st.get("conditions") or []}
    for kind in BLOCKING:
        cond = conditions.get(kind)
        if cond and cond.get("status") == "False":
            out["reason"], out["message"] = cond.get("reason"), cond.get("message")
            break
    else:
        if not conditions:
            out["reason"], out["message"] = "Waiting", "the autoscaler has not reported yet"
    return out


def autoscaling_condition(auto_status: dict[str, Any]) -> tuple[bool, str, str]:
    """(status, reason, message) of the Pipeline's Autoscaling condition."""
    if auto_status.get("reason"):
        return False, auto_status["reason"], auto_status.get("message") or ""
    return (
        True,
        "ScalingActive",
        f"{auto_status.get('currentReplicas')} current, "
        f"{auto_status.get('desiredReplicas')} desired",
    )
