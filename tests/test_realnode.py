"""The cluster journey with real pods: the operator installed by its chart, engines on a
kubelet + containerd node, models from a registry with a password, rollouts under load,
killed containers, too little memory, the edge chart, and a node restart."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import orjson
import pytest

from edgepipe import yolo
from tests.helpers import realnode_steps as rn
from tests.helpers.kube import Kubectl, wait_for
from tests.helpers.realnode_fixtures import agent_exits

pytestmark = [pytest.mark.cluster, pytest.mark.realnode]
X = [1.0, 2.0, 3.0, 4.0]
REPLICAS_2 = '{"spec": {"deployment": {"replicas": 2}}}'
SIDE = 160  # the answering YOLOv8n pipelines' input side


@pytest.fixture(scope="module")
def operator_pod(node: rn.NodeCluster, operator_image: str):
    rn.install_operator(node, operator_image)
    yield node
    rn.uninstall_operator(node)


@pytest.fixture(scope="module")
def small_yolo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """YOLOv8n's layers on a SIDE x SIDE input, for the pipelines that answer: at 640x640
    each answer cost the engine, under its CPU quota, the JSON of 1.2M floats in and of
    5279 boxes out (16x and 13x less now); the postprocess, the gRPC port and the edge
    chart are the same."""
    from tests.helpers import onnx_models as m

    return m.yolov8n_shaped(tmp_path_factory.mktemp("yolo-small") / "yolov8n.onnx", size=SIDE)


@pytest.fixture(scope="module")
def models(node_registry, models_dir: Path, yolov8n_path: Path, small_yolo: Path) -> dict[str, str]:
    from tests.helpers import onnx_models as m

    m.add_constant(models_dir / "add2.onnx", 2.0)
    return {
        "add1": rn.push_model(node_registry, models_dir / "add1.onnx", "add1"),
        "add2": rn.push_model(node_registry, models_dir / "add2.onnx", "add2"),
        "yolo": rn.push_model(node_registry, yolov8n_path, "yolov8n"),  # 640x640: OOM case
        "small-yolo": rn.push_model(node_registry, small_yolo, "yolov8n-small"),
    }


def yolo_image() -> np.ndarray:
    rng = np.random.default_rng(3)
    return rng.random((1, 3, SIDE, SIDE), dtype=np.float32)


def test_operator_runs_from_its_chart_under_its_own_rbac(operator_pod: rn.NodeCluster) -> None:
    kubectl = operator_pod.kubectl(rn.OPERATOR_NS)
    (pod,) = kubectl.items("pods", "app.kubernetes.io/name=edgepipe")
    assert pod["spec"]["serviceAccountName"] == "edgepipe"
    assert pod["spec"]["nodeName"] == "real-node-0" and rn.pod_ready(pod)
    # Its credentials are the ServiceAccount's token, not an admin's.
    mounts = [m["mountPath"] for m in pod["spec"]["containers"][0]["volumeMounts"]]
    assert "/var/run/secrets/kubernetes.io/serviceaccount" in mounts
    can = kubectl(
        "auth", "can-i", "create", "deployments", "--as=system:serviceaccount:edgepipe-system:edgepipe",
        "-A", check=False,
    )  # fmt: skip
    assert can.stdout.strip() == "yes"
    # Its cache watches what it owns, cluster-wide (a missing verb crashes kopf's watcher).
    for kind in (
        "services",
        "configmaps",
        "controllerrevisions",
        "deployments",
        "pods",
        "horizontalpodautoscalers",
    ):
        watch = kubectl(
            "auth", "can-i", "watch", kind, "--as=system:serviceaccount:edgepipe-system:edgepipe",
            "-A", check=False,
        )  # fmt: skip
        assert watch.stdout.strip() == "yes", kind
    cannot = kubectl(
        "auth", "can-i", "delete", "nodes", "--as=system:serviceaccount:edgepipe-system:edgepipe",
        check=False,
    )  # fmt: skip
    assert cannot.stdout.strip() == "no"


def test_pipeline_runs_for_real_and_answers(
    operator_pod, node_registry, models, node_ns: Kubectl, small_yolo, images
):
    secret = rn.registry_secret(node_ns, node_registry)
    post = {"kind": "yolov8", "confidenceThres": 0.5, "iouThres": 0.25}
    node_ns.apply(rn.pipeline("journey", models["small-yolo"], secret, postprocess=post))
    seen = []

    def running():
        st = rn.status(node_ns, "journey")
        pods = rn.engine_pods(node_ns, "journey")
        seen.append((st.get("phase"), [rn.pod_ready(p) for p in pods]))
        return st.get("phase") == "Running" and pods

    pods = wait_for("journey Running", running, timeout=240)
    # Running came only with a ready pod on the real node.
    assert all(ready and all(ready) for phase, ready in seen if phase == "Running")
    assert pods[0]["spec"]["nodeName"] == "real-node-0"
    # The engine runs the engine image; the operator pod, the operator image.
    assert pods[0]["spec"]["containers"][0]["image"] == images["engine"]
    (op,) = operator_pod.kubectl(rn.OPERATOR_NS).items("pods")
    assert op["spec"]["containers"][0]["image"] == images["operator"]
    # No secret value in the Deployment: the login goes by reference.
    deployment = node_ns.get("deployment", "journey-engine")
    text = orjson.dumps(deployment).decode()
    assert node_registry.password not in text and "secretKeyRef" in text
    x = yolo_image()
    with rn.port_forward(node_ns, "svc/journey-engine") as url:
        (rec,) = rn.infer(url, "journey", [{"images": x.tolist()}], timeout=60)
    boxes = np.asarray(rec["outputs"][0]["Float"]["data"]).reshape(-1, 6)
    raw = ort.InferenceSession(str(small_yolo)).run(None, {"images": x})[0]
    want = yolo.decode(raw, confidence_thres=0.5, iou_thres=0.25)
    assert len(boxes) == len(want) > 0
    np.testing.assert_allclose(boxes[:, :4], [d.box for d in want], atol=1e-2)
    # The same pod over OIP v2 gRPC, through the Service's grpc port.
    import tritonclient.grpc as grpcclient

    with rn.port_forward(node_ns, "svc/journey-engine", 8081, grpc=True) as target:
        inp = grpcclient.InferInput("images", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        got = grpcclient.InferenceServerClient(target).infer("journey", [inp])
    np.testing.assert_allclose(got.as_numpy("detections"), boxes, rtol=1e-5)


def test_zero_downtime_change_on_the_cluster_ip(
    operator_pod, node_registry, models, node_ns: Kubectl
):
    secret = rn.registry_secret(node_ns, node_registry)
    node_ns.apply(rn.pipeline("rollout", models["add1"], secret))
    first = rn.wait_running(node_ns, "rollout", timeout=240)
    ip = node_ns.get("service", "rollout-engine")["spec"]["clusterIP"]
    traffic = rn.Traffic(f"http://{ip}:8080/pipelines/rollout", orjson.dumps([{"x": X}])).start()
    try:
        # The measured window opens once the ClusterIP answers (kube-proxy has its rules).
        wait_for("answers from version 1", lambda: len(traffic.answers) >= 10, 30)
        changed = time.monotonic()
        node_ns.apply(rn.pipeline("rollout", models["add2"], secret))
        rn.wait_running(node_ns, "rollout", timeout=240, version=first["version"])
        wait_for(
            "answers from version 2",
            lambda: [a for _, a in traffic.answers[-5:]] == ["3.0"] * 5,
            60,
        )
    finally:
        traffic.stop()
    values = [a for t, a in traffic.answers if t >= changed]
    assert traffic.failures_since(changed) == []
    assert values[0] == "2.0" and values[-1] == "3.0" and len(values) > 20
    # While both versions run (the rollout adds before it removes) answers may mix; then
    # only the new version answers, as the wait above saw.
    print(f"\nrollout: {len(values)} requests during the change, none failed")


def test_killed_container_restarts_and_events_say_so(operator_pod, node_registry, models, node_ns):
    secret = rn.registry_secret(node_ns, node_registry)
    node_ns.apply(rn.pipeline("killed", models["add1"], secret))
    rn.wait_running(node_ns, "killed", timeout=240)
    (pod,) = rn.engine_pods(node_ns, "killed")
    container = pod["status"]["containerStatuses"][0]["containerID"].split("://", 1)[1]
    proc = operator_pod.ctr("tasks", "kill", "--signal", "SIGKILL", container)
    assert proc.returncode == 0, proc.stderr
    phases = []

    def restarted():
        st = rn.status(node_ns, "killed")
        phases.append(st.get("phase"))
        (p,) = rn.engine_pods(node_ns, "killed")
        restarts = p["status"]["containerStatuses"][0]["restartCount"]
        return restarts >= 1 and rn.pod_ready(p) and st.get("phase") == "Running"

    wait_for("the engine restarted and Running again", restarted, timeout=120, interval=0.1)
    reasons = [e["reason"] for e in rn.events(node_ns, "killed")]
    assert "EngineNotReady" in reasons, reasons
    last_not_ready = len(reasons) - 1 - reasons[::-1].index("EngineNotReady")
    assert "Running" in reasons[last_not_ready:], reasons  # and back again
    assert "Deploying" in phases, phases


def test_too_little_memory_says_oomkilled(operator_pod, node_registry, models, node_ns: Kubectl):
    secret = rn.registry_secret(node_ns, node_registry)
    # The YOLOv8n-shaped model: its warm-up alone needs more than 64Mi of its own memory.
    node_ns.apply(rn.pipeline("tiny", models["yolo"], secret, memory="64Mi"))

    def oom():
        st = rn.status(node_ns, "tiny")
        return st if "OOMKilled" in (st.get("message") or "") else None

    st = wait_for("an OOMKilled status", oom, timeout=180)
    assert st["phase"] == "Deploying"
    ready = next(c for c in st["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False" and "OOMKilled" in ready["message"]


def test_edge_chart_pulls_with_its_secret_and_answers_the_same(
    operator_pod, node_registry, models, node_ns: Kubectl
):
    secret = rn.registry_secret(node_ns, node_registry)
    post = {"kind": "yolov8", "confidenceThres": 0.5, "iouThres": 0.25}
    node_ns.apply(rn.pipeline("edgy", models["small-yolo"], secret, postprocess=post))
    rn.wait_running(node_ns, "edgy", timeout=240)
    node_ns.apply(rn.publish_manifest("edgy-edge", "edgy", node_registry, secret))
    st = rn.wait_published(node_ns, "edgy-edge")
    proc = rn.helm_install_edge(node_ns, st, node_registry)
    assert proc.returncode == 0, proc.stderr
    x = yolo_image()
    # Only the three ociRegistry values were given: the rest is the published defaults.
    with rn.port_forward(node_ns, "svc/engine-svc") as url:
        (at_edge,) = rn.infer(url, "edgy", [{"images": x.tolist()}], timeout=60)
    with rn.port_forward(node_ns, "svc/edgy-engine") as url:
        (in_cluster,) = rn.infer(url, "edgy", [{"images": x.tolist()}], timeout=60)
    assert at_edge["outputs"] == in_cluster["outputs"]
    assert len(at_edge["outputs"][0]["Float"]["data"]) >= 6


def test_node_restart_brings_the_engines_back(
    operator_pod, node_registry, models, node_ns: Kubectl
):
    exits_before = agent_exits(operator_pod.base)
    secret = rn.registry_secret(node_ns, node_registry)
    node_ns.apply(rn.pipeline("reboot", models["add1"], secret))
    rn.wait_running(node_ns, "reboot", timeout=240)
    (before,) = rn.engine_pods(node_ns, "reboot")
    t0 = time.monotonic()
    subprocess.run(
        [str(rn.SCRIPT), "restart-node", str(operator_pod.base)], check=True, capture_output=True
    )

    def back():
        (p,) = rn.engine_pods(node_ns, "reboot")
        restarted = (
            p["status"]["containerStatuses"][0]["restartCount"]
            > (before["status"]["containerStatuses"][0]["restartCount"])
        )
        return restarted and rn.pod_ready(p) and rn.status(node_ns, "reboot")["phase"] == "Running"

    wait_for("the engine back after the node restart", back, timeout=180)
    with rn.port_forward(node_ns, "svc/reboot-engine") as url:
        (rec,) = rn.infer(url, "reboot", [{"x": X}])
    assert rec["outputs"][0]["Float"]["data"] == [2.0, 3.0, 4.0, 5.0]
    print(f"\nnode restart -> serving again in {time.monotonic() - t0:.1f}s")
    # The node goes on working: a new pod starts, and no agent exited meanwhile (the kubelet
    # once panicked on its first sync of the restarted pod; now its supervisor would start
    # it again, and only its log would say so).
    node_ns("patch", "pipeline", "reboot", "--type=merge", "-p", REPLICAS_2)
    wait_for("a second engine Ready", lambda: len(rn.ready_pods(node_ns, "reboot")) == 2, 120)
    assert agent_exits(operator_pod.base) == exits_before
