"""The helm binary the tests run, with its caches and config kept out of the home folder;
charts rendered with it, and the objects of a kind picked from what it rendered."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import yaml

from edgepipe import oci
from edgepipe.config import ModelRef, PipelineConfig, Step
from edgepipe.publish.chart import render_chart
from edgepipe.resources import DeploymentConfig
from tests.helpers.paths import ROOT

HELM = str(ROOT / ".venv" / "bin" / "helm")
OPERATOR_CHART = str(ROOT / "charts" / "edgepipe")
# The three values an edge chart asks for (its registry and the login).
EDGE_LOGIN = ("ociRegistry.registry=r", "ociRegistry.username=u", "ociRegistry.password=p")


def helm(*args: str, cwd: Path | None = None, check: bool = True) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "HELM_CACHE_HOME": "/tmp/ep-helm/cache",
        "HELM_CONFIG_HOME": "/tmp/ep-helm/config",
        "HELM_DATA_HOME": "/tmp/ep-helm/data",
    }
    proc = subprocess.run(
        [HELM, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=120
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)}: {proc.stderr}")
    return proc


def docs(rendered: str) -> list[dict]:
    """The objects of a rendered chart (empty documents left out)."""
    return [d for d in yaml.safe_load_all(rendered) if d]


def of_kind(rendered: str, kind: str) -> dict:
    """The one object of ``kind`` in a rendered chart (fails on none or several)."""
    (found,) = [d for d in docs(rendered) if d["kind"] == kind]
    return found


def by_kind(rendered: str) -> dict[str, dict]:
    """A rendered chart's objects by kind (for charts with one object of each kind)."""
    return {d["kind"]: d for d in docs(rendered)}


def edge_chart(dest: Path, deployment: DeploymentConfig | None = None) -> Path:
    """A published pipeline's edge chart (chart ``c``, one model), rendered from the
    templates as a Publish renders it."""
    model = ModelRef(name="m", path="/models/m.onnx", sha256="0" * 64)
    return render_chart(
        dest,
        chart_name="c",
        config=PipelineConfig(name="c", steps=[Step(model=model)]).with_version(),
        pipeline_url="r/edge/pipelines/c:v",
        target=oci.Target.parse("r/edge"),
        engine_image="edgepipe-engine:0.1.0",
        deployment=deployment or DeploymentConfig(),
    )


def edge_sets(*sets: str) -> list[str]:
    """``--set`` arguments: an edge chart's three login values, then ``sets``."""
    return [a for s in (*EDGE_LOGIN, *sets) for a in ("--set", s)]


def edge_template(chart: Path, *sets: str) -> str:
    """``helm template e CHART`` with the three login values and ``sets``."""
    return helm("template", "e", str(chart), *edge_sets(*sets)).stdout
