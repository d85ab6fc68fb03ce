"""Many Pipelines on a test control plane of their own: start it with room for them, run
the operator under its own user, apply N Pipelines, watch them converge, and count what the
operator asked of the apiserver (its audit log) and what each process spent (/proc).

Used by bench/operator_scale.py and tests/test_control_plane_restarts.py.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.helpers.kube import Kubectl, OperatorProcess
from tests.helpers.paths import ROOT

SCRIPT = ROOT / "scripts" / "testcluster"
TICKS = os.sysconf("SC_CLK_TCK")
# The kinds a Pipeline owns, as the audit log names their resources.
OWNED = ("deployments", "services", "configmaps", "controllerrevisions")
WRITES = ("create", "update", "patch", "delete")


def pipeline(name: str, namespace: str, **spec: Any) -> dict:
    """A small Pipeline: one model from the engine's image (nothing to fetch or check)."""
    return {
        "apiVersion": "edgepipe.io/v1alpha1",
        "kind": "Pipeline",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "deployed": True,
            "steps": [{"model": {"name": "m", "path": "/models/m.onnx"}}],
            "deployment": {"replicas": 1, "cpus": 0.1, "memory": "64Mi"},
            **spec,
        },
    }


def without_kubernetes(base: Path) -> dict[str, str]:
    """The environment that runs the operator as its image does, without the ``kubernetes``
    package: kopf imports it when it is installed (the dev venv has it, for the tests), and
    it brings requests, urllib3, oauthlib and its models, about 18 MB of the operator's RSS
    that the image never has. A package of that name that refuses to import comes first on
    the path; kopf takes the ImportError as "not installed"."""
    stub = base / "no-kubernetes"
    (stub / "kubernetes").mkdir(parents=True, exist_ok=True)
    (stub / "kubernetes" / "__init__.py").write_text(
        'raise ImportError("not in the operator image (tests/helpers/scale_cluster.py)")\n'
    )
    path = [str(stub), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {"PYTHONPATH": os.pathsep.join(path)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ProcStats:
    """CPU seconds and memory of one process, from /proc."""

    pid: int

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime

    def memory_mb(self) -> tuple[float, float]:
        """(RSS now, peak RSS) in MB."""
        values = {}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) / 1024
        return values["VmRSS"], values["VmHWM"]

    def rss_by_kind_mb(self) -> dict[str, float]:
        """Resident memory by mapping: the brk heap, anonymous mmaps (thread arenas, Python's
        arenas, big buffers) and files (code and shared libraries)."""
        out = {"heap": 0.0, "anon": 0.0, "files": 0.0}
        kind = "anon"
        for line in Path(f"/proc/{self.pid}/smaps").read_text().splitlines():
            head = line.split()
            if head and "-" in head[0] and len(head) >= 5:  # a mapping's first line
                name = head[5] if len(head) > 5 else ""
                kind = "heap" if name == "[heap]" else "files" if name.startswith("/") else "anon"
            elif head and head[0] == "Rss:":
                out[kind] += int(head[1]) / 1024
        return {k: round(v, 1) for k, v in out.items()}


@dataclass
class ScaleCluster:
    """A test control plane (``testcluster start --pods``) and an operator on it."""

    base: Path
    pods: int = 110
    # The operator as its image runs it (no `kubernetes` package: without_kubernetes).
    image_like: bool = True
    python_path: list[str] = field(default_factory=list)  # first on the operator's path
    info: dict = field(default_factory=dict)
    operator: OperatorProcess | None = None

    def start(self) -> ScaleCluster:
        subprocess.run(
            [str(SCRIPT), "start", str(self.base), "--pods", str(self.pods)],
            check=True,
            capture_output=True,
            timeout=900,
        )
        self.info = json.loads((self.base / "cluster.json").read_text())
        self.kubectl = Kubectl(Path(self.info["kubeconfig"]), "default")
        self.kubectl("apply", "-f", str(ROOT / "crds"), namespaced=False)
        self.kubectl(
            "wait",
            "--for=condition=Established",
            "crd/pipelines.edgepipe.io",
            "--timeout=60s",
            namespaced=False,
        )
        return self

    def stop(self) -> None:
        if self.operator:
            self.operator.stop()
        subprocess.run([str(SCRIPT), "stop", str(self.base)], timeout=120, check=False)

    def component(self, command: str, name: str) -> None:
        """``stop-component`` or ``start-component`` of etcd, kube-apiserver, ..."""
        subprocess.run(
            [str(SCRIPT), f"{command}-component", str(self.base), name],
            check=True,
            capture_output=True,
            timeout=120,
        )

    def start_operator(self, log: Path, **env: str) -> OperatorProcess:
        port = free_port()
        self.operator = OperatorProcess(
            Path(self.info["operator_kubeconfig"]),
            log,
            {
                "EDGEPIPE_OPERATOR_ENGINE_IMAGE": "edgepipe:scale-a",
                # kwok's pods have made-up addresses: nothing to probe.
                "EDGEPIPE_OPERATOR_PROBE_ENGINES": "false",
                **self._path(),
                **env,
            },
            liveness_port=port,
        ).start()
        return self.operator

    def _path(self) -> dict[str, str]:
        env = without_kubernetes(self.base) if self.image_like else {}
        path = [*self.python_path, env.get("PYTHONPATH") or os.environ.get("PYTHONPATH") or ""]
        joined = os.pathsep.join(p for p in path if p)
        return {"PYTHONPATH": joined} if joined else {}

    def namespace(self, name: str) -> Kubectl:
        self.kubectl("create", "namespace", name, namespaced=False)
        return Kubectl(self.kubectl.kubeconfig, name)

    def create(self, namespace: str, manifests: Iterable[dict]) -> None:
        """All at once: one kubectl call with a List."""
        items = {"apiVersion": "v1", "kind": "List", "items": list(manifests)}
        self.kubectl("create", "-f", "-", stdin=json.dumps(items), namespaced=False, timeout=600)

    def get(self, path: str) -> Any:
        """GET from the apiserver as admin: cheaper to poll with than a kubectl process."""
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        req = urllib.request.Request(
            self.info["server"] + path, headers={"Authorization": f"Bearer {self.info['token']}"}
        )
        with urllib.request.urlopen(req, context=ctx, timeout=60) as resp:
            return json.loads(resp.read())

    def items(self, namespace: str, path: str) -> list[dict]:
        """``pipelines`` or ``deployments`` (or any path under the namespace)."""
        group = "apis/edgepipe.io/v1alpha1" if path == "pipelines" else "apis/apps/v1"
        return self.get(f"/{group}/namespaces/{namespace}/{path}")["items"]

    def phases(self, namespace: str) -> Counter[str]:
        items = self.items(namespace, "pipelines")
        return Counter((p.get("status") or {}).get("phase", "none") for p in items)

    def audit(self) -> list[dict]:
        """The operator's requests so far, one dict each (the audit log's JSON lines)."""
        path = Path(self.info["audit_log"])
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line]

    def pids(self) -> dict[str, int]:
        return json.loads((self.base / "cluster.json").read_text())["pids"]


def wait_until(
    what: str,
    check: Callable[[], bool],
    timeout: float,
    interval: float = 1.0,
    tick: Callable[[], None] | None = None,
) -> float:
    """Seconds until ``check()`` held; ``tick`` runs on every poll (sampling)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if tick:
            tick()
        if check():
            return time.monotonic() - t0
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def requests_by_verb(events: list[dict]) -> Counter[str]:
    return Counter(e["verb"] for e in events)


def owned_writes(
    events: list[dict], namespace: str, succeeded: bool = True
) -> Counter[tuple[str, str]]:
    """Writes by the operator to owned objects in ``namespace``, by (kind, name): those that
    succeeded, or (``succeeded=False``) every one sent, whatever its answer. (A write whose
    client was killed mid-request may be done and still be logged as failed.)"""
    out: Counter[tuple[str, str]] = Counter()
    for e in events:
        ref = e.get("objectRef") or {}
        ok = not succeeded or (e.get("responseStatus") or {}).get("code", 0) < 300
        if (
            e["verb"] in WRITES
            and ok
            and ref.get("namespace") == namespace
            and ref.get("resource") in OWNED
            and not ref.get("subresource")
        ):
            out[(ref["resource"], ref.get("name", ""))] += 1
    return out
