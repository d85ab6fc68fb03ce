"""The commands a DevOps engineer types to run a published pipeline: docker, compose, helm."""

from __future__ import annotations

from typing import Any

import yaml

from edgepipe.enginepod import CACHE_DIR, ENGINE_PORT, GRPC_PORT, config_cpus


def _edge_env(
    pipeline_url: str, registry: str, plain_http: bool, engine_config: dict | None, var: str
) -> dict[str, str]:
    """The engine's edge-mode env vars. Credentials stay references to the user's own
    variables (``var`` formats one: ``$X`` for a shell, ``${X}`` for compose)."""
    env = {
        "PIPELINE_URL": pipeline_url,
        "OCI_REGISTRY": registry,
        "OCI_USERNAME": var.format("OCI_USERNAME"),
        "OCI_PASSWORD": var.format("OCI_PASSWORD"),
        "CONFIG_CPUS": str(config_cpus((engine_config or {}).get("cpus", 1))),
    }
    if plain_http:
        env["OCI_PLAIN_HTTP"] = "true"
    return env


def docker_run_command(
    engine_url: str,
    pipeline_url: str,
    registry: str,
    plain_http: bool,
    engine_config: dict[str, Any],
) -> str:
    env = _edge_env(pipeline_url, registry, plain_http, engine_config, "${}")
    lines = [f"docker run -p {ENGINE_PORT}:{ENGINE_PORT} -p {GRPC_PORT}:{GRPC_PORT}"]
    lines += [f"-e {k}={v}" for k, v in env.items()]
    lines.append(engine_url)
    return " \\\n    ".join(lines)


def compose_yaml(status: dict[str, Any], registry: str, plain_http: bool) -> str:
    env = _edge_env(
        status["pipelineUrl"], registry, plain_http, status.get("engineConfig"), "${{{}}}"
    )
    doc = {
        "services": {
            "engine": {
                "image": status["engineUrl"],
                "ports": [f"{ENGINE_PORT}:{ENGINE_PORT}", f"{GRPC_PORT}:{GRPC_PORT}"],
                "environment": env,
                "volumes": [f"edgepipe-cache:{CACHE_DIR}"],
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
