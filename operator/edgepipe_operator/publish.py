"""Publishing a pipeline version: OCI artifacts plus a generated Helm chart.

One code path for the Publish reconciler and ``edgepipe publish push``:

1. every model file goes into the pipeline's repository (uploaded from a local file,
   mounted from the repository it was pushed to, or copied), by digest;
2. the pipeline artifact: the pipeline config document as its config blob, the models as
   its layers, tagged with the pipeline version (``<registry>/<prefix>/pipelines/<name>``);
3. a Helm chart rendered from the Jinja2 templates in ``templates/chart`` (delimiters
   ``[[ ]]`` and ``[% %]``, so Helm's own ``{{ }}`` pass through), packaged by
   ``helm package`` and pushed with ``helm push`` to ``<registry>/<prefix>/charts``.

The result carries every field the tutorial shows for a publish.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import yaml

from edgepipe import oci
from edgepipe.config import PipelineConfig, model_version
from edgepipe.resources import DeploymentConfig

from .builders import cpu_quantity

TEMPLATES = Path(__file__).resolve().parent / "templates" / "chart"
CHART_VERSION_PREFIX = "0.0.1-"


class PublishError(RuntimeError):
    """A publish that cannot succeed as asked (not worth retrying)."""


Log = Callable[[str], None]


@dataclass(frozen=True)
class Target:
    """Where to publish: ``registry[/prefix]``, credentials, and the transport."""

    registry: str
    prefix: str = ""
    credentials: oci.Credentials = field(default_factory=oci.Credentials)
    plain_http: bool = False

    @classmethod
    def parse(
        cls, url: str, credentials: oci.Credentials | None = None, plain_http: bool | None = None
    ) -> Target:
        raw = url.removeprefix("oci://").strip("/")
        registry, _, prefix = raw.partition("/")
        if not registry:
            raise PublishError(f"registry {url!r}: expected host[:port][/prefix]")
        if plain_http is None:
            plain_http = oci.is_loopback(registry)
        return cls(registry, prefix, credentials or oci.Credentials(), plain_http)

    def repository(self, kind: str, name: str) -> str:
        return "/".join(p for p in (self.prefix, kind, name) if p)

    def client(self) -> oci.Client:
        return oci.Client(self.registry, self.credentials, plain_http=self.plain_http)


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


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def split_image(image: str) -> tuple[str, str]:
    """``registry:5000/x/engine:1.0`` -> (``registry:5000/x/engine``, ``1.0``)."""
    name, _, tag = image.rpartition(":")
    if not name or "/" in tag:
        return image, "latest"
    return name, tag


def config_cpus(deployment: DeploymentConfig) -> int:
    return max(1, math.ceil(deployment.cpus))


# -- the commands a DevOps engineer types ------------------------------------------------


def docker_run_command(
    engine_url: str,
    pipeline_url: str,
    registry: str,
    plain_http: bool,
    engine_config: dict[str, Any],
) -> str:
    cpus = max(1, math.ceil(float(engine_config.get("cpus", 1))))
    lines = [
        "docker run -p 8080:8080",
        f"-e PIPELINE_URL={pipeline_url}",
        f"-e OCI_REGISTRY={registry}",
        "-e OCI_USERNAME=$OCI_USERNAME",
        "-e OCI_PASSWORD=$OCI_PASSWORD",
        f"-e CONFIG_CPUS={cpus}",
    ]
    if plain_http:
        lines.append("-e OCI_PLAIN_HTTP=true")
    lines.append(engine_url)
    return " \\\n    ".join(lines)


def compose_yaml(status: dict[str, Any], registry: str, plain_http: bool) -> str:
    cpus = max(1, math.ceil(float((status.get("engineConfig") or {}).get("cpus", 1))))
    env = {
        "PIPELINE_URL": status["pipelineUrl"],
        "OCI_REGISTRY": registry,
        "OCI_USERNAME": "${OCI_USERNAME}",
        "OCI_PASSWORD": "${OCI_PASSWORD}",
        "CONFIG_CPUS": str(cpus),
    }
    if plain_http:
        env["OCI_PLAIN_HTTP"] = "true"
    doc = {
        "services": {
            "engine": {
                "image": status["engineUrl"],
                "ports": ["8080:8080"],
                "environment": env,
                "volumes": ["edgepipe-cache:/var/cache/edgepipe"],
                "restart": "unless-stopped",
            }
        },
        "volumes": {"edgepipe-cache": {}},
    }
    return yaml.safe_dump(doc, sort_keys=False)


def local_values_yaml(registry: str, plain_http: bool) -> str:
    return (
        "ociRegistry:\n"
        f"  registry: {registry}\n"
        "  username: <registry user>\n"
        "  password: <registry password or token>\n" + ("  plainHttp: true\n" if plain_http else "")
    )


def helm_install_command(status: dict[str, Any], release: str, plain_http: bool) -> str:
    flags = " --plain-http" if plain_http else ""
    return (
        f"helm install --values local-values.yaml {release} "
        f"oci://{status['helmChartUrl']} --version {status['helmChartVersion']}{flags}"
    )


# -- artifacts ---------------------------------------------------------------------------


def _ensure_model_blob(
    client: oci.Client,
    target: Target,
    repository: str,
    ref_url: str | None,
    path: Path | None,
    digest: str,
    log: Log,
    progress: oci.Progress | None,
) -> int:
    """Put one model file into ``repository``; its size."""
    if path is not None:
        actual, size = oci.file_digest(path)
        if actual != digest:
            raise PublishError(f"{path} has digest {actual}, the pipeline says {digest}")
        client.push_blob(repository, path, digest, size, progress)
        return size
    if ref_url and ref_url.startswith("oci://"):
        src = oci.Reference.parse(ref_url)
        source = (
            client
            if src.registry == target.registry
            else oci.Client(src.registry, plain_http=oci.is_loopback(src.registry))
        )
        manifest, _ = source.get_manifest(src)
        layer = oci.model_layer(manifest, src)
        if layer["digest"] != digest:
            raise PublishError(f"{ref_url} holds {layer['digest']}, the pipeline says {digest}")
        if client.blob_exists(repository, digest):
            return layer["size"]
        if source is client and client.mount_blob(repository, digest, src.repository):
            log(f"mounted {digest[:19]} from {src.repository}")
            return layer["size"]
        with tempfile.TemporaryDirectory() as tmp:
            local = source.pull_blob(src.repository, digest, Path(tmp) / "model.onnx")
            client.push_blob(repository, local, digest, layer["size"], progress)
        return layer["size"]
    raise PublishError(
        "a model given as a path inside the engine image cannot be published from here; "
        "push it first (edgepipe model push FILE --registry …) and use its oci:// reference"
    )


def push_pipeline(
    target: Target,
    config: PipelineConfig,
    model_files: dict[str, Path] | None = None,
    *,
    log: Log = lambda _: None,
    progress: oci.Progress | None = None,
) -> tuple[str, str]:
    """Push the pipeline artifact; (pipeline URL, manifest digest)."""
    if not config.version or not config.is_resolved():
        raise PublishError("the pipeline config must be resolved (every model's sha256 known)")
    client = target.client()
    repository = target.repository("pipelines", config.name)
    layers: list[dict[str, Any]] = []
    seen: set[str] = set()
    for step in config.steps:
        model = step.model
        digest = f"sha256:{model.sha256}"
        local = (model_files or {}).get(model.sha256)
        if local is None and model.path and Path(model.path).exists():
            local = Path(model.path)
        log(f"model {model.name}: {digest}")
        size = _ensure_model_blob(
            client, target, repository, model.url, local, digest, log, progress
        )
        if digest in seen:
            continue
        seen.add(digest)
        layers.append(
            {
                "mediaType": oci.MODEL_LAYER,
                "digest": digest,
                "size": size,
                "annotations": {
                    "org.opencontainers.image.title": f"{model.sha256}",
                    f"{oci.ANNOTATION}.name": model.name,
                    f"{oci.ANNOTATION}.version": model_version(model),
                    f"{oci.ANNOTATION}.sha256": model.sha256,
                    f"{oci.ANNOTATION}.runtime": model.runtime,
                    f"{oci.ANNOTATION}.step": step.step_name,
                },
            }
        )
    data = config.to_json()
    config_digest = "sha256:" + hashlib.sha256(data).hexdigest()
    client.push_bytes(repository, data, config_digest)
    manifest = {
        "schemaVersion": 2,
        "mediaType": oci.MANIFEST,
        "artifactType": oci.PIPELINE_ARTIFACT,
        "config": {"mediaType": oci.PIPELINE_CONFIG, "digest": config_digest, "size": len(data)},
        "layers": layers,
        "annotations": {
            "io.edgepipe.pipeline.name": config.name,
            "io.edgepipe.pipeline.version": config.version,
        },
    }
    digest = client.put_manifest(repository, manifest, tag=config.version)
    url = f"{target.registry}/{repository}:{config.version}"
    log(f"pipeline {url} ({digest})")
    return url, digest


def render_chart(
    dest: Path,
    *,
    chart_name: str,
    config: PipelineConfig,
    pipeline_url: str,
    target: Target,
    engine_image: str,
    deployment: DeploymentConfig,
) -> Path:
    """Write the chart's files under ``dest/<chart_name>``; its path."""
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
        "config_cpus": config_cpus(deployment),
        "cpu": cpu_quantity(deployment.cpus),
        "memory": deployment.memory,
        "gpus": deployment.gpus,
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


def default_helm() -> str:
    """helm beside this Python (scripts/setup puts it in .venv/bin), else on PATH."""
    local = Path(sys.executable).parent / "helm"
    return str(local) if local.exists() else (shutil.which("helm") or "helm")


def _helm(helm: str, args: list[str], env: dict[str, str], stdin: str | None = None) -> str:
    try:
        proc = subprocess.run(
            [helm, *args], input=stdin, capture_output=True, text=True, env=env, timeout=300
        )
    except FileNotFoundError:
        raise PublishError(
            f"helm is not installed ({helm}); scripts/setup --dev installs it"
        ) from None
    if proc.returncode != 0:
        err = (proc.stderr or proc.stdout).strip()
        low = err.lower()
        if "unauthorized" in low or "401" in low or "authentication required" in low:
            raise oci.AuthError(f"helm {args[0]}: the registry refused the credentials: {err}")
        if "connection refused" in low or "no such host" in low or "timeout" in low or " 50" in low:
            raise oci.RegistryUnavailable(f"helm {args[0]}: {err}")
        raise PublishError(f"helm {' '.join(args[:2])} failed: {err}")
    return proc.stdout + proc.stderr  # helm push reports on stderr


def push_chart(chart_dir: Path, target: Target, helm: str | None = None) -> tuple[str, str]:
    """``helm package`` then ``helm push``; (chart URL, chart reference by digest)."""
    with tempfile.TemporaryDirectory() as tmp:
        # A registry config of our own: the user's helm logins are neither read nor changed.
        env = {
            **os.environ,
            "HELM_REGISTRY_CONFIG": f"{tmp}/registry.json",
            "HELM_CACHE_HOME": f"{tmp}/cache",
            "HELM_CONFIG_HOME": f"{tmp}/config",
            "HELM_DATA_HOME": f"{tmp}/data",
        }
        plain = ["--plain-http"] if target.plain_http else []
        helm = helm or default_helm()
        out = _helm(helm, ["package", str(chart_dir), "-d", tmp], env)
        match = re.search(r"saved it to: (\S+\.tgz)", out)
        if not match:
            raise PublishError(f"helm package said: {out.strip()}")
        creds = target.credentials
        if creds.username and creds.password:
            _helm(
                helm,
                [
                    "registry",
                    "login",
                    target.registry,
                    "--username",
                    creds.username,
                    "--password-stdin",
                    *plain,
                ],
                env,
                stdin=creds.password,
            )
        repo = target.repository("charts", "").rstrip("/")
        out = _helm(helm, ["push", match.group(1), f"oci://{target.registry}/{repo}", *plain], env)
    pushed = re.search(r"Pushed:\s+(\S+)", out)
    digest = re.search(r"Digest:\s+(sha256:[0-9a-f]{64})", out)
    if not pushed or not digest:
        raise PublishError(f"helm push said: {out.strip()}")
    chart_url = pushed.group(1).rsplit(":", 1)[0]
    return chart_url, f"{chart_url}@{digest.group(1)}"


def publish(
    config: PipelineConfig,
    target: Target,
    *,
    engine_image: str,
    deployment: DeploymentConfig,
    chart_name: str | None = None,
    model_files: dict[str, Path] | None = None,
    helm: str | None = None,
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
        chart_url, chart_ref = push_chart(chart_dir, target, helm)
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


def to_json(result: PublishResult) -> str:
    return json.dumps(result.status_fields(), indent=2)
