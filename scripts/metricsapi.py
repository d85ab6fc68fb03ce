"""Parts of scripts/testcluster: the aggregation layer and metrics-server, so that the real
HorizontalPodAutoscaler controller can read pods' CPU (issue 28). A sibling module, loaded
with scripts/ on sys.path.

- The apiserver gets the aggregation layer's flags: a front-proxy CA (made with openssl)
  whose client certificate it shows to aggregated APIs, which trust the user it names in
  the X-Remote-* headers (it publishes the CA in kube-system/extension-apiserver-authentication).
- metrics-server (built from its Go module by scripts/build-metrics-server) runs as a
  process of the cluster, beside the kubelet, on the bridge's gateway address: it scrapes
  the real kubelet's /metrics/resource every 10 s (its shortest resolution) and serves
  metrics.k8s.io. A Service without a selector and its EndpointSlice point the APIService
  at it (--enable-aggregator-routing: the apiserver dials the endpoint, no ClusterIP).
- ``stop-component DIR metrics-server`` stops it: the APIService turns unavailable and an
  HPA on cpu reports FailedGetResourceMetric.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent
NAMESPACE = "kube-system"
SERVICE = "metrics-server"
GROUP_VERSION = "v1beta1.metrics.k8s.io"
# The metrics window metrics-server keeps: two kubelet samples make one CPU rate.
RESOLUTION = "10s"
# How often the HPA controller looks (15 s by default): tests wait for it less. One HPA
# or two at a time here: a look a second costs nothing to speak of.
HPA_SYNC = "1s"


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def front_proxy(certs: Path) -> list[str]:
    """The front-proxy CA and client certificate; the apiserver's aggregation flags."""
    ca_key, ca = certs / "front-proxy-ca.key", certs / "front-proxy-ca.crt"
    key, csr, crt = (certs / f"front-proxy-client.{x}" for x in ("key", "csr", "crt"))
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-keyout",
            str(ca_key), "-out", str(ca), "-subj", "/CN=front-proxy-ca")  # fmt: skip
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
            "-subj", "/CN=front-proxy-client")  # fmt: skip
    openssl("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
            "-CAcreateserial", "-days", "2", "-out", str(crt))  # fmt: skip
    return [
        f"--requestheader-client-ca-file={ca}",
        "--requestheader-allowed-names=front-proxy-client",
        "--requestheader-username-headers=X-Remote-User",
        "--requestheader-group-headers=X-Remote-Group",
        "--requestheader-extra-headers-prefix=X-Remote-Extra-",
        f"--proxy-client-cert-file={crt}",
        f"--proxy-client-key-file={key}",
        "--enable-aggregator-routing=true",
    ]


def binary() -> Path:
    out = subprocess.run(
        [str(SCRIPTS / "build-metrics-server"), "metrics-server"],
        check=True, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    return Path(out.stdout.strip().splitlines()[-1])


def argv(bin_path: Path, kubeconfig: Path, address: str, port: int, certs: Path) -> list[str]:
    return [
        str(bin_path),
        f"--bind-address={address}",
        f"--secure-port={port}",
        f"--cert-dir={certs}",
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--kubelet-insecure-tls",  # the kubelet's self-signed serving certificate
        "--kubelet-use-node-status-port",  # the test kubelet listens on a free port
        "--kubelet-preferred-address-types=InternalIP",
        f"--metric-resolution={RESOLUTION}",
        "--kubelet-request-timeout=5s",  # must be below the resolution
        "--v=1",
    ]


def registration(address: str, port: int) -> list[dict]:
    """The Service, its endpoints and the APIService that route metrics.k8s.io to it."""
    meta = {"name": SERVICE, "namespace": NAMESPACE}
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
            "metadata": {"name": GROUP_VERSION},
            "spec": {
                "service": {"name": SERVICE, "namespace": NAMESPACE, "port": 443},
                "group": "metrics.k8s.io",
                "version": "v1beta1",
                "insecureSkipTLSVerify": True,  # its self-signed certificate (--cert-dir)
                "groupPriorityMinimum": 100,
                "versionPriority": 100,
            },
        },
    ]


def start(cluster, kubeconfig: Path, address: str, free_port) -> None:
    """metrics-server as a component of the cluster, registered; returns once the
    APIService is Available (its first metrics follow within two resolutions)."""
    port = free_port()
    certs = cluster.base / "metrics-server"
    certs.mkdir(exist_ok=True)
    proc = cluster.spawn("metrics-server", argv(binary(), kubeconfig, address, port, certs))
    items = {"apiVersion": "v1", "kind": "List", "items": registration(address, port)}
    cluster.kubectl(kubeconfig, ["apply", "-f", "-"], stdin=json.dumps(items))
    jsonpath = "jsonpath={.status.conditions[?(@.type=='Available')].status}"
    cluster.wait(
        "the metrics API",
        lambda: "True" in cluster.kubectl(kubeconfig, ["get", "apiservice", GROUP_VERSION,
                                                       "-o", jsonpath]),
        proc, "metrics-server",
    )  # fmt: skip
    cluster.save(metrics_server_port=port)
