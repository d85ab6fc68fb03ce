"""The pod specs edgepipe runs, as rendered for access-control tests: an engine pod the
operator builds (with a token Secret), the operator chart's pod, the edge chart's pod."""

from __future__ import annotations

from pathlib import Path

import yaml
from edgepipe_operator import builders

from edgepipe import oci
from edgepipe.config import ModelRef, PipelineConfig, Step
from edgepipe.publish.chart import render_chart
from edgepipe.resources import DeploymentConfig
from tests.helpers.helm import helm
from tests.helpers.paths import ROOT

OPERATOR_CHART = str(ROOT / "charts/edgepipe")


def docs(rendered: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(rendered) if d]


def pod_of(rendered: str) -> dict:
    """The pod template of the one Deployment in a rendered chart."""
    (dep,) = [d for d in docs(rendered) if d["kind"] == "Deployment"]
    return dep["spec"]["template"]["spec"]


def engine_pod(**spec) -> dict:
    """The engine pod the operator builds for a one-step Pipeline with ``spec`` added."""
    parsed = builders.parse_spec(
        {"steps": [{"model": {"name": "m", "url": "oci://r/m:1", "sha256": "0" * 64}}], **spec}
    )
    config = builders.resolve_pipeline("p", parsed)
    return builders.build_deployment(config, parsed, "ns", image="e:1")["spec"]["template"]["spec"]


def edge_chart(dest: Path) -> Path:
    """A published pipeline's edge chart, rendered from the templates."""
    model = ModelRef(name="m", path="/models/m.onnx", sha256="0" * 64)
    return render_chart(
        dest,
        chart_name="c",
        config=PipelineConfig(name="c", steps=[Step(model=model)]).with_version(),
        pipeline_url="r/edge/pipelines/c:v",
        target=oci.Target.parse("r/edge"),
        engine_image="edgepipe-engine:0.1.0",
        deployment=DeploymentConfig(),
    )


def edge_template(chart: Path, *sets: str) -> str:
    login = ("ociRegistry.registry=r", "ociRegistry.username=u", "ociRegistry.password=p")
    args = [a for s in (*login, *sets) for a in ("--set", s)]
    return helm("template", "e", str(chart), *args).stdout
