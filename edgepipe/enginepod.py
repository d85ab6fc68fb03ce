"""The engine pod's defaults, defined once for the operator's builders and the edge chart.

The engine Deployment the operator writes and the one the generated edge chart renders
are the same container: one port, one cache path, the same probes and security context.
Both read them from here, so the two cannot drift apart.
"""

from __future__ import annotations

import math
from typing import Any

# The engine image a Pipeline or a Publish uses when it names none.
ENGINE_IMAGE = "edgepipe-engine:0.1.0"
# The engine's HTTP port, in the container, the Service and the docker run line.
ENGINE_PORT = 8080
# Its OIP v2 gRPC port, beside HTTP in the same places.
GRPC_PORT = 8081
# Where models pulled from a registry are cached inside the container (a writable volume,
# since the root filesystem is read-only).
CACHE_DIR = "/var/cache/edgepipe"
# The inference log's disk cap at the edge (LOCAL_INFERENCE_STORAGE), as the tutorial names it.
LOCAL_INFERENCE_STORAGE = "1Gi"
# On SIGTERM the engine fails readiness and keeps serving this long, so that Services stop
# sending it traffic before it stops listening; then it finishes what is in flight.
DRAIN_SECONDS = 5
# Where the Secret with the engine's API tokens is mounted: a file (not an env var), so
# that a rotated Secret reaches a running engine (EDGEPIPE_ENGINE_API_TOKEN_FILE).
TOKEN_DIR = "/var/run/secrets/edgepipe/api-token"
# Time the pod gets from SIGTERM to SIGKILL: the drain, then in-flight requests.
TERMINATION_GRACE_SECONDS = 30


def config_cpus(cpus: float | str) -> int:
    """onnxruntime threads (``CONFIG_CPUS``) for a CPU budget: whole cores, at least one."""
    return max(1, math.ceil(float(cpus)))


def cpu_quantity(cpus: float) -> str:
    """A CPU count as a Kubernetes quantity: ``2`` or ``500m``."""
    millis = round(cpus * 1000)
    return str(millis // 1000) if millis % 1000 == 0 else f"{millis}m"


def probes() -> dict[str, dict[str, Any]]:
    """Readiness, liveness and start-up probes on the engine's health endpoints."""
    return {
        "readinessProbe": {
            "httpGet": {"path": "/health/ready", "port": "http"},
            "periodSeconds": 5,
        },
        "livenessProbe": {"httpGet": {"path": "/health/live", "port": "http"}, "periodSeconds": 10},
        # Loading (or pulling) models can take a while: give start-up its own budget.
        "startupProbe": {
            "httpGet": {"path": "/health/live", "port": "http"},
            "periodSeconds": 2,
            "failureThreshold": 150,
        },
    }


def container_security_context() -> dict[str, Any]:
    """Least privilege: no escalation, a read-only root, no capabilities, not root, the
    runtime's default seccomp filter: all that Pod Security "restricted" asks of a pod."""
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def rollout() -> dict[str, Any]:
    """A rolling update that adds a new engine before it takes an old one away, so the
    wanted number of ready engines is always serving during a change."""
    return {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}


def container_ports() -> list[dict[str, Any]]:
    """The engine container's named ports: REST and gRPC."""
    return [
        {"name": "http", "containerPort": ENGINE_PORT, "protocol": "TCP"},
        {"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"},
    ]


def service_ports(http_port: int = ENGINE_PORT, grpc_port: int = GRPC_PORT) -> list[dict[str, Any]]:
    """The engine Service's ports. ``appProtocol`` tells meshes and ingresses that the
    gRPC port speaks HTTP/2 in the clear."""
    return [
        {"name": "http", "port": http_port, "targetPort": "http", "protocol": "TCP"},
        {
            "name": "grpc",
            "port": grpc_port,
            "targetPort": "grpc",
            "protocol": "TCP",
            "appProtocol": "kubernetes.io/h2c",
        },
    ]


def engine_env(cpus: float | str) -> list[dict[str, str]]:
    """The env every engine container gets, in the cluster and from the edge chart."""
    return [
        {"name": "CONFIG_CPUS", "value": str(config_cpus(cpus))},
        {"name": "EDGEPIPE_ENGINE_PORT", "value": str(ENGINE_PORT)},
        {"name": "EDGEPIPE_ENGINE_GRPC_PORT", "value": str(GRPC_PORT)},
        {"name": "EDGEPIPE_ENGINE_CACHE_DIR", "value": CACHE_DIR},
        {"name": "EDGEPIPE_ENGINE_DRAIN_SECONDS", "value": str(DRAIN_SECONDS)},
    ]


def token_from_secret(secret: str, key: str) -> tuple[list[dict], list[dict], list[dict]]:
    """(env, volumes, volume mounts) that hand the engine its API tokens from ``key`` of
    Secret ``secret``, as a file it re-reads when the Secret changes."""
    env = [{"name": "EDGEPIPE_ENGINE_API_TOKEN_FILE", "value": f"{TOKEN_DIR}/token"}]
    volume = {
        "name": "api-token",
        "secret": {"secretName": secret, "items": [{"key": key, "path": "token"}]},
    }
    mount = {"name": "api-token", "mountPath": TOKEN_DIR, "readOnly": True}
    return env, [volume], [mount]
