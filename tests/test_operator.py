"""The Pipeline operator as a real process against a real kube-apiserver."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.request

import pytest
import yaml

from edgepipe.config import PipelineConfig
from tests.helpers.kube import Kubectl, wait_for
from tests.helpers.paths import ROOT
from tests.helpers.pipelines import pipeline, status, wait_phase

pytestmark = pytest.mark.cluster


def test_crds_are_established_and_accept_the_examples(cluster, kubectl) -> None:
    for name in ("pipelines.edgepipe.io", "publishes.edgepipe.io"):
        crd = kubectl.get("crd", name, namespaced=False)
        conds = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
        assert conds["Established"] == "True"
        version = crd["spec"]["versions"][0]
        assert version["subresources"] == {"status": {}}
    columns = [
        c["name"]
        for c in kubectl.get("crd", "pipelines.edgepipe.io", namespaced=False)["spec"]["versions"][
            0
        ]["additionalPrinterColumns"]
    ]
    assert columns[:4] == ["Phase", "Deployed", "Version", "URL"]
    for example in ("pipeline.yaml", "publish.yaml"):
        kubectl("apply", "--dry-run=server", "-f", str(ROOT / "examples" / example))
    out = kubectl("get", "pl,pub").stderr  # short names resolve
    assert "error" not in out.lower()


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (
            {"steps": [{"model": {"name": "m", "path": "/x"}, "batchConfig": "many"}]},
            'Unsupported value: "many"',
        ),
        ({"steps": []}, "spec.steps"),
        ({"steps": None}, "spec.steps: Required value"),
        ({"deployment": {"replicas": -1}}, "spec.deployment.replicas"),
        ({"steps": [{"model": {"name": "Bad Name", "path": "/x"}}]}, "spec.steps[0].model.name"),
    ],
)
def test_apiserver_rejects_invalid_pipelines(kubectl, change, words) -> None:
    obj = pipeline("bad")
    obj["spec"].update(change)
    if obj["spec"]["steps"] is None:
        del obj["spec"]["steps"]
    proc = kubectl("apply", "-f", "-", stdin=json.dumps(obj), check=False)
    assert proc.returncode != 0 and words in proc.stderr, proc.stderr


def test_apiserver_applies_defaults(kubectl) -> None:
    obj = pipeline("defaults")
    del obj["spec"]["deployed"]
    kubectl.apply(obj)
    spec = kubectl.get("pipeline", "defaults")["spec"]
    assert spec["deployed"] is False
    assert spec["steps"][0]["batchConfig"] == "single"
    assert spec["steps"][0]["model"]["runtime"] == "onnx"


def test_deployed_pipeline_becomes_a_running_engine(operator, kubectl, namespace) -> None:
    kubectl.apply(pipeline("yolo", replicas=2, cpus=0.5, memory="512Mi", gpus=1))
    st = wait_phase(kubectl, "yolo", "Running", readyReplicas=2)
    owner = kubectl.get("pipeline", "yolo")["metadata"]
    assert st["deployed"] is True and st["replicas"] == 2
    assert st["url"] == f"http://yolo-engine.{namespace}.svc:8080/pipelines/yolo"
    conds = {c["type"]: c for c in st["conditions"]}
    assert conds["Ready"]["status"] == "True" and conds["Progressing"]["status"] == "True"

    cm = kubectl.get("configmap", "yolo-pipeline")
    config = PipelineConfig.model_validate_json(cm["data"]["pipeline.json"])
    assert config.version == st["version"] and st["versions"][0]["version"] == st["version"]
    dep = kubectl.get("deployment", "yolo-engine")
    svc = kubectl.get("service", "yolo-engine")
    for obj in (cm, dep, svc):
        (ref,) = obj["metadata"]["ownerReferences"]
        assert ref["kind"] == "Pipeline" and ref["uid"] == owner["uid"] and ref["controller"]
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/instance"] == "yolo"
        assert labels["app.kubernetes.io/managed-by"] == "edgepipe-operator"
        assert labels["app.kubernetes.io/version"] == st["version"]
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    assert c["image"] == "edgepipe:test"
    assert c["resources"]["limits"] == {"cpu": "500m", "memory": "512Mi", "nvidia.com/gpu": "1"}
    assert c["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert {e["name"]: e["value"] for e in c["env"]}["CONFIG_CPUS"] == "1"
    assert svc["spec"]["ports"][0]["port"] == 8080
    pods = kubectl.items("pods", "app.kubernetes.io/instance=yolo")
    assert len(pods) == 2 and all(p["status"]["phase"] == "Running" for p in pods)
    events = kubectl.items("events")
    assert any(e["reason"] == "Running" and e["involvedObject"]["name"] == "yolo" for e in events)

    # Scaling shows in the status, and keeps the version.
    kubectl(
        "patch",
        "pipeline",
        "yolo",
        "--type=merge",
        "-p",
        json.dumps({"spec": {"deployment": {"replicas": 3}}}),
    )
    st2 = wait_phase(kubectl, "yolo", "Running", readyReplicas=3, replicas=3)
    assert st2["version"] == st["version"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_port_forward_to_the_engine_service(
    operator, kubectl, cluster, models_dir, start_engine
) -> None:
    # kwok answers the kubelet's port-forward by connecting to this engine process.
    start_engine("--model", str(models_dir / "add1.onnx"), port=cluster["engine_forward_port"])
    steps = [{"model": {"name": "add1", "path": "/models/add1.onnx"}}]
    kubectl.apply(pipeline("add1", steps=steps))
    wait_phase(kubectl, "add1", "Running", readyReplicas=1)
    local = _free_port()
    pf = subprocess.Popen(
        [
            "kubectl",
            f"--kubeconfig={kubectl.kubeconfig}",
            f"--namespace={kubectl.namespace}",
            "port-forward",
            "svc/add1-engine",
            f"{local}:8080",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert "Forwarding from" in pf.stdout.readline()
        req = urllib.request.Request(
            f"http://127.0.0.1:{local}/pipelines/add1",
            data=b'[{"x": [[1, 2, 3, 4]]}]',
            headers={"Content-Type": "application/json; format=pandas-records"},
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            (rec,) = json.loads(resp.read())
        assert rec["outputs"][0]["Float"]["data"] == [2.0, 3.0, 4.0, 5.0]
        assert rec["pipeline_name"] == "add1"
    finally:
        pf.terminate()
        pf.wait()


def engine_objects_gone(kubectl: Kubectl, name: str) -> bool:
    objects = [
        ("deployment", f"{name}-engine"),
        ("service", f"{name}-engine"),
        ("configmap", f"{name}-pipeline"),
    ]
    return all(kubectl.get(kind, obj) is None for kind, obj in objects)


def test_edit_undeploy_and_delete(operator, kubectl) -> None:
    kubectl.apply(pipeline("life"))
    v1 = wait_phase(kubectl, "life", "Running")["version"]
    digest1 = kubectl.get("deployment", "life-engine")["spec"]["template"]["metadata"][
        "annotations"
    ]["edgepipe.io/config-digest"]

    edited = pipeline("life")
    edited["spec"]["steps"][0]["batchConfig"] = "batch"
    kubectl.apply(edited)
    st = wait_for(
        "a new version",
        lambda: (
            (s := status(kubectl, "life")).get("version") != v1
            and s.get("phase") == "Running"
            and s
        ),
    )
    assert [h["version"] for h in st["versions"]] == [v1, st["version"]]
    dep = kubectl.get("deployment", "life-engine")
    assert (
        dep["spec"]["template"]["metadata"]["annotations"]["edgepipe.io/config-digest"] != digest1
    )  # the edit rolls the pods
    assert (
        kubectl.get("configmap", "life-pipeline")["metadata"]["labels"]["app.kubernetes.io/version"]
        == st["version"]
    )

    kubectl.apply(pipeline("life", deployed=False))
    st = wait_phase(kubectl, "life", "Undeployed")
    assert st["deployed"] is False and not st.get("url")
    wait_for("engine objects removed", lambda: engine_objects_gone(kubectl, "life"))
    assert kubectl.get("pipeline", "life") is not None

    kubectl.apply(pipeline("life"))
    wait_phase(kubectl, "life", "Running")
    kubectl("delete", "pipeline", "life", "--wait=true", timeout=60)
    wait_for(
        "garbage collection of the engine objects",
        lambda: engine_objects_gone(kubectl, "life"),
        timeout=60,
    )


def test_bad_specs_reach_error_with_a_message(operator, kubectl) -> None:
    step = {"model": {"name": "m", "path": "/models/m.onnx"}}
    kubectl.apply(pipeline("twins", steps=[step, step]))
    st = wait_phase(kubectl, "twins", "Error")
    assert "repeats the step name" in st["message"] and "spec.steps" in st["message"]
    assert kubectl.get("deployment", "twins-engine") is None

    url = f"http://127.0.0.1:{_free_port()}/models/m.onnx"  # nothing listens there
    t0 = time.monotonic()
    kubectl.apply(pipeline("lost", steps=[{"model": {"name": "m", "url": url}}]))
    st = wait_phase(kubectl, "lost", "Error", timeout=90)
    # Three attempts, EDGEPIPE_OPERATOR_RETRY_SECONDS (1 here) and then 2 s apart; at the
    # default 5 s they would take 15 s.
    assert time.monotonic() - t0 < 12, "the retries did not follow RETRY_SECONDS"
    assert "spec.steps[0].model.url" in st["message"] and "unreachable" in st["message"]
    events = [e for e in kubectl.items("events") if e["involvedObject"]["name"] == "lost"]
    assert any(e["type"] == "Warning" for e in events)

    # A rule over a name the pipeline does not answer: Error at once, not a running engine
    # that refuses every request (the postprocess answers detections, not boxes).
    detect = [{**step, "postprocess": {"kind": "yolov8"}}]
    rules = pipeline("rules", steps=detect)
    rules["spec"]["validations"] = [{"name": "sure", "expr": "any(boxes[:, 4] > 0.9)"}]
    kubectl.apply(rules)
    st = wait_phase(kubectl, "rules", "Error")
    assert st["message"] == (
        "spec.validations[0].expr: unknown name(s) boxes; the outputs are detections"
    )
    assert kubectl.get("deployment", "rules-engine") is None


def test_operator_chart_installs_into_the_cluster(cluster, kubectl, namespace) -> None:
    helm = ROOT / ".venv" / "bin" / "helm"
    if not helm.exists():
        pytest.fail("helm is missing: scripts/setup --dev installs it")
    lint = subprocess.run(
        [str(helm), "lint", str(ROOT / "charts" / "edgepipe")], capture_output=True, text=True
    )
    assert lint.returncode == 0 and "0 chart(s) failed" in lint.stdout, lint.stdout
    env = {
        "KUBECONFIG": str(cluster["kubeconfig"]),
        "PATH": "/usr/bin:/bin",
        "HOME": str(cluster["base"]),
    }
    proc = subprocess.run(
        [
            str(helm),
            "install",
            "ep",
            str(ROOT / "charts" / "edgepipe"),
            "-n",
            namespace,
            "--set",
            "operator.watchNamespace=" + namespace,
            "--wait=false",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "kubectl apply -f examples/pipeline.yaml" in proc.stdout  # NOTES.txt
    dep = kubectl.get("deployment", "ep-edgepipe")
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    assert c["command"][:2] == ["edgepipe-operator", "run"]
    env_vars = {e["name"]: e.get("value") for e in c["env"]}
    assert env_vars["EDGEPIPE_OPERATOR_NAMESPACE"] == namespace
    # Two images: the operator runs its own, and engines get edgepipe-engine with its tag.
    assert c["image"] == "edgepipe-operator:0.1.0"
    assert env_vars["EDGEPIPE_OPERATOR_ENGINE_IMAGE"] == "edgepipe-engine:0.1.0"
    moved = subprocess.run(
        [
            str(helm), "template", "ep", str(ROOT / "charts" / "edgepipe"),
            "--set", "image.repository=reg.example:5000/team/edgepipe-operator",
            "--set-string", "image.tag=1.2",
        ],
        capture_output=True, text=True, env=env, timeout=60, check=True,
    ).stdout  # fmt: skip
    assert 'image: "reg.example:5000/team/edgepipe-operator:1.2"' in moved
    assert 'value: "reg.example:5000/team/edgepipe-engine:1.2"' in moved
    assert dep["spec"]["template"]["spec"]["serviceAccountName"] == "ep-edgepipe"
    assert kubectl.get("serviceaccount", "ep-edgepipe") is not None
    # Watching one namespace, the chart grants a Role there and nothing cluster-wide.
    assert kubectl.get("clusterrole", "ep-edgepipe", namespaced=False) is None
    role = kubectl.get("role", "ep-edgepipe")
    verbs = {
        (g, r): set(rule["verbs"])
        for rule in role["rules"]
        for g in rule["apiGroups"]
        for r in rule["resources"]
    }
    assert verbs[("edgepipe.io", "pipelines/status")] == {"get", "patch"}
    assert "delete" not in verbs[("", "secrets")]
    binding = kubectl.get("rolebinding", "ep-edgepipe")
    assert binding["roleRef"]["kind"] == "Role"
    assert binding["subjects"][0]["namespace"] == namespace
    wait_for(
        "the operator pod", lambda: kubectl.items("pods", "app.kubernetes.io/component=operator")
    )
    rendered = yaml.safe_load_all(proc.stdout)  # helm's output is not YAML; just no crash
    del rendered
    subprocess.run(
        [str(helm), "uninstall", "ep", "-n", namespace],
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )
