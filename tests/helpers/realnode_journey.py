"""The whole cluster journey on a fresh real-node cluster, as one run that measures itself:
``scripts/realnode-journey``. Progress goes to stderr; the last line of stdout is one JSON
object with the figures."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

from tests.helpers import onnx_models as m
from tests.helpers import realnode_steps as rn
from tests.helpers.kube import wait_for
from tests.helpers.paths import ROOT


def log(msg: str) -> None:
    print(f"[journey] {msg}", file=sys.stderr, flush=True)


def images() -> tuple[str, str]:
    """(engine image, operator image), from scripts/testimage."""
    proc = subprocess.run(
        [str(ROOT / "scripts" / "testimage")], capture_output=True, text=True, check=True
    )
    engine, operator = proc.stdout.strip().splitlines()[-2:]
    return engine, operator


def main() -> int:
    result: dict[str, object] = {}
    with tempfile.TemporaryDirectory(prefix="edgepipe-journey-") as tmp:
        base = Path(tmp)
        engine, ref = images()
        log(f"images {engine} {ref}")
        cluster = rn.start_cluster(base / "cp", [engine, ref], log=log)
        registry = rn.registry_on_bridge(base / "registry", cluster.gateway)
        try:
            run(cluster, registry, ref, base, result)
        finally:
            registry.stop()
            rn.stop_cluster(cluster)
            log("cluster stopped and cleaned up")
    print(json.dumps(result))
    ok = result.get("inference_ok") and result.get("edge_chart_ok")
    return 0 if ok and result.get("rollout_failed_requests") == 0 else 1


def run(cluster: rn.NodeCluster, registry, ref: str, base: Path, result: dict) -> None:
    rn.install_operator(cluster, ref)
    log("operator installed with helm")
    models = base / "models"
    models.mkdir()
    add1 = rn.push_model(registry, m.add_constant(models / "add1.onnx", 1.0), "add1")
    add2 = rn.push_model(registry, m.add_constant(models / "add2.onnx", 2.0), "add2")
    log(f"models pushed to {registry.host} (htpasswd, plain HTTP)")
    kubectl = cluster.kubectl()
    secret = rn.registry_secret(kubectl, registry)
    body = [{"x": [1.0, 2.0, 3.0, 4.0]}]

    t0 = time.monotonic()
    kubectl.apply(rn.pipeline("journey", add1, secret))
    first = rn.wait_running(kubectl, "journey", timeout=300)
    result["pipeline_running_s"] = round(time.monotonic() - t0, 1)
    log(f"pipeline Running in {result['pipeline_running_s']}s")
    with rn.port_forward(kubectl, "svc/journey-engine") as url:
        out = rn.infer(url, "journey", body)[0]["outputs"][0]["Float"]["data"]
    result["inference_ok"] = out == [2.0, 3.0, 4.0, 5.0]
    log(f"inference through kubectl port-forward: {out}")

    ip = kubectl.get("service", "journey-engine")["spec"]["clusterIP"]
    traffic = rn.Traffic(f"http://{ip}:8080/pipelines/journey", orjson.dumps(body)).start()
    try:
        wait_for("answers", lambda: len(traffic.answers) >= 10, 30)
        changed = time.monotonic()
        kubectl.apply(rn.pipeline("journey", add2, secret))
        rn.wait_running(kubectl, "journey", timeout=300, version=first["version"])
        wait_for("new answers", lambda: [a for _, a in traffic.answers[-5:]] == ["3.0"] * 5, 60)
    finally:
        traffic.stop()
    result["rollout_requests"] = len([1 for t, _ in traffic.answers if t >= changed]) + len(
        traffic.failures_since(changed)
    )
    result["rollout_failed_requests"] = len(traffic.failures_since(changed))
    log(f"rollout under load: {result['rollout_requests']} requests, "
        f"{result['rollout_failed_requests']} failed")  # fmt: skip

    kubectl.apply(rn.publish_manifest("journey-edge", "journey", registry, secret))
    st = rn.wait_published(kubectl, "journey-edge", timeout=300)
    kubectl("create", "namespace", "edge", namespaced=False)
    edge = cluster.kubectl("edge")
    proc = rn.helm_install_edge(edge, st, registry)
    if proc.returncode != 0:
        raise RuntimeError(f"helm install of the edge chart failed: {proc.stderr}")
    with rn.port_forward(edge, "svc/engine-svc") as url:
        out = rn.infer(url, "journey", body)[0]["outputs"][0]["Float"]["data"]
    result["edge_chart_ok"] = out == [3.0, 4.0, 5.0, 6.0]
    log(f"edge chart (three values) answers: {out}")

    before = rn.engine_pods(kubectl, "journey")[0]["status"]["containerStatuses"][0]
    subprocess.run([str(rn.SCRIPT), "restart-node", str(cluster.base)], check=True)

    def back() -> bool:
        pods = rn.engine_pods(kubectl, "journey")
        cs = pods[0]["status"]["containerStatuses"][0] if pods else {}
        return (
            cs.get("restartCount", 0) > before["restartCount"]
            and rn.pod_ready(pods[0])
            and rn.status(kubectl, "journey").get("phase") == "Running"
        )

    wait_for("the engine after the node restart", back, timeout=300)
    with rn.port_forward(kubectl, "svc/journey-engine") as url:
        out = rn.infer(url, "journey", body)[0]["outputs"][0]["Float"]["data"]
    result["restarts_recovered"] = out == [3.0, 4.0, 5.0, 6.0]
    log(f"node restarted; the engine answers again: {out}")


if __name__ == "__main__":
    sys.exit(main())
