"""Both charts take an all-digit image tag as it is given (--set, a values file), with the
real helm: the tag reaches the image as its digits, not as a number."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from edgepipe import oci
from edgepipe.config import ModelRef, PipelineConfig, Step
from edgepipe.publish.chart import render_chart
from edgepipe.resources import DeploymentConfig
from tests.helpers.helm import helm
from tests.helpers.paths import ROOT

EDGE_VALUES = ["--set", "ociRegistry.registry=r", "--set", "ociRegistry.username=u"]
EDGE_VALUES += ["--set", "ociRegistry.password=p"]


def _template(chart: Path, *args: str) -> list[dict]:
    out = helm("template", "t", str(chart), *args).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def _container(docs: list[dict]) -> dict:
    dep = next(d for d in docs if d["kind"] == "Deployment")
    return dep["spec"]["template"]["spec"]["containers"][0]


@pytest.fixture(scope="module")
def edge_chart(tmp_path_factory) -> Path:
    model = ModelRef(name="m", path="/models/m.onnx", sha256="0" * 64)
    config = PipelineConfig(name="tags", steps=[Step(model=model)]).with_version()
    return render_chart(
        tmp_path_factory.mktemp("chart"),
        chart_name="tags",
        config=config,
        pipeline_url="r/edge/pipelines/tags:v",
        target=oci.Target.parse("r/edge"),
        engine_image="edgepipe-engine:0.1.0",
        deployment=DeploymentConfig(),
    )


# (how the tag is given, the tag the image must carry)
TAGS = [
    (["--set", "image.tag=12345"], "12345"),
    (["--set", "image.tag=20240101120000"], "20240101120000"),
    (["--set-string", "image.tag=12345"], "12345"),
    (["--set", "image.tag=0123"], "0123"),
    (["--set", "image.tag=v1.2"], "v1.2"),
]


@pytest.mark.parametrize(("args", "tag"), TAGS)
def test_operator_chart_takes_a_digit_tag(args: list[str], tag: str) -> None:
    c = _container(_template(ROOT / "charts" / "edgepipe", *args))
    assert c["image"] == f"edgepipe-operator:{tag}"
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["EDGEPIPE_OPERATOR_ENGINE_IMAGE"] == f"edgepipe-engine:{tag}"


@pytest.mark.parametrize(("args", "tag"), TAGS)
def test_edge_chart_takes_a_digit_tag(edge_chart: Path, args: list[str], tag: str) -> None:
    c = _container(_template(edge_chart, *EDGE_VALUES, *args))
    assert c["image"] == f"edgepipe-engine:{tag}"


def test_a_digit_tag_in_a_values_file(edge_chart: Path, tmp_path: Path) -> None:
    """A values file's 20240101120000 is a float to helm; it must not print as 2.024e+13."""
    values = tmp_path / "v.yaml"
    values.write_text("image:\n  tag: 20240101120000\n")
    op = _container(_template(ROOT / "charts" / "edgepipe", "-f", str(values)))
    assert op["image"] == "edgepipe-operator:20240101120000"
    edge = _container(_template(edge_chart, *EDGE_VALUES, "-f", str(values)))
    assert edge["image"] == "edgepipe-engine:20240101120000"
