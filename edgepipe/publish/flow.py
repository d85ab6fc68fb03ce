"""One publish, start to end: the pipeline artifact, then the chart; the status fields.

The Publish reconciler and ``edgepipe publish push`` both call ``publish``.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgepipe import oci
from edgepipe.config import PipelineConfig
from edgepipe.enginepod import now
from edgepipe.resources import DeploymentConfig

from .artifacts import Log, push_pipeline
from .chart import CHART_VERSION_PREFIX, push_chart, render_chart
from .commands import docker_run_command


@dataclass
class PublishResult:
    pipeline_name: str
    pipeline_version: str
    engine_url: str
    pipeline_url: str
    helm_chart_url: str
    helm_chart_reference: str
    helm_chart_version: str
    engine_config: dict[str, Any]
    registry: str
    plain_http: bool
    created_at: str
    updated_at: str

    def status_fields(self) -> dict[str, Any]:
        """The Publish status fields, camelCase, as the CRD and ``-o json`` show them."""
        return {
            "pipelineVersion": self.pipeline_version,
            "engineUrl": self.engine_url,
            "pipelineUrl": self.pipeline_url,
            "helmChartUrl": self.helm_chart_url,
            "helmChartReference": self.helm_chart_reference,
            "helmChartVersion": self.helm_chart_version,
            "engineConfig": self.engine_config,
            "dockerRunCommand": docker_run_command(
                self.engine_url,
                self.pipeline_url,
                self.registry,
                self.plain_http,
                self.engine_config,
            ),
            "createdAt": self.created_at,
            "updatedAt": self.updated_at,
        }


def publish(
    config: PipelineConfig,
    target: oci.Target,
    *,
    engine_image: str,
    deployment: DeploymentConfig,
    chart_name: str | None = None,
    model_files: dict[str, Path] | None = None,
    created_at: str | None = None,
    log: Log = lambda _: None,
    progress: oci.Progress | None = None,
) -> PublishResult:
    """Push the pipeline and its chart; everything a Publish's status shows."""
    chart_name = chart_name or config.name
    pipeline_url, _ = push_pipeline(target, config, model_files, log=log, progress=progress)
    with tempfile.TemporaryDirectory() as tmp:
        chart_dir = render_chart(
            Path(tmp),
            chart_name=chart_name,
            config=config,
            pipeline_url=pipeline_url,
            target=target,
            engine_image=engine_image,
            deployment=deployment,
        )
        log(f"chart {chart_name} {CHART_VERSION_PREFIX}{config.version}")
        chart_url, chart_ref = push_chart(chart_dir, target)
    log(f"chart pushed: {chart_ref}")
    t = now()
    return PublishResult(
        pipeline_name=config.name,
        pipeline_version=config.version or "",
        engine_url=engine_image,
        pipeline_url=pipeline_url,
        helm_chart_url=chart_url,
        helm_chart_reference=chart_ref,
        helm_chart_version=CHART_VERSION_PREFIX + (config.version or ""),
        engine_config=deployment.model_dump(by_alias=True),
        registry=target.registry,
        plain_http=target.plain_http,
        created_at=created_at or t,
        updated_at=t,
    )
