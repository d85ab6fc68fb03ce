"""The Publish reconciler against the real apiserver, registry and helm."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from edgepipe import oci
from edgepipe.client.cluster import Client, ClusterError
from tests.helpers.helm import HELM
from tests.helpers.kube import wait_for
from tests.helpers.pipelines import pipeline, status, wait_phase
from tests.helpers.publishes import apply_publish, publish_status, push_add1, wait_publish

pytestmark = pytest.mark.cluster


def setup(kubectl, reg, models_dir, *, password: str | None = None, name: str = "pub"):
    model = push_add1(reg, models_dir)
    kubectl(
        "create",
        "secret",
        "generic",
        "registry-creds",
        f"--from-literal=username={reg.username}",
        f"--from-literal=password={password or reg.password}",
    )
    steps = [{"model": {"name": "add1", "url": model.reference, "sha256": model.sha256}}]
    kubectl.apply(pipeline("adder", steps=steps))
    wait_phase(kubectl, "adder", "Running")
    apply_publish(kubectl, reg, name, engineConfig={"replicas": 1, "cpus": 2, "memory": "256Mi"})
    return model


def test_publish_reaches_published_with_every_field(
    operator, kubectl, auth_registry, models_dir, cluster, namespace, start_engine, tmp_path
) -> None:
    setup(kubectl, auth_registry, models_dir)
    st = wait_publish(kubectl, "Published")
    version = kubectl.get("pipeline", "adder")["status"]["version"]
    host = auth_registry.host
    assert st["pipelineVersion"] == version
    assert st["pipelineUrl"] == f"{host}/edge/pipelines/adder:{version}"
    assert st["helmChartUrl"] == f"{host}/edge/charts/adder"
    assert st["helmChartReference"].startswith(f"{host}/edge/charts/adder@sha256:")
    assert st["helmChartVersion"] == f"0.0.1-{version}"
    assert st["engineUrl"] == "edgepipe:test"
    assert st["engineConfig"] == {"replicas": 1, "cpus": 2.0, "memory": "256Mi", "gpus": 0}
    assert st["createdAt"] and st["updatedAt"]
    assert {c["type"]: c["status"] for c in st["conditions"]}["Ready"] == "True"
    assert "-e CONFIG_CPUS=2" in st["dockerRunCommand"]
    pst = wait_for(
        "the pipeline to list its publish",
        lambda: (s := kubectl.get("pipeline", "adder")["status"]).get("published") and s,
    )
    assert pst["publishes"] == [
        {
            "name": "pub",
            "version": version,
            "phase": "Published",
            "helmChartReference": st["helmChartReference"],
        }
    ]
    out = kubectl("get", "publishes").stdout
    assert "adder" in out and "Published" in out and f"0.0.1-{version}" in out

    show = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgepipe.cli",
            "publish",
            "show",
            "pub",
            "-n",
            namespace,
            "--kubeconfig",
            str(cluster["kubeconfig"]),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert show.returncode == 0, show.stderr
    assert "docker run -p 8080:8080 -p 8081:8081" in show.stdout and "services:" in show.stdout
    assert (
        f"helm install --values local-values.yaml adder oci://{st['helmChartUrl']}" in show.stdout
    )

    # The chart from the registry installs into the cluster with only the three values.
    values = f"{cluster['base']}/local-values-{namespace}.yaml"
    with open(values, "w") as f:
        f.write(
            f"ociRegistry:\n  registry: {host}\n  username: {auth_registry.username}\n"
            f"  password: {auth_registry.password}\n  plainHttp: true\n"
        )
    env = {
        **os.environ,
        "KUBECONFIG": str(cluster["kubeconfig"]),
        "HELM_CACHE_HOME": f"{cluster['base']}/helm/cache",
        "HELM_CONFIG_HOME": f"{cluster['base']}/helm/config",
        "HELM_DATA_HOME": f"{cluster['base']}/helm/data",
    }
    proc = subprocess.run(
        [
            HELM,
            "install",
            "--values",
            values,
            "edge",
            f"oci://{st['helmChartUrl']}",
            "--version",
            st["helmChartVersion"],
            "--plain-http",
            "--username",
            auth_registry.username,
            "--password",
            auth_registry.password,
            "-n",
            namespace,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert kubectl.get("service", "engine-svc")["spec"]["ports"][0]["port"] == 8080
    assert kubectl.get("secret", "edge-adder-oci") is not None
    dep = kubectl.get("deployment", "edge-adder")
    env_vars = {e["name"]: e for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env_vars["PIPELINE_URL"]["value"] == st["pipelineUrl"]
    assert env_vars["CONFIG_CPUS"]["value"] == "2"

    # The end of the journey: an engine with only that env pulls the pipeline and answers.
    from edgepipe.client import EngineClient
    from tests.helpers.publishing import edge_env

    edge = start_engine(env=edge_env({"status": st}, auth_registry, tmp_path / "cache", "2"))

    (rec,) = EngineClient(edge.url).infer_records("adder", [{"x": [[1, 2, 3, 4]]}])
    assert rec["outputs"][0]["Float"]["data"] == [2.0, 3.0, 4.0, 5.0]
    assert rec["pipeline_name"] == "adder"


def test_bad_credentials_fail_the_publish(operator, kubectl, auth_registry, models_dir) -> None:
    setup(kubectl, auth_registry, models_dir, password="not-the-password")
    st = wait_publish(kubectl, "Failed")
    assert st["reason"] == "Unauthorized"
    assert "refused the credentials" in st["message"] and "registry-creds" in st["message"]

    # The Pipeline lists the Publish; deleted, it leaves the list at once.
    def listed() -> list[str]:
        return [p["name"] for p in status(kubectl, "adder").get("publishes") or []]

    wait_for("the pipeline to list its publish", lambda: listed() == ["pub"])
    kubectl("delete", "publish", "pub")
    wait_for("the pipeline to forget the deleted publish", lambda: listed() == [], timeout=30)
    assert status(kubectl, "adder")["published"] is False
    # An entry whose Publish went while no operator watched goes at the next reconcile.
    ghost = {"status": {"publishes": [{"name": "ghost", "phase": "Failed"}]}}
    kubectl("patch", "pipeline", "adder", "--subresource=status", "--type=merge", "-p",
            json.dumps(ghost))  # fmt: skip
    assert listed() == ["ghost"]
    kubectl("patch", "pipeline", "adder", "--type=merge", "-p",
            json.dumps({"spec": {"deployment": {"replicas": 2}}}))  # fmt: skip
    wait_for("the ghost entry to be dropped", lambda: listed() == [], timeout=30)


def test_a_publish_of_a_missing_pipeline_says_so_at_once(
    operator, kubectl, auth_registry, cluster, namespace
) -> None:
    apply_publish(kubectl, auth_registry, "orphan")  # no Pipeline "adder" in this namespace
    st = wait_for(
        "the publish to say why it waits",
        lambda: (s := publish_status(kubectl, "orphan")).get("reason") and s,
        timeout=15,
    )
    assert st["phase"] == "PendingPublish" and st["reason"] == "PipelineNotFound"
    assert f"pipeline 'adder' not found in namespace {namespace}" in st["message"]
    client = Client(kubeconfig=str(cluster["kubeconfig"]), namespace=namespace)
    with pytest.raises(ClusterError) as err:
        client.publish("orphan2", "adder", f"{auth_registry.host}/edge", timeout=8)
    assert "still PendingPublish after 8s (PipelineNotFound: pipeline 'adder' not found" in str(
        err.value
    )


def test_a_registry_that_is_down_is_retried(operator, kubectl, own_registry, models_dir) -> None:
    push_add1(own_registry, models_dir)
    own_registry.stop()
    # The step pins the sha256, so the Pipeline deploys without the registry.
    client_ref = f"oci://{own_registry.host}/edge/models/add1:0"
    sha = oci.file_digest(models_dir / "add1.onnx")[0].removeprefix("sha256:")
    kubectl(
        "create",
        "secret",
        "generic",
        "registry-creds",
        f"--from-literal=username={own_registry.username}",
        f"--from-literal=password={own_registry.password}",
    )
    steps = [{"model": {"name": "add1", "url": client_ref, "sha256": sha}}]
    kubectl.apply(pipeline("adder", steps=steps))
    wait_phase(kubectl, "adder", "Running")
    kubectl.apply(
        {
            "apiVersion": "edgepipe.io/v1alpha1",
            "kind": "Publish",
            "metadata": {"name": "pub"},
            "spec": {
                "pipeline": "adder",
                "registry": {
                    "url": f"{own_registry.host}/edge",
                    "secretRef": {"name": "registry-creds"},
                    "plainHttp": True,
                },
            },
        }
    )
    st = wait_for(
        "a retry after the registry failed",
        lambda: "retrying" in ((s := publish_status(kubectl)).get("message") or "") and s,
        timeout=60,
    )
    assert st["phase"] == "PendingPublish" and st["reason"] == "RegistryUnavailable"
    # The model tag the step names does not exist; push it under that tag once it is back.
    own_registry.start()
    client = oci.Client(
        own_registry.host,
        oci.Credentials(own_registry.username, own_registry.password),
        plain_http=True,
    )
    oci.push_model(
        client, models_dir / "add1.onnx", name="add1", repository="edge/models/add1", version="0"
    )
    st = wait_publish(kubectl, "Published", timeout=120)
    assert st["pipelineUrl"].startswith(f"{own_registry.host}/edge/pipelines/adder:")
    assert json.dumps(st)  # all fields serialisable
