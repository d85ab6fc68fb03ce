"""The edge chart: rendered from Jinja2 templates, packaged and pushed without helm.

The templates in ``templates/chart`` use the delimiters ``[[ ]]`` and ``[% %]``, so Helm's
own ``{{ }}`` pass through untouched. The engine pod's port, cache path, probes and
security context come from ``edgepipe.enginepod``, as the operator's Deployment does.
"""

from __future__ import annotations

import gzip
import io
import json
import shutil
import tarfile
from pathlib import Path
from typing import Any

import jinja2
import yaml

from edgepipe import enginepod, oci
from edgepipe.config import PipelineConfig
from edgepipe.resources import Autoscaling, DeploymentConfig

from .errors import PublishError

TEMPLATES = Path(__file__).resolve().parent / "templates" / "chart"
CHART_VERSION_PREFIX = "0.0.1-"


def split_image(image: str) -> tuple[str, str]:
    """``registry:5000/x/engine:1.0`` -> (``registry:5000/x/engine``, ``1.0``)."""
    name, _, tag = image.rpartition(":")
    if not name or "/" in tag:
        return image, "latest"
    return name, tag


def render_chart(
    dest: Path,
    *,
    chart_name: str,
    config: PipelineConfig,
    pipeline_url: str,
    target: oci.Target,
    engine_image: str,
    deployment: DeploymentConfig,
    public_key: str = "",
) -> Path:
    """Write the chart's files under ``dest/<chart_name>``; its path. ``public_key``: the
    signing key's public half, the default of the chart's ``verifyKey``."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        variable_start_string="[[",
        variable_end_string="]]",
        block_start_string="[%",
        block_end_string="%]",
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
        autoescape=False,
    )
    repo, tag = split_image(engine_image)
    chart_version = CHART_VERSION_PREFIX + config.version
    # The chart's autoscaling defaults (off): the published spec's, or 1-3 at 70% CPU.
    auto = deployment.autoscaling or Autoscaling(max_replicas=3)
    values = {
        "chart_name": chart_name,
        "chart_version": chart_version,
        "pipeline_name": config.name,
        "pipeline_version": config.version,
        "pipeline_url": pipeline_url,
        "registry_host": target.registry,
        "chart_url": f"{target.registry}/{target.repository('charts', chart_name)}",
        "plain_http": target.plain_http,
        "image_repository": repo,
        "image_tag": tag,
        "replicas": deployment.replicas,
        "autoscaling": auto,
        "autoscaling_target": f"{auto.target:g}",
        "autoscaling_behavior": json.dumps(auto.behavior or {}),
        "config_cpus": enginepod.config_cpus(deployment.cpus),
        "cpu": enginepod.cpu_quantity(deployment.cpus),
        "engine_port": enginepod.ENGINE_PORT,
        "grpc_port": enginepod.GRPC_PORT,
        "cache_dir": enginepod.CACHE_DIR,
        "token_dir": enginepod.TOKEN_DIR,
        # Probes and the security context as JSON, which is YAML: one source for both.
        "probes": {k: json.dumps(v) for k, v in enginepod.probes().items()},
        "security_context": json.dumps(enginepod.container_security_context()),
        "strategy": json.dumps(enginepod.rollout()),
        "grace_seconds": enginepod.TERMINATION_GRACE_SECONDS,
        "drain_seconds": enginepod.DRAIN_SECONDS,
        "memory": deployment.memory,
        "gpus": deployment.gpus,
        "public_key": public_key,
        "local_storage": enginepod.LOCAL_INFERENCE_STORAGE,
    }
    out = dest / chart_name
    for src in TEMPLATES.rglob("*"):
        if src.is_dir():
            continue
        rel = src.relative_to(TEMPLATES)
        target_path = out / (str(rel)[:-3] if src.suffix == ".j2" else rel)
        target_path.parent.mkdir(parents=True, exist_ok=True)
        if src.suffix == ".j2":
            target_path.write_text(env.get_template(str(rel)).render(**values))
        else:
            shutil.copyfile(src, target_path)
    return out


# Every archive entry gets these, so the same chart files always give the same bytes (and
# the same digest): no build time, owner or file order leaks in.
ENTRY_MTIME = 0
ENTRY_MODE = 0o644


def package_chart(chart_dir: Path) -> bytes:
    """The chart as ``helm package`` lays it out (``<name>/Chart.yaml`` first), as a
    deterministic tar.gz."""
    files = sorted(p for p in chart_dir.rglob("*") if p.is_file())
    files.sort(key=lambda p: p.relative_to(chart_dir).as_posix() != "Chart.yaml")
    raw = io.BytesIO()
    # mtime=0 and no file name: gzip's header carries neither the time nor a path.
    with (
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for path in files:
            data = path.read_bytes()
            info = tarfile.TarInfo(f"{chart_dir.name}/{path.relative_to(chart_dir).as_posix()}")
            info.size, info.mtime, info.mode = len(data), ENTRY_MTIME, ENTRY_MODE
            tar.addfile(info, io.BytesIO(data))
    return raw.getvalue()


def chart_metadata(chart_dir: Path) -> dict[str, Any]:
    """Chart.yaml as Helm's OCI config blob holds it (JSON)."""
    meta = yaml.safe_load((chart_dir / "Chart.yaml").read_text())
    if not isinstance(meta, dict) or not meta.get("name") or not meta.get("version"):
        raise PublishError(f"{chart_dir}/Chart.yaml: expected a mapping with name and version")
    return meta


def push_chart(chart_dir: Path, target: oci.Target) -> tuple[str, str]:
    """Package the chart and push it with Helm's media types, tagged with its version (``+``
    becomes ``_``, as Helm does); (chart URL, chart reference by digest).

    Registry failures are the OCI client's (by HTTP status): AuthError, RegistryUnavailable.
    """
    meta = chart_metadata(chart_dir)
    archive = package_chart(chart_dir)
    config = json.dumps(meta, separators=(",", ":"), sort_keys=True).encode()
    client = target.client()
    repository = target.repository("charts", meta["name"])
    manifest = {
        "schemaVersion": 2,
        "mediaType": oci.MANIFEST,
        "config": client.push_bytes(repository, config, oci.HELM_CONFIG),
        "layers": [client.push_bytes(repository, archive, oci.HELM_CHART_LAYER)],
        "annotations": {
            "org.opencontainers.image.title": meta["name"],
            "org.opencontainers.image.version": str(meta["version"]),
            "org.opencontainers.image.description": meta.get("description", ""),
        },
    }
    tag = str(meta["version"]).replace("+", "_")
    digest = client.put_manifest(repository, manifest, tag=tag)
    chart_url = f"{target.registry}/{repository}"
    return chart_url, f"{chart_url}@{digest}"
