"""The edge chart: rendered from Jinja2 templates, packaged and pushed with helm.

The templates in ``templates/chart`` use the delimiters ``[[ ]]`` and ``[% %]``, so Helm's
own ``{{ }}`` pass through untouched. The engine pod's port, cache path, probes and
security context come from ``edgepipe.enginepod``, as the operator's Deployment does.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import jinja2

from edgepipe import enginepod, oci
from edgepipe.config import PipelineConfig
from edgepipe.resources import DeploymentConfig

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
        "config_cpus": enginepod.config_cpus(deployment.cpus),
        "cpu": enginepod.cpu_quantity(deployment.cpus),
        "engine_port": enginepod.ENGINE_PORT,
        "grpc_port": enginepod.GRPC_PORT,
        "cache_dir": enginepod.CACHE_DIR,
        # Probes and the security context as JSON, which is YAML: one source for both.
        "probes": {k: json.dumps(v) for k, v in enginepod.probes().items()},
        "security_context": json.dumps(enginepod.container_security_context()),
        "strategy": json.dumps(enginepod.rollout()),
        "grace_seconds": enginepod.TERMINATION_GRACE_SECONDS,
        "drain_seconds": enginepod.DRAIN_SECONDS,
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


def push_chart(chart_dir: Path, target: oci.Target, helm: str | None = None) -> tuple[str, str]:
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
