"""The cluster journey on a real node, step by step: shared by the ``realnode`` tests and
``scripts/realnode-journey``. Every step talks to real processes: the test cluster with
its kubelet and containerd, a registry with htpasswd on the test bridge, helm, kubectl
and the engine image under containerd."""

from __future__ import annotations

import base64
import contextlib
import json
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from edgepipe import oci
from edgepipe.localengine import free_port
from tests.helpers.kube import Kubectl, wait_for
from tests.helpers.oci_registry import Registry
from tests.helpers.paths import ROOT

SCRIPT = ROOT / "scripts" / "testcluster"
HELM = str(Path(sys.executable).parent / "helm")
JSON = "application/json; format=pandas-records"
OPERATOR_NS = "edgepipe-system"


@dataclass
class NodeCluster:
    base: Path
    info: dict
    made: list[str] = field(default_factory=list)  # namespaces, deleted by delete_namespaces
    loading: list[subprocess.Popen] = field(default_factory=list)  # start_cluster's `later`

    def images_loaded(self) -> None:
        """Waits until the images start_cluster loads in the background are in containerd."""
        for proc in list(self.loading):
            err = proc.communicate(timeout=600)[1]
            self.loading.remove(proc)
            assert proc.returncode == 0, f"{' '.join(proc.args)} failed:\n{err[-3000:]}"

    @property
    def kubeconfig(self) -> Path:
        return Path(self.info["kubeconfig"])

    @property
    def gateway(self) -> str:
        return self.info["gateway"]

    def kubectl(self, namespace: str = "default") -> Kubectl:
        return Kubectl(self.kubeconfig, namespace)

    def namespace(self, name: str) -> Kubectl:
        """Creates namespace ``name``; delete_namespaces removes it."""
        kubectl = self.kubectl(name)
        kubectl("create", "namespace", name, namespaced=False)
        self.made.append(name)
        return kubectl

    def delete_namespaces(self, timeout: float = 120) -> None:
        """Deletes the namespaces made here, all at once, their pods without a grace
        period (their tests are over: nothing to drain), and waits until the pods are gone.
        Not the namespaces: the namespace controller, which saw pods with a grace period,
        looks again only after it, 30 s."""
        names, self.made[:] = list(self.made), []
        if not names:
            return
        kubectl = self.kubectl()
        kubectl(
            "delete", "namespace", *names, "--ignore-not-found", "--wait=false",
            namespaced=False, check=False,
        )  # fmt: skip
        for name in names:  # terminating: no controller makes new pods there
            force_delete_pods(self.kubectl(name))

        def pods_gone() -> bool:
            out = kubectl("get", "pods", "-A", "-o", "json", namespaced=False).stdout
            return not [p for p in json.loads(out)["items"] if p["metadata"]["namespace"] in names]

        wait_for(f"the pods of {', '.join(names)} gone", pods_gone, timeout, 0.5)

    def ctr(self, *args: str) -> subprocess.CompletedProcess:
        sock = self.info["containerd"]
        return subprocess.run(
            ["ctr", "--address", sock, "-n", "k8s.io", *args], capture_output=True, text=True
        )


def start_cluster(base: Path, images: list[str], log=print, later: tuple | list = ()):
    """A real-node cluster with ``images`` (the engine's and the operator's) in containerd,
    and ``later`` loading into it in the background (NodeCluster.images_loaded waits)."""
    t0 = time.monotonic()
    proc = subprocess.run(
        [str(SCRIPT), "start", str(base), "--real-node"], capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise RuntimeError(f"the real-node cluster did not start:\n{proc.stderr[-4000:]}")
    log(f"real-node cluster ready in {time.monotonic() - t0:.1f}s")
    cluster = NodeCluster(base, json.loads((base / "cluster.json").read_text()))
    try:
        for image in later:
            cmd = [str(SCRIPT), "load-image", str(base), image]
            pipes = {"stdout": subprocess.DEVNULL, "stderr": subprocess.PIPE, "text": True}
            cluster.loading.append(subprocess.Popen(cmd, **pipes))
        for image in images:
            t0 = time.monotonic()
            subprocess.run(
                [str(SCRIPT), "load-image", str(base), image], check=True, capture_output=True
            )
            log(f"image {image} loaded into containerd in {time.monotonic() - t0:.1f}s")
        kubectl = cluster.kubectl()
        kubectl("apply", "-f", str(ROOT / "crds"))
        kubectl("wait", "--for=condition=Established", "crd/pipelines.edgepipe.io", "--timeout=60s")
    except BaseException:
        stop_cluster(cluster)  # started, but not ready: leave nothing running
        raise
    return cluster


def stop_cluster(cluster: NodeCluster) -> None:
    for proc in cluster.loading:  # still loading: the cluster goes anyway
        proc.kill()
    subprocess.run([str(SCRIPT), "stop", str(cluster.base)], timeout=300)


def registry_on_bridge(base: Path, gateway: str) -> Registry:
    """A registry with htpasswd that pods reach at the bridge's gateway, over plain HTTP."""
    return Registry(base, auth=True, address=gateway).start()


def install_operator(cluster: NodeCluster, image: str, *sets: str) -> None:
    """``helm install charts/edgepipe``: the operator in a pod, under the chart's RBAC, from
    the operator image; engines get the chart's default, edgepipe-engine with its tag.
    ``sets``: more ``--set`` values (``watchNamespaces={team-a}``)."""
    cluster.images_loaded()
    repo, tag = image.rsplit(":", 1)
    proc = subprocess.run(
        [
            HELM, "install", "edgepipe", str(ROOT / "charts" / "edgepipe"),
            "--kubeconfig", str(cluster.kubeconfig),
            "--namespace", OPERATOR_NS, "--create-namespace",
            "--set", f"image.repository={repo}", "--set-string", f"image.tag={tag}",
            "--set", "image.pullPolicy=Never",
            *(a for value in sets for a in ("--set", value)),
            "--wait", "--timeout", "180s",
        ],
        capture_output=True, text=True,
    )  # fmt: skip
    if proc.returncode != 0:
        kubectl = cluster.kubectl(OPERATOR_NS)
        pods = kubectl("describe", "pods", check=False).stdout[-3000:]
        log = operator_log(cluster)
        uninstall_operator(cluster)  # the next install on this cluster starts clean
        raise AssertionError(f"helm install of the operator failed: {proc.stderr}\n{pods}\n{log}")


def uninstall_operator(cluster: NodeCluster) -> None:
    """``helm uninstall``, and wait until the operator's pod is gone: the chart's RBAC
    goes with it, and the next install on this cluster finds one operator pod, its own.
    The (empty) namespace stays."""
    kubeconfig = ["--kubeconfig", str(cluster.kubeconfig), "--namespace", OPERATOR_NS]
    subprocess.run([HELM, "uninstall", "edgepipe", *kubeconfig], capture_output=True, timeout=120)
    kubectl, selector = cluster.kubectl(OPERATOR_NS), "app.kubernetes.io/name=edgepipe"
    force_delete_pods(kubectl, selector)
    wait_for("the operator's pod gone", lambda: not kubectl.items("pods", selector), 120, 0.5)


def force_delete_pods(kubectl: Kubectl, selector: str | None = None) -> None:
    """The namespace's pods (or those ``selector`` picks) deleted at once, their
    containers killed, not stopped: for clean-ups, where nothing is left to drain."""
    which = ["-l", selector] if selector else ["--all"]
    kubectl(
        "delete", "pods", *which, "--grace-period=0", "--force", "--ignore-not-found",
        "--wait=false", check=False,
    )  # fmt: skip


def operator_log(cluster: NodeCluster) -> str:
    proc = cluster.kubectl(OPERATOR_NS)("logs", "deploy/edgepipe", "--tail=400", check=False)
    return proc.stdout + proc.stderr


def push_model(registry: Registry, path: Path, name: str) -> str:
    client = oci.Client(
        registry.host, oci.Credentials(registry.username, registry.password), plain_http=True
    )
    return oci.push_model(client, path, name=name, repository=f"t/models/{name}").reference


def registry_secret(kubectl: Kubectl, registry: Registry, name: str = "model-registry") -> str:
    kubectl.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name},
            "stringData": {"username": registry.username, "password": registry.password},
        }
    )
    return name


def pipeline(name: str, model_url: str, secret: str, memory: str = "512Mi", **step) -> dict:
    return {
        "apiVersion": "edgepipe.io/v1alpha1",
        "kind": "Pipeline",
        "metadata": {"name": name},
        "spec": {
            "deployed": True,
            "steps": [{"model": {"name": name, "url": model_url}, **step}],
            "registry": {"secretRef": {"name": secret}, "plainHttp": True},
            "deployment": {"cpus": 0.25, "memory": memory},
        },
    }


def status(kubectl: Kubectl, name: str) -> dict:
    return ((kubectl.get("pipeline", name) or {}).get("status")) or {}


def wait_running(kubectl: Kubectl, name: str, timeout: float = 180, version=None) -> dict:
    def check():
        st = status(kubectl, name)
        ok = st.get("phase") == "Running" and (version is None or st.get("version") != version)
        return st if ok else None

    return wait_for(f"pipeline {name} Running", check, timeout)


def engine_pods(kubectl: Kubectl, name: str) -> list[dict]:
    return kubectl.items("pods", f"app.kubernetes.io/instance={name}")


def ready_pods(kubectl: Kubectl, name: str) -> list[dict]:
    return [p for p in engine_pods(kubectl, name) if pod_ready(p)]


def pod_ready(pod: dict) -> bool:
    conds = (pod.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conds)


@contextlib.contextmanager
def port_forward(
    kubectl: Kubectl, target: str, remote: int = 8080, grpc: bool = False
) -> Iterator[str]:
    """``kubectl port-forward TARGET PORT:remote``; yields the local base URL, or with
    ``grpc`` the ``host:port`` target of the engine's OIP v2 gRPC port."""
    port = free_port()
    proc = subprocess.Popen(
        ["kubectl", f"--kubeconfig={kubectl.kubeconfig}", "-n", kubectl.namespace,
         "port-forward", target, f"{port}:{remote}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        if grpc:
            wait_for("the gRPC port-forward", lambda: _grpc_ready(f"127.0.0.1:{port}"), 30)
            yield f"127.0.0.1:{port}"
            return
        # A probe path: open on an engine that asks other requests for a token.
        wait_for("the port-forward", lambda: _answers(url + "/health/live"), 30)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def _grpc_ready(target: str) -> bool:
    import tritonclient.grpc as grpcclient

    try:
        return grpcclient.InferenceServerClient(target).is_server_ready()
    except Exception:  # not forwarding yet
        return False


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status == 200
    except (OSError, urllib.error.URLError):
        return False


def infer(base: str, name: str, rows: list[dict], timeout: float = 10) -> list[dict]:
    req = urllib.request.Request(
        f"{base}/pipelines/{name}", data=orjson.dumps(rows), headers={"Content-Type": JSON}
    )
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return orjson.loads(resp.read())


@dataclass
class Traffic:
    """A client on the node that keeps asking a Service's ClusterIP, and what it got."""

    url: str
    body: bytes
    answers: list[tuple[float, str]] = field(default_factory=list)  # (time, first value)
    failures: list[tuple[float, str]] = field(default_factory=list)  # (time, error)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Traffic:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self, limit_s: float = 300) -> None:
        deadline = time.monotonic() + limit_s  # bounded: it stops by itself
        while not self._stop.is_set() and time.monotonic() < deadline:
            req = urllib.request.Request(self.url, data=self.body, headers={"Content-Type": JSON})
            try:
                with urllib.request.urlopen(req, timeout=10) as resp:
                    out = orjson.loads(resp.read())[0]["outputs"][0]["Float"]["data"][0]
                    self.answers.append((time.monotonic(), str(out)))
            except Exception as exc:
                self.failures.append((time.monotonic(), f"{type(exc).__name__}: {exc}"))
            time.sleep(0.05)

    def failures_since(self, t: float) -> list[str]:
        return [f for when, f in self.failures if when >= t]

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(20)


def events(kubectl: Kubectl, name: str) -> list[dict]:
    out = kubectl(
        "get", "events", "-o", "json",
        "--field-selector", f"involvedObject.kind=Pipeline,involvedObject.name={name}",
    ).stdout  # fmt: skip
    return sorted(json.loads(out)["items"], key=lambda e: e["metadata"]["creationTimestamp"])


def docker_config_secret(kubectl: Kubectl, registry: Registry, name: str) -> str:
    auth = base64.b64encode(f"{registry.username}:{registry.password}".encode()).decode()
    config = {"auths": {registry.host: {"auth": auth}}}
    kubectl.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name},
            "type": "kubernetes.io/dockerconfigjson",
            "stringData": {".dockerconfigjson": json.dumps(config)},
        }
    )
    return name


def publish_manifest(name: str, pipeline: str, registry: Registry, secret: str) -> dict:
    return {
        "apiVersion": "edgepipe.io/v1alpha1",
        "kind": "Publish",
        "metadata": {"name": name},
        "spec": {
            "pipeline": pipeline,
            "registry": {"url": f"{registry.host}/t", "secretRef": {"name": secret},
                         "plainHttp": True},
        },
    }  # fmt: skip


def wait_published(kubectl: Kubectl, name: str, timeout: float = 180) -> dict:
    def published():
        st = ((kubectl.get("publish", name) or {}).get("status")) or {}
        assert st.get("phase") != "Failed", st
        return st if st.get("phase") == "Published" else None

    return wait_for(f"publish {name}", published, timeout)


def helm_install_edge(
    kubectl: Kubectl, status: dict, registry: Registry
) -> subprocess.CompletedProcess:
    """``helm install`` of a Publish's chart with only the three ociRegistry values (helm
    itself logs in to pull the chart, as a user would)."""
    return subprocess.run(
        [
            HELM, "install", "edge", f"oci://{status['helmChartUrl']}",
            "--version", status["helmChartVersion"], "--plain-http",
            "--username", registry.username, "--password", registry.password,
            "--kubeconfig", str(kubectl.kubeconfig), "--namespace", kubectl.namespace,
            "--set", f"ociRegistry.registry={registry.host}",
            "--set-string", f"ociRegistry.username={registry.username}",
            "--set-string", f"ociRegistry.password={registry.password}",
            "--wait", "--timeout", "300s",
        ],
        capture_output=True, text=True,
    )  # fmt: skip
