"""Past versions on the test control plane: each version's config kept whole in a
ControllerRevision, a rollback (spec.version, and the CLI) that the ConfigMap and the
rollout follow, a Publish of a past version, and split weights whose edit takes effect."""

from __future__ import annotations

import json

import pytest

from edgepipe.config import PipelineConfig
from tests.helpers.cli import ep
from tests.helpers.kube import wait_for
from tests.helpers.pipelines import SHA, pipeline, status, wait_phase
from tests.helpers.publishes import push_add1, wait_publish

pytestmark = pytest.mark.cluster


def steps(batch: str = "single", weight: float | None = None) -> list[dict]:
    step: dict = {
        "model": {"name": "yolov8n", "path": "/models/yolov8n.onnx", "sha256": SHA},
        "batchConfig": batch,
    }
    if weight is not None:
        other = {"name": "other", "path": "/models/other.onnx", "sha256": "b" * 64}
        step["split"] = {"weight": weight, "variants": [{"model": other, "weight": 1}]}
    return [step]


def served_config(kubectl, name: str) -> PipelineConfig:
    cm = kubectl.get("configmap", f"{name}-pipeline")
    return PipelineConfig.model_validate_json(cm["data"]["pipeline.json"])


def rollout_digest(kubectl, name: str) -> str:
    dep = kubectl.get("deployment", f"{name}-engine")
    return dep["spec"]["template"]["metadata"]["annotations"]["edgepipe.io/config-digest"]


def kept(kubectl, name: str) -> dict[str, dict]:
    revs = kubectl.items("controllerrevisions", selector=f"app.kubernetes.io/instance={name}")
    return {r["metadata"]["labels"]["edgepipe.io/version"]: r for r in revs}


def test_rollback_pins_a_kept_version_and_the_rollout_follows(
    operator, kubectl, cluster, namespace
) -> None:
    kubectl.apply(pipeline("hist", steps=steps("single")))
    v1 = wait_phase(kubectl, "hist", "Running")["version"]
    digest1 = rollout_digest(kubectl, "hist")
    kubectl.apply(pipeline("hist", steps=steps("batch")))
    v2 = wait_for("version 2", lambda: (v := status(kubectl, "hist").get("version")) != v1 and v)
    wait_phase(kubectl, "hist", "Running", version=v2)
    revisions = kept(kubectl, "hist")
    assert set(revisions) == {v1, v2}
    # The whole config is kept, owned by the Pipeline (so it goes when the Pipeline goes).
    assert PipelineConfig.model_validate(revisions[v1]["data"]).version == v1
    assert revisions[v1]["metadata"]["ownerReferences"][0]["kind"] == "Pipeline"
    assert revisions[v2]["revision"] > revisions[v1]["revision"]

    env = {"KUBECONFIG": str(cluster["kubeconfig"])}
    # The short version pipeline list shows is enough, as git takes a short hash.
    assert f" {v2[:8]} " in ep("pipeline", "list", "-n", namespace, env=env).stdout
    short = v1[:8]
    too_short = ep("pipeline", "rollback", "hist", "--to", v1[:7], "-n", namespace, env=env)
    assert too_short.returncode != 0 and "too short" in too_short.stderr
    proc = ep("pipeline", "rollback", "hist", "--to", short, "-n", namespace, "-o", "json", env=env)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["version"] == v1
    st = wait_phase(kubectl, "hist", "Running", version=v1, pinned=True)
    assert served_config(kubectl, "hist").version == v1
    assert served_config(kubectl, "hist").steps[0].batch_config == "single"
    assert rollout_digest(kubectl, "hist") == digest1
    assert st.get("message") is None

    # A version that was never kept: Error naming spec.version, and the kept ones.
    kubectl(
        "patch", "pipeline", "hist", "--type=merge",
        "-p", json.dumps({"spec": {"version": "00000000-0000-0000-0000-000000000000"}}),
    )  # fmt: skip
    st = wait_phase(kubectl, "hist", "Error")
    assert st["message"].startswith("spec.version: 00000000-0000-0000-0000-000000000000 is not")
    assert v1 in st["message"] and v2 in st["message"]

    proc = ep("pipeline", "rollback", "hist", "--unpin", "-n", namespace, env=env)
    assert proc.returncode == 0, proc.stderr
    wait_phase(kubectl, "hist", "Running", version=v2, pinned=False)
    assert served_config(kubectl, "hist").version == v2


def test_history_is_pruned_to_its_limit(operator, kubectl) -> None:
    for i, batch in enumerate(["single", "batch", "single"]):
        manifest = pipeline("short", steps=steps(batch), cpus=1 + i)
        manifest["spec"]["revisionHistoryLimit"] = 2
        kubectl.apply(manifest)
        wait_for(
            f"edit {i}",
            lambda n=i + 1: status(kubectl, "short").get("observedGeneration") == n,
        )
    wait_phase(kubectl, "short", "Running")
    assert len(kept(kubectl, "short")) == 2


def test_editing_split_weights_takes_effect(operator, kubectl) -> None:
    kubectl.apply(pipeline("ab", steps=steps(weight=3)))
    v1 = wait_phase(kubectl, "ab", "Running")["version"]
    digest = rollout_digest(kubectl, "ab")
    assert served_config(kubectl, "ab").steps[0].split.weight == 3
    kubectl.apply(pipeline("ab", steps=steps(weight=1)))
    wait_for("new weights", lambda: status(kubectl, "ab").get("version") not in (None, v1))
    wait_phase(kubectl, "ab", "Running")
    # A new version, a new ConfigMap and a rollout: the engines restart on the new weights.
    assert served_config(kubectl, "ab").steps[0].split.weight == 1
    assert rollout_digest(kubectl, "ab") != digest


def test_a_publish_of_a_past_version(operator, kubectl, auth_registry, models_dir) -> None:
    model = push_add1(auth_registry, models_dir)
    kubectl(
        "create", "secret", "generic", "hist-creds",
        f"--from-literal=username={auth_registry.username}",
        f"--from-literal=password={auth_registry.password}",
    )  # fmt: skip
    ref = {"name": "add1", "url": model.reference, "sha256": model.sha256}
    kubectl.apply(pipeline("past", steps=[{"model": ref}]))
    v1 = wait_phase(kubectl, "past", "Running")["version"]
    kubectl.apply(pipeline("past", steps=[{"model": ref, "batchConfig": "batch"}]))
    wait_for("version 2", lambda: status(kubectl, "past").get("version") not in (None, v1))
    registry = {
        "url": f"{auth_registry.host}/edge",
        "secretRef": {"name": "hist-creds"},
        "plainHttp": True,
    }
    kubectl.apply(
        {
            "apiVersion": "edgepipe.io/v1alpha1",
            "kind": "Publish",
            "metadata": {"name": "old"},
            "spec": {"pipeline": "past", "version": v1, "registry": registry},
        }
    )
    st = wait_publish(kubectl, "Published", name="old")
    assert st["pipelineVersion"] == v1
    assert st["pipelineUrl"].endswith(f"/edge/pipelines/past:{v1}")
    kubectl.apply(
        {
            "apiVersion": "edgepipe.io/v1alpha1",
            "kind": "Publish",
            "metadata": {"name": "never"},
            "spec": {
                "pipeline": "past",
                "version": "00000000-0000-0000-0000-000000000000",
                "registry": registry,
            },
        }
    )
    st = wait_publish(kubectl, "Failed", name="never")
    assert st["reason"] == "VersionNotAvailable" and v1 in st["conditions"][0]["message"], st
