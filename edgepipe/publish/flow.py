"""One publish, start to end: the pipeline artifact, then the chart; the status fields.

The Publish reconciler and ``edgepipe publish push`` both call ``publish``.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgepipe import fleet, oci
from edgepipe.config import PipelineConfig
from edgepipe.oci import signing
from edgepipe.resources import DeploymentConfig
from edgepipe.timestamps import now

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
    signatures: dict[str, str] | None = None  # artifact -> its sha256-<hex>.sig reference
    public_key: str | None = None
    edges: list[str] = field(default_factory=list)
    pipeline_digest: str = ""  # the pipeline manifest's, which the edges' pointers name

    def docker_run(self, edge: str | None = None) -> str:
        return docker_run_command(
            self.engine_url,
            self.pipeline_url,
            self.registry,
            self.plain_http,
            self.engine_config,
            edge=edge,
            verify=bool(self.public_key),
        )

    def status_fields(self) -> dict[str, Any]:
        """The Publish status fields, camelCase, as the CRD and ``-o json`` show them."""
        return {
            "signatures": self.signatures,
            "publicKey": self.public_key,
            # Each edge location with the line that starts its engine under its name.
            "edges": [{"name": e, "dockerRunCommand": self.docker_run(e)} for e in self.edges],
            "pipelineVersion": self.pipeline_version,
            "engineUrl": self.engine_url,
            "pipelineUrl": self.pipeline_url,
            "helmChartUrl": self.helm_chart_url,
            "helmChartReference": self.helm_chart_reference,
            "helmChartVersion": self.helm_chart_version,
            "engineConfig": self.engine_config,
            "dockerRunCommand": self.docker_run(),
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
    signer: signing.Signer | None = None,
    edges: list[str] | None = None,
    move_edges: list[str] | None = None,
) -> PublishResult:
    """Push the pipeline and its chart (each signed with ``signer`` when given); everything
    a Publish's status shows. The pointers of ``move_edges`` (default: every edge) move
    last; a rollout in waves moves none here (``waves.WaveDriver`` does)."""
    chart_name = chart_name or config.name
    pipeline_url, digest = push_pipeline(target, config, model_files, log=log, progress=progress)
    signatures: dict[str, str] = {}
    if signer is not None:
        signatures["pipeline"] = _sign(target, pipeline_url, digest, signer, log)
    with tempfile.TemporaryDirectory() as tmp:
        chart_dir = render_chart(
            Path(tmp),
            chart_name=chart_name,
            config=config,
            pipeline_url=pipeline_url,
            target=target,
            engine_image=engine_image,
            deployment=deployment,
            public_key=signer.public_pem() if signer else "",
        )
        log(f"chart {chart_name} {CHART_VERSION_PREFIX}{config.version}")
        chart_url, chart_ref = push_chart(chart_dir, target)
    log(f"chart pushed: {chart_ref}")
    if signer is not None:
        signatures["chart"] = _sign(target, chart_ref, chart_ref.rsplit("@", 1)[1], signer, log)
    # Last: an edge that follows its pointer starts updating once everything is published.
    if edges:  # their status repository's empty config, there before they all write at once
        fleet.push_empty_config(target.client(), target.prefix, config.name)
    moving = edges if move_edges is None else move_edges
    move_pointers(target, pipeline_url, digest, moving or [], log)
    t = now()
    return PublishResult(
        pipeline_name=config.name,
        pipeline_version=config.version or "",
        engine_url=engine_image,
        pipeline_url=pipeline_url,
        helm_chart_url=chart_url,
        helm_chart_reference=chart_ref,
        helm_chart_version=CHART_VERSION_PREFIX + (config.version or ""),
        engine_config=deployment.model_dump(by_alias=True, exclude_none=True),
        registry=target.registry,
        plain_http=target.plain_http,
        created_at=created_at or t,
        updated_at=t,
        signatures=signatures or None,
        public_key=signer.public_pem() if signer else None,
        edges=list(edges or []),
        pipeline_digest=digest,
    )


def _sign(target: oci.Target, url: str, digest: str, signer: signing.Signer, log: Log) -> str:
    repository = oci.Reference.parse(url.split("@", 1)[0]).repository
    ref = signing.sign(target.client(), repository, digest, signer)
    log(f"signed: {ref}")
    return ref


def move_pointers(
    target: oci.Target, pipeline_url: str, digest: str, edges: list[str], log: Log
) -> None:
    """Point each edge's tag (``<repo>:edge-<edge>``) at the pushed manifest (concurrently;
    one already there is left alone): the edges that follow it update themselves (after
    the signature, which they check first)."""
    if not edges:
        return
    repository = oci.Reference.parse(pipeline_url).repository
    fleet.move_pointers(fleet.Clients(target.client), repository, digest, edges)
    for edge in edges:
        log(f"edge {edge}: pointer {fleet.pointer_url(pipeline_url, edge)} -> {digest[:19]}")
