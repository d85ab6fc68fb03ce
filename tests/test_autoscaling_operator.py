"""The operator and the real HPA controller on the test control plane (kwok's fake node, no
metrics API): the operator applies the HPA owned by the Pipeline, leaves the Deployment's
replicas to it without fighting, copies the HPA's own reason when it cannot scale, and
goes back to ``replicas`` when autoscaling is removed (issue 28)."""

from __future__ import annotations

import json

import pytest

from tests.helpers.kube import Kubectl, wait_for
from tests.helpers.pipelines import pipeline, status, wait_phase

pytestmark = pytest.mark.cluster

AUTO = {"minReplicas": 2, "maxReplicas": 4, "metric": "cpu", "target": 50}


def replicas_owners(kubectl: Kubectl, name: str) -> list[str]:
    """The field managers of the Deployment's spec.replicas."""
    out = kubectl("get", "deployment", name, "-o", "json", "--show-managed-fields").stdout
    deployment = json.loads(out)
    return [
        f["manager"]
        for f in deployment["metadata"].get("managedFields") or []
        if "f:replicas" in ((f.get("fieldsV1") or {}).get("f:spec") or {})
    ]


def test_the_operator_owns_an_hpa_and_leaves_it_the_replicas(operator, kubectl: Kubectl) -> None:
    kubectl.apply(pipeline("auto", replicas=1, autoscaling=AUTO))
    wait_phase(kubectl, "auto", "Running", timeout=120)
    hpa = wait_for("the HPA", lambda: kubectl.get("hpa", "auto-engine"), 30)
    (owner,) = hpa["metadata"]["ownerReferences"]
    assert owner["kind"] == "Pipeline" and owner["name"] == "auto"
    assert hpa["spec"]["minReplicas"] == 2 and hpa["spec"]["maxReplicas"] == 4
    assert hpa["spec"]["scaleTargetRef"]["name"] == "auto-engine"
    deployment = kubectl.get("deployment", "auto-engine")
    # minReplicas at once, held by the hand-over manager, never by the operator's apply.
    assert deployment["spec"]["replicas"] == 2
    assert replicas_owners(kubectl, "auto-engine") == ["edgepipe-autoscaling-handover"]

    # No metrics API here: the status says why it cannot scale, in the HPA's own words.
    def inactive():
        st = status(kubectl, "auto")
        auto = st.get("autoscaling") or {}
        return st if auto.get("reason") == "FailedGetResourceMetric" else None

    st = wait_for("the HPA's reason in the status", inactive, 90)
    assert st["phase"] == "Running"
    cond = {c["type"]: c for c in st["conditions"]}["Autoscaling"]
    assert cond["status"] == "False" and cond["reason"] == "FailedGetResourceMetric"
    assert "metrics" in cond["message"]
    assert st["autoscaling"]["currentReplicas"] == 2
    get = kubectl("get", "pipeline", "auto", "-o", "yaml").stdout
    assert "FailedGetResourceMetric" in get

    # Someone else (the HPA) scales: the operator's next reconcile does not undo it.
    kubectl("scale", "deployment", "auto-engine", "--replicas=3")
    # A change to the engine's resources makes the operator apply the Deployment again.
    patch = {"spec": {"deployment": {"memory": "1100Mi"}}}
    kubectl("patch", "pipeline", "auto", "--type=merge", "-p", json.dumps(patch))
    wait_for(
        "the new generation's status",
        lambda: (
            status(kubectl, "auto").get("observedGeneration")
            == kubectl.get("pipeline", "auto")["metadata"]["generation"]
        ),
        60,
    )
    deployment = kubectl.get("deployment", "auto-engine")
    resources = deployment["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert resources["requests"]["memory"] == "1100Mi"
    assert deployment["spec"]["replicas"] == 3
    assert "edgepipe-operator" not in replicas_owners(kubectl, "auto-engine")

    # Autoscaling removed: the HPA goes, replicas are the spec's again, the status clears.
    patch = {"spec": {"deployment": {"autoscaling": None, "replicas": 1}}}
    kubectl("patch", "pipeline", "auto", "--type=merge", "-p", json.dumps(patch))
    wait_for("the HPA gone", lambda: kubectl.get("hpa", "auto-engine") is None, 60)
    wait_for(
        "replicas back to the spec's",
        lambda: kubectl.get("deployment", "auto-engine")["spec"]["replicas"] == 1,
        60,
    )
    st = wait_phase(kubectl, "auto", "Running", timeout=60)
    assert "autoscaling" not in st
    assert "Autoscaling" not in {c["type"] for c in st["conditions"]}
    assert "edgepipe-operator" in replicas_owners(kubectl, "auto-engine")


def test_an_invalid_autoscaling_is_refused_with_its_field(operator, kubectl: Kubectl) -> None:
    bad = pipeline("badauto", autoscaling={"minReplicas": 3, "maxReplicas": 2})
    # The apiserver takes it (the CRD checks each field alone); the operator names it.
    kubectl.apply(bad)
    st = wait_phase(kubectl, "badauto", "Error", timeout=60)
    assert "spec.deployment.autoscaling.maxReplicas: 2 is below minReplicas (3)" in st["message"]
    # The CRD's own schema refuses an unknown metric.
    other = pipeline("badmetric", autoscaling={"maxReplicas": 2, "metric": "rps"})
    proc = kubectl("apply", "-f", "-", stdin=json.dumps(other), check=False)
    assert proc.returncode != 0 and "spec.deployment.autoscaling.metric" in proc.stderr
