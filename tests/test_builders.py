"""The operator's pure builders: manifests and status from a Pipeline spec."""

from __future__ import annotations

import pytest
from edgepipe_operator import builders as b

from edgepipe.config import ConfigError, PipelineConfig

SHA = "c" * 64


def spec(**changes) -> dict:
    base = {
        "deployed": True,
        "steps": [
            {
                "model": {"name": "yolov8n", "path": "/models/y.onnx", "sha256": SHA},
                "tensorFields": ["images"],
            }
        ],
        "deployment": {"replicas": 2, "cpus": 1.5, "memory": "2Gi", "gpus": 1},
    }
    base.update(changes)
    return base


def test_resolve_gives_a_versioned_config() -> None:
    parsed = b.parse_spec(spec())
    config = b.resolve_pipeline("demo", parsed)
    assert isinstance(config, PipelineConfig) and config.version
    assert config.engine.cpus == 1.5 and config.engine.gpus == 1
    assert b.resolve_pipeline("demo", b.parse_spec(spec())).version == config.version
    # Replicas are not part of the pipeline: scaling keeps the version.
    scaled = spec(deployment={"replicas": 5, "cpus": 1.5, "memory": "2Gi", "gpus": 1})
    assert b.resolve_pipeline("demo", b.parse_spec(scaled)).version == config.version


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"steps": []}, "spec.steps"),
        (
            {"steps": [{"model": {"name": "m", "path": "/x"}, "batchConfig": "many"}]},
            "spec.steps[0].batchConfig",
        ),
        ({"deployment": {"replicas": -1}}, "spec.deployment.replicas"),
    ],
)
def test_bad_specs_name_the_field(changes, field) -> None:
    with pytest.raises(ConfigError) as info:
        b.parse_spec(spec(**changes))
    assert info.value.field == field


def test_duplicate_step_names_are_a_config_error() -> None:
    step = {"model": {"name": "m", "path": "/x"}}
    with pytest.raises(ConfigError, match="repeats the step name"):
        b.resolve_pipeline("demo", b.parse_spec(spec(steps=[step, step])))


def test_resolver_errors_propagate() -> None:
    def resolver(field, ref):
        raise ConfigError(f"{field}.url: unreachable", f"{field}.url")

    with pytest.raises(ConfigError, match=r"spec.steps\[0\].model.url"):
        b.resolve_pipeline("demo", b.parse_spec(spec()), resolver)


def test_rules_over_unknown_outputs_are_a_config_error() -> None:
    """A postprocess answers detections, known without the model; other outputs once the
    resolver has read them (an oci:// model's manifest)."""
    rule = [{"name": "sure", "expr": "any(boxes[:, 4] > 0.9)"}]
    step = spec()["steps"][0]
    detect = spec(steps=[{**step, "postprocess": {"kind": "yolov8"}}], validations=rule)
    with pytest.raises(ConfigError) as info:
        b.resolve_pipeline("demo", b.parse_spec(detect))
    assert info.value.field == "spec.validations[0].expr"
    assert info.value.message == (
        "spec.validations[0].expr: unknown name(s) boxes; the outputs are detections"
    )
    raw = b.parse_spec(spec(validations=rule))
    assert b.resolve_pipeline("demo", raw).version  # the model's outputs are not known here
    with pytest.raises(ConfigError, match="the outputs are output0"):
        b.resolve_pipeline("demo", raw, outputs_of=lambda where, ref: ["output0"])


def test_deployment_manifest() -> None:
    parsed = b.parse_spec(spec())
    config = b.resolve_pipeline("demo", parsed)
    dep = b.build_deployment(config, parsed, "ns", image="edgepipe:1", pull_policy="Never")
    assert dep["metadata"]["name"] == "demo-engine" and dep["metadata"]["namespace"] == "ns"
    assert dep["spec"]["replicas"] == 2
    assert dep["spec"]["selector"]["matchLabels"] == b.selector_labels("demo")
    pod = dep["spec"]["template"]
    assert pod["metadata"]["labels"]["app.kubernetes.io/version"] == config.version
    assert pod["metadata"]["annotations"][b.DIGEST_ANNOTATION] == b.config_digest(config)
    (c,) = pod["spec"]["containers"]
    assert c["image"] == "edgepipe:1" and c["imagePullPolicy"] == "Never"
    assert c["args"] == ["--config", "/etc/edgepipe/pipeline.json"]
    env = {e["name"]: e["value"] for e in c["env"]}
    assert env["CONFIG_CPUS"] == "2"  # 1.5 cores: two threads
    assert c["resources"]["limits"] == {"cpu": "1500m", "memory": "2Gi", "nvidia.com/gpu": "1"}
    assert c["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert c["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert {v["name"] for v in pod["spec"]["volumes"]} == {"pipeline-config", "model-cache"}


def test_configmap_holds_the_config_and_service_selects_the_pods() -> None:
    config = b.resolve_pipeline("demo", b.parse_spec(spec()))
    cm = b.build_configmap(config, "ns")
    assert PipelineConfig.model_validate_json(cm["data"]["pipeline.json"]) == config
    svc = b.build_service("demo", "ns", config.version)
    assert svc["metadata"]["name"] == "demo-engine"
    assert svc["spec"]["selector"] == b.selector_labels("demo")
    assert [(p["name"], p["port"], p["targetPort"]) for p in svc["spec"]["ports"]] == [
        ("http", 8080, "http"),
        ("grpc", 8081, "grpc"),
    ]
    assert b.inference_url("demo", "ns") == "http://demo-engine.ns.svc:8080/pipelines/demo"


def test_an_edit_changes_the_rollout_digest() -> None:
    a = b.resolve_pipeline("demo", b.parse_spec(spec()))
    edited = spec()
    edited["steps"][0]["batchConfig"] = "batch"
    c = b.resolve_pipeline("demo", b.parse_spec(edited))
    assert a.version != c.version and b.config_digest(a) != b.config_digest(c)


def test_version_history_and_conditions() -> None:
    h = b.record_version(None, "v1", "d1", "t1")
    h = b.record_version(h, "v2", "d2", "t2")
    h = b.record_version(h, "v1", "d1", "t3")
    assert [(x["version"], x["createdAt"]) for x in h] == [("v1", "t1"), ("v2", "t2")]
    old = [b.condition("Ready", False, "X", "m", "t0", 1)]
    new = b.merge_conditions(old, [b.condition("Ready", False, "Y", "m2", "t1", 1)])
    assert new[0]["lastTransitionTime"] == "t0" and new[0]["reason"] == "Y"
    new = b.merge_conditions(old, [b.condition("Ready", True, "Y", "m2", "t1", 1)])
    assert new[0]["lastTransitionTime"] == "t1"


def test_deployment_phase() -> None:
    assert b.deployment_phase(None)[0] == "Deploying"
    dep = {
        "metadata": {"generation": 2},
        "spec": {"replicas": 2},
        "status": {
            "observedGeneration": 2,
            "replicas": 2,
            "readyReplicas": 2,
            "availableReplicas": 2,
            "updatedReplicas": 2,
        },
    }
    assert b.deployment_phase(dep) == ("Running", {"replicas": 2, "readyReplicas": 2})
    dep["status"]["observedGeneration"] = 1
    assert b.deployment_phase(dep)[0] == "Deploying"
    assert b.cpu_quantity(0.25) == "250m" and b.cpu_quantity(2) == "2"
