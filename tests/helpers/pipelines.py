"""Pipeline objects on the test control plane: a manifest, its status, and waiting for a
phase."""

from __future__ import annotations

from tests.helpers.kube import Kubectl, wait_for

SHA = "5aa0186d1e6a373f4ea94afe91d26cc88c5e8e54bb61f5cb9005f283020ace1b"


def pipeline(
    name: str, *, deployed: bool = True, replicas: int = 1, steps=None, **deployment
) -> dict:
    return {
        "apiVersion": "edgepipe.io/v1alpha1",
        "kind": "Pipeline",
        "metadata": {"name": name},
        "spec": {
            "deployed": deployed,
            "steps": steps
            or [
                {
                    "model": {"name": "yolov8n", "path": "/models/yolov8n.onnx", "sha256": SHA},
                    "tensorFields": ["images"],
                }
            ],
            "deployment": {"replicas": replicas, **deployment},
        },
    }


def status(kubectl: Kubectl, name: str) -> dict:
    obj = kubectl.get("pipeline", name)
    return (obj or {}).get("status") or {}


def wait_phase(kubectl: Kubectl, name: str, phase: str, timeout: float = 60, **fields) -> dict:
    def check():
        st = status(kubectl, name)
        ok = st.get("phase") == phase and all(st.get(k) == v for k, v in fields.items())
        return st if ok else None

    return wait_for(f"pipeline {name} to be {phase} {fields}", check, timeout)
