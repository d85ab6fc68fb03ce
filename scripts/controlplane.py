"""Parts of scripts/testcluster: the fake node, the operator's own identity and audit
policy, and process helpers. A sibling module, loaded with scripts/ on sys.path."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import urllib.error
import urllib.request
from pathlib import Path

NODE_NAME = "kwok-node-0"
# The default room on the fake node: a kubelet's usual 110 pods.
DEFAULT_PODS = 110

# The controller-manager's and scheduler's client-side rate limits (20 and 50 requests per
# second by default) would make a test of 1,000 Pipelines a test of those limits; a large
# cluster raises them the same way.
CONTROLLER_QPS = ["--kube-api-qps=200", "--kube-api-burst=400"]

# The operator's user (a static token of its own, in system:masters like the admin), so the
# apiserver's audit log can tell its requests from everybody else's.
OPERATOR_USER = "edgepipe-operator"

# Only the operator's requests are audited, each once, when its answer is complete (watches
# when they end). Metadata level: verb, resource, name, user, status; no bodies.
AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived", "ResponseStarted"],
    "rules": [
        {"level": "Metadata", "users": [OPERATOR_USER]},
        {"level": "None"},
    ],
}


def node(pods: int = DEFAULT_PODS) -> dict:
    """The fake node; ``pods`` sets its room (CPU and memory grow with it)."""
    resources = {
        "cpu": str(max(32, pods)),
        "memory": f"{max(256, pods * 2)}Gi",
        "pods": str(pods),
        "nvidia.com/gpu": "4",
    }
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": NODE_NAME,
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                "kubernetes.io/hostname": NODE_NAME,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "type": "kwok",
            },
        },
        "status": {"allocatable": resources, "capacity": resources},
    }


def kubeconfig(path: Path, server: str, user: str, token: str) -> Path:
    # The apiserver made its own self-signed serving cert in --cert-dir. Tests talk to it
    # only over loopback, so the client skips verifying it rather than shipping a CA.
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "edgepipe-test",
                "cluster": {"server": server, "insecure-skip-tls-verify": True},
            }
        ],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [
            {
                "name": "edgepipe-test",
                "context": {"cluster": "edgepipe-test", "user": user, "namespace": "default"},
            }
        ],
        "current-context": "edgepipe-test",
    }
    path.write_text(json.dumps(config, indent=2))
    path.chmod(0o600)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=3) as resp:
            return resp.status == 200
    except urllib.error.URLError:
        return False


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie of ours counts as gone.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def kill_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
