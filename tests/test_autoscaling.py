"""Autoscaling (issue 28) without a cluster: the spec's validation, the HPA the operator
builds, the replicas hand-over, and the HPA's conditions read back into the status."""

from __future__ import annotations

import pytest
from edgepipe_operator import builders
from edgepipe_operator.hpa import (
    HANDOVER_MANAGER,
    autoscaling_condition,
    build_hpa,
    build_replicas_handover,
    handover_replicas,
    hpa_status,
    operator_owns_replicas,
)
from edgepipe_operator.kube import FIELD_MANAGER

from edgepipe.config import ConfigError
from edgepipe.manifests import check_manifest, parse_pipeline_spec
from edgepipe.resources import Autoscaling

SHA = "c" * 64


def spec(autoscaling: dict | None, **deployment) -> dict:
    return {
        "deployed": True,
        "steps": [{"model": {"name": "add1", "path": "/models/a.onnx", "sha256": SHA}}],
        "deployment": {"cpus": 0.5, **deployment, "autoscaling": autoscaling},
    }


@pytest.mark.parametrize(
    ("autoscaling", "field", "words"),
    [
        ({"minReplicas": 3, "maxReplicas": 2}, "maxReplicas", "below minReplicas (3)"),
        ({"maxReplicas": 2, "target": 150}, "target", "from 1 to 100"),
        ({"maxReplicas": 2, "target": 0}, "target", "greater than 0"),
        ({"maxReplicas": 2, "target": 50.5}, "target", "whole number"),
        ({"maxReplicas": 2, "metric": "inflight", "target": 0}, "target", "greater than 0"),
        ({"maxReplicas": 2, "metric": "rps"}, "metric", "'cpu' or 'inflight'"),
        ({"minReplicas": 0, "maxReplicas": 2}, "minReplicas", "greater than or equal to 1"),
        ({"minReplicas": 1}, "maxReplicas", "required"),
    ],
)
def test_a_bad_autoscaling_spec_is_refused_with_the_field_named(
    autoscaling: dict, field: str, words: str
) -> None:
    for strict in (False, True):  # the operator's parse, and the CLI's (JSON types)
        with pytest.raises(ConfigError) as err:
            parse_pipeline_spec(spec(autoscaling), strict=strict)
        assert err.value.field == f"spec.deployment.autoscaling.{field}"
        assert words in err.value.message


def test_the_cli_check_refuses_it_before_the_cluster() -> None:
    manifest = {
        "apiVersion": "edgepipe.io/v1alpha1",
        "kind": "Pipeline",
        "metadata": {"name": "p"},
        "spec": spec({"minReplicas": 4, "maxReplicas": 3}),
    }
    with pytest.raises(ConfigError, match=r"spec\.deployment\.autoscaling\.maxReplicas"):
        check_manifest(manifest)


def test_an_inflight_target_may_be_fractional() -> None:
    auto = parse_pipeline_spec(
        spec({"maxReplicas": 3, "metric": "inflight", "target": 2.5})
    ).deployment.autoscaling
    assert auto == Autoscaling(max_replicas=3, metric="inflight", target=2.5)


def test_the_hpa_scales_the_engine_deployment_on_cpu() -> None:
    behavior = {"scaleDown": {"stabilizationWindowSeconds": 5}}
    auto = Autoscaling(min_replicas=1, max_replicas=3, target=50, behavior=behavior)
    hpa = build_hpa("demo", "ns", "v1", auto)
    assert hpa["apiVersion"] == "autoscaling/v2" and hpa["kind"] == "HorizontalPodAutoscaler"
    assert hpa["metadata"]["name"] == "demo-engine" and hpa["metadata"]["namespace"] == "ns"
    assert hpa["metadata"]["labels"][builders.PIPELINE_LABEL] == "demo"
    assert hpa["spec"] == {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "demo-engine"},
        "minReplicas": 1,
        "maxReplicas": 3,
        "metrics": [
            {
                "type": "Resource",
                "resource": {
                    "name": "cpu",
                    "target": {"type": "Utilization", "averageUtilization": 50},
                },
            }
        ],
        "behavior": behavior,
    }


def test_the_inflight_hpa_reads_the_engines_gauge_per_pod() -> None:
    hpa = build_hpa("demo", "ns", None, Autoscaling(max_replicas=4, metric="inflight", target=2.5))
    assert hpa["spec"]["metrics"] == [
        {
            "type": "Pods",
            "pods": {
                "metric": {"name": "edgepipe_inflight_requests"},
                "target": {"type": "AverageValue", "averageValue": "2500m"},
            },
        }
    ]
    assert "behavior" not in hpa["spec"]


def test_the_deployment_leaves_its_replicas_to_the_autoscaler() -> None:
    def deployment(raw: dict) -> dict:
        parsed = parse_pipeline_spec(raw)
        config = builders.resolve_pipeline("demo", parsed)
        return builders.build_deployment(config, parsed, "ns", image="engine:1")

    assert deployment(spec(None, replicas=2))["spec"]["replicas"] == 2
    assert "replicas" not in deployment(spec({"maxReplicas": 3}, replicas=2))["spec"]


def managed(manager: str, operation: str, replicas: bool) -> dict:
    fields = {"f:spec": {"f:replicas": {}} if replicas else {"f:template": {}}}
    return {"manager": manager, "operation": operation, "fieldsV1": fields}


def test_the_replicas_are_handed_over_only_while_the_operator_owns_them() -> None:
    auto = Autoscaling(min_replicas=2, max_replicas=4)
    ours = {"metadata": {"managedFields": [managed(FIELD_MANAGER, "Apply", True)]}}
    assert operator_owns_replicas(ours)
    # Held at their value, within min and max.
    assert handover_replicas({**ours, "spec": {"replicas": 1}}, auto) == 2
    assert handover_replicas({**ours, "spec": {"replicas": 3}}, auto) == 3
    assert handover_replicas({**ours, "spec": {"replicas": 9}}, auto) == 4
    # The HPA scaled them already: nothing to hand over.
    hpa_owned = {
        "metadata": {
            "managedFields": [
                managed(FIELD_MANAGER, "Apply", False),
                managed("kube-controller-manager", "Update", True),
            ]
        },
        "spec": {"replicas": 3},
    }
    assert not operator_owns_replicas(hpa_owned)
    assert handover_replicas(hpa_owned, auto) is None
    # A new Deployment starts at the default 1: raised to minReplicas at once.
    assert handover_replicas(None, auto) == 2
    assert handover_replicas(None, Autoscaling(max_replicas=3)) is None
    assert build_replicas_handover("demo", "ns", 2) == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "demo-engine", "namespace": "ns"},
        "spec": {"replicas": 2},
    }
    assert HANDOVER_MANAGER != FIELD_MANAGER


def hpa(conditions: list[tuple[str, str, str]], **status) -> dict:
    conds = [{"type": t, "status": s, "reason": r, "message": f"{r}!"} for t, s, r in conditions]
    return {"status": {"conditions": conds, **status}}


def test_the_status_copies_why_the_hpa_cannot_scale() -> None:
    broken = hpa(
        [
            ("AbleToScale", "True", "SucceededGetScale"),
            ("ScalingActive", "False", "FailedGetResourceMetric"),
        ],
        currentReplicas=1,
        desiredReplicas=0,
    )
    status = hpa_status(broken)
    assert status["reason"] == "FailedGetResourceMetric"
    assert status["message"] == "FailedGetResourceMetric!"
    assert autoscaling_condition(status) == (
        False,
        "FailedGetResourceMetric",
        "FailedGetResourceMetric!",
    )
    cannot_scale = hpa([("AbleToScale", "False", "FailedGetScale")])
    assert hpa_status(cannot_scale)["reason"] == "FailedGetScale"


def test_the_status_shows_current_and_desired_replicas_and_the_metric() -> None:
    working = hpa(
        [
            ("AbleToScale", "True", "ReadyForNewScale"),
            ("ScalingActive", "True", "ValidMetricFound"),
        ],
        currentReplicas=2,
        desiredReplicas=3,
        currentMetrics=[
            {"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 91}}}
        ],
    )
    status = hpa_status(working)
    assert status == {
        "currentReplicas": 2,
        "desiredReplicas": 3,
        "current": "91%",
        "reason": None,
        "message": None,
    }
    assert autoscaling_condition(status) == (True, "ScalingActive", "2 current, 3 desired")
    assert hpa_status(hpa([]))["reason"] == "Waiting"
    assert hpa_status(None)["reason"] == "NoAutoscaler"


def test_the_clients_deploy_patch_names_every_field() -> None:
    from edgepipe.manifests import autoscaling_patch

    patch = autoscaling_patch({"maxReplicas": 3})
    # behavior as null: a merge patch then removes one an earlier deploy set.
    assert patch == {
        "minReplicas": 1,
        "maxReplicas": 3,
        "metric": "cpu",
        "target": 70,
        "behavior": None,
    }
    assert autoscaling_patch(False) is None
    with pytest.raises(ConfigError, match=r"spec\.deployment\.autoscaling\.maxReplicas"):
        autoscaling_patch({"minReplicas": 5, "maxReplicas": 3})


def test_pipeline_get_shows_current_and_desired_replicas_and_why_not() -> None:
    from edgepipe.cli.pipeline import _details

    obj = {
        "metadata": {"name": "demo"},
        "spec": {"deployment": {"autoscaling": {"maxReplicas": 4, "target": 70}}},
        "status": {
            "phase": "Running",
            "deployed": True,
            "replicas": 2,
            "readyReplicas": 2,
            "autoscaling": {"currentReplicas": 2, "desiredReplicas": 3, "current": "91%"},
        },
    }
    assert "Scaling:  2 current, 3 desired (1-4); cpu 91% of target 70%" in _details(obj)
    obj["status"]["autoscaling"] = {
        "currentReplicas": 1,
        "desiredReplicas": 1,
        "reason": "FailedGetResourceMetric",
        "message": "unable to get metrics",
    }
    assert _details(obj).endswith(
        "cpu ? of target 70%; cannot scale: FailedGetResourceMetric: unable to get metrics"
    )
    del obj["status"]["autoscaling"]
    assert "Scaling" not in _details(obj)


def test_a_scale_up_keeps_an_autoscaled_pipeline_running_but_a_rollout_does_not() -> None:
    def deployment(want: int, **status) -> dict:
        return {
            "metadata": {"generation": 3},
            "spec": {"replicas": want},
            "status": {"observedGeneration": 3, **status},
        }

    # The HPA asked for 3; 1 serves, 2 start; all of the current template.
    scaling = deployment(3, replicas=3, updatedReplicas=3, availableReplicas=1, readyReplicas=1)
    assert builders.deployment_phase(scaling, autoscaled=True)[0] == "Running"
    assert builders.deployment_phase(scaling)[0] == "Deploying"
    # A new version rolling out (an old pod left): Deploying either way.
    rolling = deployment(2, replicas=3, updatedReplicas=1, availableReplicas=2, readyReplicas=2)
    assert builders.deployment_phase(rolling, autoscaled=True)[0] == "Deploying"
    # Nothing serving yet: Deploying.
    empty = deployment(1, replicas=1, updatedReplicas=1, availableReplicas=0)
    assert builders.deployment_phase(empty, autoscaled=True)[0] == "Deploying"
