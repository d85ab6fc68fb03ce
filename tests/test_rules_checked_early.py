"""Mistakes named where the config is resolved, in the user's words: validations that read an
output the pipeline does not answer (publish push, pipeline apply), every bad field of a
document (not the first and "(and 1 more)"), no pydantic or Go formatting."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from edgepipe import oci
from edgepipe.config import MAX_ERRORS, ConfigError, ModelRef, PipelineConfig, Step, parse_config
from edgepipe.config import YoloPostprocess as Yolo
from edgepipe.manifests import check_manifest
from edgepipe.outputs import check_validations, local_outputs, readable_outputs
from tests.helpers.cli import ep, one_line_error

RULE = "any(boxes[:, 4] > 0.9)"


def _pipeline(spec: dict, name: str = "p") -> dict:
    meta = {"name": name}
    return {
        "apiVersion": "edgepipe.io/v1alpha1",
        "kind": "Pipeline",
        "metadata": meta,
        "spec": spec,
    }


def _steps(postprocess: bool = True) -> list[dict]:
    step: dict = {"model": {"name": "m", "url": "oci://r.example/m@sha256:" + "0" * 64}}
    return [step | ({"postprocess": {"kind": "yolov8"}} if postprocess else {})]


def test_a_postprocess_answers_detections_only() -> None:
    model = ModelRef(name="m", path="/nowhere/m.onnx")
    step = Step(model=model, postprocess=Yolo())
    bad = PipelineConfig(
        name="p",
        steps=[step],
        validations=[{"name": "ok", "expr": "count(detections) > 0"}, {"name": "b", "expr": RULE}],
    )
    with pytest.raises(ConfigError) as err:
        check_validations(bad, prefix="spec.")
    assert err.value.field == "spec.validations[1].expr"
    assert str(err.value) == (
        "spec.validations[1].expr: unknown name(s) boxes; the outputs are detections"
    )
    # Without a postprocess and without the model's signature, the engine decides.
    check_validations(bad.model_copy(update={"steps": [Step(model=model)]}))


def test_a_local_model_names_its_outputs(models_dir: Path) -> None:
    add1 = ModelRef(name="add1", path=str(models_dir / "add1.onnx"))
    assert local_outputs("steps[0].model", add1) == ["y"]
    config = PipelineConfig(
        name="p", steps=[Step(model=add1)], validations=[{"name": "b", "expr": "all(x > 0)"}]
    )
    with pytest.raises(ConfigError, match=r"validations\[0\].expr: unknown name\(s\) x; the "):
        check_validations(config, local_outputs)


def test_no_rules_read_no_model() -> None:
    """A pipeline without rules never loads its model to learn its outputs (537 MB, seconds)."""

    def outputs_of(where: str, ref: ModelRef) -> list[str]:
        raise AssertionError(f"{where} was read for no rule")

    config = PipelineConfig(name="p", steps=[Step(model=ModelRef(name="m", path="/m.onnx"))])
    check_validations(config, outputs_of)


def test_an_oci_models_outputs_come_from_its_manifest(registry, models_dir: Path) -> None:
    """``model push`` lists the outputs in the manifest: publish push and the operator's
    resolver read them there, without the model file."""
    from edgepipe_operator.builders import parse_spec, resolve_pipeline
    from edgepipe_operator.resolve import make_resolver
    from edgepipe_operator.settings import OperatorSettings

    client = oci.Client(registry.host, plain_http=True)
    pushed = oci.push_model(client, models_dir / "add1.onnx", name="add1", repository="e/add1")
    assert oci.model_info(pushed.reference).outputs == ["y"]
    rules = [{"name": "big", "expr": "max(z) > 1"}]
    step = {"model": {"name": "add1", "url": pushed.reference}}
    config = parse_config({"name": "p", "steps": [step], "validations": rules})
    with pytest.raises(ConfigError, match=r"^validations\[0\].expr: unknown name\(s\) z; the "):
        check_validations(config, readable_outputs)
    resolver = make_resolver(OperatorSettings.from_env({}))
    spec = parse_spec({"steps": [step], "validations": rules})
    with pytest.raises(ConfigError, match=r"^spec.validations\[0\].expr: .* outputs are y$"):
        resolve_pipeline("p", spec, resolver, resolver.outputs_of)


def test_publish_push_refuses_the_rule_before_any_upload(models_dir: Path, tmp_path) -> None:
    cfg = tmp_path / "p.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "kind": "PipelineConfig",
                "name": "p",
                "steps": [{"model": {"name": "add1", "path": str(models_dir / "add1.onnx")}}],
                "validations": [{"name": "big", "expr": "max(z) < 10"}],
            }
        )
    )
    # Nothing listens on port 9: reaching the registry would fail with another message.
    proc = ep("publish", "push", str(cfg), "--registry", "127.0.0.1:9/edge")
    one_line_error(proc, "validations[0].expr: unknown name(s) z; the outputs are y")


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        (
            {"steps": _steps(), "validations": [{"name": "b", "expr": RULE}]},
            "spec.validations[0].expr: unknown name(s) boxes; the outputs are detections",
        ),
        (
            {"deployed": "yes-please", "steps": _steps()},
            "spec.deployed: expected true or false, got 'yes-please'",
        ),
        (
            {"steps": _steps(), "validations": [{"name": "a", "expr": "detections.size > 1"}]},
            "spec.validations[0].expr: attribute access is not allowed in a rule",
        ),
    ],
)
def test_pipeline_apply_checks_before_the_cluster(spec: dict, words: str, tmp_path) -> None:
    with pytest.raises(ConfigError) as err:
        check_manifest(_pipeline(spec))
    assert str(err.value) == words
    # The CLI says the same, before it talks to the apiserver (none answers on port 9).
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "http://127.0.0.1:9"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    manifest = tmp_path / "p.yaml"
    manifest.write_text(yaml.safe_dump(_pipeline(spec)))
    proc = ep("pipeline", "apply", str(manifest), "--kubeconfig", str(kubeconfig))
    one_line_error(proc, f"p.yaml: Pipeline 'p': {words}")
    assert "Value error" not in proc.stderr and "&{" not in proc.stderr


def test_every_bad_field_is_named_up_to_a_cap() -> None:
    two = {
        "name": "p",
        "steps": [{"model": {"name": "m", "path": "/m.onnx"}}],
        "validations": [
            {"name": "a", "expr": "max(y) > 1"},
            {"name": "b", "expr": "y.size > 1"},
            {"name": "c", "expr": "__import__(y)"},
        ],
    }
    with pytest.raises(ConfigError) as err:
        parse_config(two, source="p.yaml")
    assert str(err.value) == (
        "p.yaml: validations[1].expr: attribute access is not allowed in a rule; "
        "validations[2].expr: only these functions may be called: abs, all, any, count, "
        "isfinite, isnan, max, mean, min, sum"
    )
    assert err.value.field == "validations[1].expr"
    many = {
        "name": "p",
        "steps": [{"model": {"name": "m", "path": "/m.onnx"}}],
        "validations": [{"name": f"v{i}", "expr": "y.size"} for i in range(MAX_ERRORS + 5)],
    }
    with pytest.raises(ConfigError) as err:
        parse_config(many)
    text = str(err.value)
    assert text.count("attribute access") == MAX_ERRORS and text.endswith("; and 5 more")
