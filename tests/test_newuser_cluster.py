"""What a new user hits with a cluster: a missing operator, a registry with a password and
no Secret, reasons shown where people look, and output that fits a terminal."""

from __future__ import annotations

import json
import os
import time

import pytest

from tests.helpers.cli import ep, one_line_error
from tests.helpers.kube import Kubectl, wait_for
from tests.helpers.publishes import push_add1

pytestmark = pytest.mark.cluster


def kube(cluster: dict, namespace: str) -> list[str]:
    return ["--kubeconfig", str(cluster["kubeconfig"]), "-n", namespace]


def pipeline(name: str, url: str, secret: str | None = None) -> dict:
    spec: dict = {"deployed": True, "steps": [{"model": {"name": "add1", "url": url}}]}
    if secret:
        spec["registry"] = {"secretRef": {"name": secret}, "plainHttp": True}
    return {
        "apiVersion": "edgepipe.io/v1alpha1",
        "kind": "Pipeline",
        "metadata": {"name": name},
        "spec": spec,
    }


# This module's first test runs before its operator starts (the fixture is module-scoped
# and the later tests ask for it): a cluster with no operator at all.
def test_a_missing_operator_is_named(cluster, namespace, kubectl: Kubectl) -> None:
    kubectl.apply(pipeline("lonely", "oci://127.0.0.1:1/x/models/add1:1"))
    t0 = time.monotonic()
    proc = ep("pipeline", "deploy", "lonely", "--timeout", "120", *kube(cluster, namespace))
    one_line_error(proc, "no edgepipe operator seems to be running")
    assert "edgepipe-operator run" in proc.stderr
    assert time.monotonic() - t0 < 40  # it did not sit out the whole timeout


def test_no_credentials_for_a_password_registry(
    operator, cluster, namespace, kubectl: Kubectl, auth_registry, models_dir
) -> None:
    model = push_add1(auth_registry, models_dir)
    kubectl.apply(pipeline("locked", model.reference))

    def errored():
        st = ((kubectl.get("pipeline", "locked") or {}).get("status")) or {}
        return st if st.get("phase") == "Error" else None

    st = wait_for("the Pipeline in Error", errored, timeout=60)
    assert "needs credentials" in st["message"] and "spec.steps[0].model.url" in st["message"]
    time.sleep(6)  # no retry loop: the one failure stays one
    events = kubectl.items("events")
    warnings = [e for e in events if e["involvedObject"]["name"] == "locked"]
    assert len([e for e in warnings if "needs credentials" in e["message"]]) == 1
    # pipeline get shows the message without kubectl describe.
    got = ep("pipeline", "get", "locked", *kube(cluster, namespace))
    assert "Message:" in got.stdout and "needs credentials" in got.stdout
    # A Publish without a Secret on that registry: Failed at once, with the reason.
    kubectl("create", "secret", "generic", "model-registry",
            f"--from-literal=username={auth_registry.username}",
            f"--from-literal=password={auth_registry.password}")  # fmt: skip
    kubectl.apply(pipeline("open", model.reference, secret="model-registry"))
    kubectl.apply(
        {
            "apiVersion": "edgepipe.io/v1alpha1",
            "kind": "Publish",
            "metadata": {"name": "nosecret"},
            "spec": {
                "pipeline": "open",
                "registry": {"url": f"{auth_registry.host}/e", "plainHttp": True},
            },
        }
    )

    def failed():
        st = ((kubectl.get("publish", "nosecret") or {}).get("status")) or {}
        return st if st.get("phase") == "Failed" else None

    st = wait_for("the Publish Failed", failed, timeout=90)
    assert st["reason"] == "CredentialsRequired" and "--secret" in st["message"]
    shown = ep("publish", "get", "nosecret", *kube(cluster, namespace))
    assert "CredentialsRequired" in shown.stdout and "needs credentials" in shown.stdout


def test_names_that_are_not_there_and_kinds_that_do_not_fit(
    operator, cluster, namespace, tmp_path
) -> None:
    args = kube(cluster, namespace)
    show = ep("publish", "show", "typo", *args)
    one_line_error(show, f"publish 'typo' in namespace {namespace}: not found")
    assert "publishe" not in show.stderr and "HTTP response headers" not in show.stderr
    one_line_error(
        ep("pipeline", "logs", "ghost", *args), f"pipeline 'ghost' in namespace {namespace}"
    )
    config = tmp_path / "config.yaml"
    config.write_text("kind: PipelineConfig\nname: p\nsteps: [{model: {name: m, path: m.onnx}}]\n")
    one_line_error(
        ep("pipeline", "apply", str(config), *args), "this is a PipelineConfig: the engine reads"
    )


def test_a_missing_namespace_is_named(cluster, tmp_path) -> None:
    from edgepipe.client.cluster import Client, ClusterError

    manifest = tmp_path / "p.yaml"
    manifest.write_text(json.dumps(pipeline("p", "oci://127.0.0.1:1/x/m:1")))
    args = ["--kubeconfig", str(cluster["kubeconfig"]), "-n", "nosuchns"]
    said = "namespace 'nosuchns' does not exist"
    one_line_error(ep("pipeline", "apply", str(manifest), *args), said)
    one_line_error(ep("pipeline", "get", "p", *args), said)
    one_line_error(ep("publish", "list", *args), said)
    client = Client(kubeconfig=str(cluster["kubeconfig"]), namespace="nosuchns")
    for call in (lambda: client.deploy("p", timeout=5), lambda: client.get("pipelines", "p")):
        with pytest.raises(ClusterError, match=said):
            call()


def test_output_fits_a_terminal_and_warns_once(operator, cluster, namespace, kubectl) -> None:
    for i in range(2):
        kubectl.apply(pipeline(f"a-rather-long-pipeline-name-{i}", "oci://127.0.0.1:1/x/m:1"))
    proc = ep("pipeline", "list", *kube(cluster, namespace))
    assert proc.returncode == 0
    assert max(len(line) for line in proc.stdout.splitlines()) <= 80, proc.stdout
    # The test kubeconfig skips TLS verification: one line, in words, not urllib3's.
    assert proc.stderr.count("skips TLS verification") == 1
    assert "InsecureRequestWarning" not in proc.stderr
    quiet = ep("pipeline", "list", *kube(cluster, namespace), env={"PYTHONWARNINGS": "ignore"})
    assert "TLS" not in quiet.stderr
    wide = ep("pipeline", "list", "-o", "wide", *kube(cluster, namespace))
    assert "URL" in wide.stdout and "MESSAGE" in wide.stdout
    assert os.environ.get("PYTHONWARNINGS") != "ignore"
