"""Publish objects on the test control plane: the add1 model in a registry, a Publish of
the pipeline "adder", its status, and waiting for its phase."""

from __future__ import annotations

from edgepipe import oci
from tests.helpers.kube import wait_for


def push_add1(reg, models_dir) -> oci.PushedModel:
    client = oci.Client(reg.host, oci.Credentials(reg.username, reg.password), plain_http=True)
    return oci.push_model(
        client, models_dir / "add1.onnx", name="add1", repository="edge/models/add1"
    )


def apply_publish(kubectl, reg, name: str, **spec) -> None:
    """A Publish of the pipeline "adder" to ``reg`` with the "registry-creds" Secret."""
    kubectl.apply(
        {
            "apiVersion": "edgepipe.io/v1alpha1",
            "kind": "Publish",
            "metadata": {"name": name},
            "spec": {
                "pipeline": "adder",
                "registry": {
                    "url": f"{reg.host}/edge",
                    # No plainHttp: the registry is on loopback, which speaks plain HTTP
                    # unless the Publish says otherwise (as the CLI assumes).
                    "secretRef": {"name": "registry-creds"},
                },
                **spec,
            },
        }
    )


def publish_status(kubectl, name: str = "pub") -> dict:
    return (kubectl.get("publish", name) or {}).get("status") or {}


def wait_publish(kubectl, phase: str, name: str = "pub", timeout: float = 90) -> dict:
    return wait_for(
        f"publish {name} to be {phase}",
        lambda: (s := publish_status(kubectl, name)).get("phase") == phase and s,
        timeout,
    )
