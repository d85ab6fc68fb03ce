"""The ``inflight`` metric's stack beside a real-node test cluster (issue 28): Debian's
Prometheus scraping the engine pods, and prometheus-adapter (built from its Go module by
scripts/build-metrics-server) serving ``edgepipe_inflight_requests`` per pod in
custom.metrics.k8s.io, with the rule the operator chart renders.

Debian's Prometheus is built without Kubernetes service discovery, so a thread here writes
the engine pods' addresses to a file_sd file every second, with the ``namespace`` and
``pod`` labels the chart's relabelling would give them.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import threading
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from edgepipe.localengine import free_port
from tests.helpers.helm import helm
from tests.helpers.kube import Kubectl, wait_for
from tests.helpers.paths import ROOT

APISERVICE = "v1beta1.custom.metrics.k8s.io"
# Scrapes, the rate window and the adapter's relist short (3 engine pods at most): the
# autoscaler saw a load start and stop a window (10 s) and a relist (5 s) later.
SCRAPE_SECONDS = 1


def adapter_rules(window: str) -> str:
    """prometheus-adapter's config.yaml, as the operator chart renders it."""
    rendered = helm(
        "template", "x", str(ROOT / "charts" / "edgepipe"),
        "--set", "inflightMetrics.enabled=true", "--set", f"inflightMetrics.window={window}",
    ).stdout  # fmt: skip
    for doc in yaml.safe_load_all(rendered):
        if doc and doc["kind"] == "ConfigMap" and doc["metadata"]["name"].endswith("adapter-rules"):
            return doc["data"]["config.yaml"]
    raise AssertionError("the operator chart rendered no adapter rules")


def registration(address: str, port: int) -> list[dict]:
    meta = {"name": "prometheus-adapter", "namespace": "kube-system"}
    return [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": meta,
            "spec": {"ports": [{"name": "https", "port": 443, "targetPort": port}]},
        },
        {
            "apiVersion": "v1",
            "kind": "Endpoints",
            "metadata": meta,
            "subsets": [
                {"addresses": [{"ip": address}], "ports": [{"name": "https", "port": port}]}
            ],
        },
        {
            "apiVersion": "apiregistration.k8s.io/v1",
            "kind": "APIService",
            "metadata": {"name": APISERVICE},
            "spec": {
                "service": {"name": "prometheus-adapter", "namespace": "kube-system", "port": 443},
                "group": "custom.metrics.k8s.io",
                "version": "v1beta1",
                "insecureSkipTLSVerify": True,
                "groupPriorityMinimum": 100,
                "versionPriority": 100,
            },
        },
    ]


@dataclass
class InflightStack:
    base: Path
    kubeconfig: Path
    gateway: str
    adapter: Path
    namespace: str
    window: str = "5s"  # five scrapes
    procs: list[subprocess.Popen] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> InflightStack:
        prometheus = shutil.which("prometheus")
        assert prometheus, "Debian's prometheus package is not installed"
        self.base.mkdir(parents=True, exist_ok=True)
        self.targets = self.base / "targets.json"
        self.targets.write_text("[]")
        port = free_port()
        config = self.base / "prometheus.yml"
        config.write_text(
            yaml.safe_dump(
                {
                    "global": {"scrape_interval": f"{SCRAPE_SECONDS}s"},
                    "scrape_configs": [
                        {
                            "job_name": "edgepipe-engines",
                            "file_sd_configs": [
                                {"files": [str(self.targets)], "refresh_interval": "1s"}
                            ],
                        }
                    ],
                }
            )
        )
        self.prometheus_url = f"http://127.0.0.1:{port}"
        self._spawn("prometheus", [
            prometheus, f"--config.file={config}", f"--storage.tsdb.path={self.base / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ])  # fmt: skip
        threading.Thread(target=self._follow_pods, daemon=True).start()
        rules = self.base / "adapter.yaml"
        rules.write_text(adapter_rules(self.window))
        adapter_port = free_port()
        kc = str(self.kubeconfig)
        self._spawn("adapter", [
            str(self.adapter), f"--prometheus-url={self.prometheus_url}", f"--config={rules}",
            f"--bind-address={self.gateway}", f"--secure-port={adapter_port}",
            f"--cert-dir={self.base / 'adapter-certs'}", f"--lister-kubeconfig={kc}",
            f"--authentication-kubeconfig={kc}", f"--authorization-kubeconfig={kc}",
            "--metrics-relist-interval=1s", "--v=1",
        ])  # fmt: skip
        kube = Kubectl(self.kubeconfig, "kube-system")
        kube.apply(
            {"apiVersion": "v1", "kind": "List", "items": registration(self.gateway, adapter_port)}
        )
        jsonpath = "jsonpath={.status.conditions[?(@.type=='Available')].status}"
        wait_for(
            "the custom metrics API",
            lambda: (
                "True"
                in kube("get", "apiservice", APISERVICE, "-o", jsonpath, namespaced=False).stdout
            ),
            120,
        )
        return self

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = open(self.base / f"{name}.log", "ab")  # noqa: SIM115 - the child owns it
        self.procs.append(subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT))

    def _follow_pods(self) -> None:
        """The engine pods of the namespace as file_sd targets, every second."""
        kube = Kubectl(self.kubeconfig, self.namespace)
        while not self._stop.wait(1):
            with contextlib.suppress(Exception):
                pods = kube.items("pods", "app.kubernetes.io/name=edgepipe-engine")
                groups = [
                    {
                        "targets": [f"{p['status']['podIP']}:8080"],
                        "labels": {"namespace": self.namespace, "pod": p["metadata"]["name"]},
                    }
                    for p in pods
                    if (p.get("status") or {}).get("podIP")
                ]
                tmp = self.targets.with_suffix(".tmp")
                tmp.write_text(json.dumps(groups))
                tmp.replace(self.targets)

    def value(self, pipeline_pods: str = "*") -> dict:
        """The custom metrics API's answer for the namespace's pods."""
        kube = Kubectl(self.kubeconfig, self.namespace)
        path = (
            f"/apis/custom.metrics.k8s.io/v1beta1/namespaces/{self.namespace}/pods/"
            f"{pipeline_pods}/edgepipe_inflight_requests"
        )
        return json.loads(kube("get", "--raw", path, namespaced=False).stdout)

    def query(self, promql: str) -> list:
        url = f"{self.prometheus_url}/api/v1/query?query={urllib.request.quote(promql)}"
        with urllib.request.urlopen(url, timeout=5) as resp:
            return json.loads(resp.read())["data"]["result"]

    def stop(self) -> None:
        self._stop.set()
        kube = Kubectl(self.kubeconfig, "kube-system")
        kube("delete", "apiservice", APISERVICE, "--wait=false", namespaced=False, check=False)
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
