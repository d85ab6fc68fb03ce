"""Access control with real pods: the operator installed by its chart with
watchNamespaces [team-a] (Roles only), a namespace enforcing Pod Security "restricted"
running a Pipeline's engine on the kubelet + containerd node, the engine asking for the
token its Pipeline names, and team-b out of the operator's reach."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import numpy as np
import pytest

from tests.helpers import realnode_steps as rn
from tests.helpers.kube import Kubectl, wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.realnode]
SA = f"--as=system:serviceaccount:{rn.OPERATOR_NS}:edgepipe"
TOKEN = "realnode-token-5e7d1b"


@pytest.fixture(scope="module")
def teams(node: rn.NodeCluster, operator_image: str) -> Iterator[tuple[Kubectl, Kubectl]]:
    """team-a (restricted) and team-b, and the operator installed to watch team-a only."""
    a, b = node.namespace("team-a"), node.namespace("team-b")
    a(
        "label", "namespace", "team-a", "pod-security.kubernetes.io/enforce=restricted",
        "pod-security.kubernetes.io/enforce-version=latest", namespaced=False,
    )  # fmt: skip
    rn.install_operator(node, operator_image, "watchNamespaces={team-a}")
    yield a, b
    rn.uninstall_operator(node)


def _can(kubectl: Kubectl, *args: str) -> str:
    return kubectl("auth", "can-i", *args, SA, check=False, namespaced=False).stdout.strip()


def test_the_namespaced_operator_has_roles_in_team_a_only(teams, node) -> None:
    a, _ = teams
    assert _can(a, "get", "secrets", "-n", "team-b") == "no"
    assert _can(a, "get", "secrets", "-n", "team-a") == "yes"
    assert _can(a, "list", "secrets", "-A") == "no"
    assert _can(a, "watch", "deployments", "-n", "team-a") == "yes"
    roles = a("get", "clusterroles,clusterrolebindings", "-o", "name", namespaced=False).stdout
    assert "edgepipe" not in roles.replace("system:", "")
    # The operator's pod runs, ready, on the real node under these Roles alone.
    ops = node.kubectl(rn.OPERATOR_NS)

    def ready() -> dict | None:
        pods = ops.items("pods", "app.kubernetes.io/name=edgepipe")
        return pods[0] if pods and rn.pod_ready(pods[0]) else None

    try:
        pod = wait_for("the operator pod ready", ready, timeout=180)
    except AssertionError:
        described = ops("describe", "pods", check=False).stdout[-3000:]
        raise AssertionError(described + rn.operator_log(node)) from None
    assert pod["spec"]["nodeName"] == "real-node-0"
    time.sleep(10)  # without a readiness probe a crash-looping pod is Ready for a moment
    (pod,) = ops.items("pods", "app.kubernetes.io/name=edgepipe")
    assert pod["status"]["containerStatuses"][0]["restartCount"] == 0, rn.operator_log(node)


def _get(url: str, token: str | None = None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10):
            return 200
    except urllib.error.HTTPError as exc:
        return exc.code


def test_a_restricted_namespace_runs_a_pipeline_that_asks_for_its_token(
    teams, node_registry, models_dir
) -> None:
    a, _ = teams
    model = rn.push_model(node_registry, models_dir / "add1.onnx", "add1")
    secret = rn.registry_secret(a, node_registry)
    a.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "engine-token"},
            "stringData": {"token": f"{TOKEN}\n"},
        }
    )
    manifest = rn.pipeline("guarded", model, secret)
    manifest["spec"]["auth"] = {"tokenSecretRef": {"name": "engine-token"}}
    a.apply(manifest)
    rn.wait_running(a, "guarded", timeout=300)
    (pod,) = rn.engine_pods(a, "guarded")
    assert pod["spec"]["nodeName"] == "real-node-0" and rn.pod_ready(pod)
    with rn.port_forward(a, "svc/guarded-engine") as url:
        assert _get(url + "/pipelines") == 401
        assert _get(url + "/pipelines", "wrong") == 403
        assert _get(url + "/pipelines", TOKEN) == 200
        assert _get(url + "/health/ready") == 200
    import tritonclient.grpc as grpcclient

    with rn.port_forward(a, "svc/guarded-engine", 8081, grpc=True) as target:
        inp = grpcclient.InferInput("x", [1, 4], "FP32")
        inp.set_data_from_numpy(np.ones((1, 4), np.float32))
        client = grpcclient.InferenceServerClient(target)
        got = client.infer("guarded", [inp], headers={"authorization": f"Bearer {TOKEN}"})
    assert got.as_numpy("y").tolist() == [[2, 2, 2, 2]]
    deployment = a.get("deployment", "guarded-engine")
    assert TOKEN not in str(deployment)


def test_a_pipeline_in_team_b_is_not_touched(teams, node) -> None:
    a, b = teams
    b.apply(rn.pipeline("outside", "oci://nowhere/m:1", "none"))
    # The same Pipeline in team-a, after it: once the operator has answered that one
    # (Pending: there is no Secret "none"), it would have answered team-b's too.
    a.apply(rn.pipeline("inside", "oci://nowhere/m:1", "none"))
    wait_for("the operator's answer in team-a", lambda: rn.status(a, "inside").get("phase"), 60)
    time.sleep(5)  # and some more
    assert rn.status(b, "outside") == {}
    assert b.get("deployment", "outside-engine") is None
    assert "team-b" not in rn.operator_log(node)
