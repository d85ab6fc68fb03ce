"""The commands a DevOps engineer types to run a published pipeline: docker, compose, helm."""

from __future__ import annotations

from typing import Any

import yaml

from edgepipe import fleet
from edgepipe.enginepod import CACHE_DIR, ENGINE_PORT, GRPC_PORT, config_cpus


def _edge_env(
    pipeline_url: str,
    registry: str,
    plain_http: bool,
    engine_config: dict | None,
    var: str,
    edge: str | None = None,
    verify: bool = False,
) -> dict[str, str | None]:
    """The engine's edge-mode env vars. Credentials stay references to the user's own
    variables (``var`` formats one: ``$X`` for a shell, ``${X}`` for compose); a value of
    None passes the variable through from the environment (a multi-line PEM key, and the
    engine's API token: set in the environment it is required, unset the edge is open;
    never written into the line, where a terminal or the process list would show it)."""
    env: dict[str, str | None] = {
        "PIPELINE_URL": pipeline_url,
        "OCI_REGISTRY": registry,
        "OCI_USERNAME": var.format("OCI_USERNAME"),
        "OCI_PASSWORD": var.format("OCI_PASSWORD"),
        "CONFIG_CPUS": str(config_cpus((engine_config or {}).get("cpus", 1))),
    }
    if edge:
        env["EDGE_NAME"] = edge
    if verify:
        env["OCI_VERIFY_KEY"] = None
    if plain_http:
        env["OCI_PLAIN_HTTP"] = "true"
    env["EDGEPIPE_ENGINE_API_TOKEN"] = None
    return env


def docker_run_command(
    engine_url: str,
    pipeline_url: str,
    registry: str,
    plain_http: bool,
    engine_config: dict[str, Any],
    *,
    edge: str | None = None,
    verify: bool = False,
) -> str:
    """The ``docker run`` line of one edge (or of any, without ``edge``). Signed publishes
    pass ``OCI_VERIFY_KEY`` (the public key's PEM) from the user's environment."""
    if edge:  # the edge follows its own pointer, which a publish moves
        pipeline_url = fleet.pointer_url(pipeline_url, edge)
    env = _edge_env(pipeline_url, registry, plain_http, engine_config, "${}", edge, verify)
    lines = [f"docker run -p {ENGINE_PORT}:{ENGINE_PORT} -p {GRPC_PORT}:{GRPC_PORT}"]
    lines += [f"-e {k}" if v is None else f"-e {k}={v}" for k, v in env.items()]
    lines.append(engine_url)
    return " \\\n    ".join(lines)


def compose_yaml(
    status: dict[str, Any], registry: str, plain_http: bool, edge: str | None = None
) -> str:
    url = fleet.pointer_url(status["pipelineUrl"], edge) if edge else status["pipelineUrl"]
    env = _edge_env(
        url,
        registry,
        plain_http,
        status.get("engineConfig"),
        "${{{}}}",
        edge,
        bool(status.get("publicKey")),
    )
    if "OCI_VERIFY_KEY" in env:
        env["OCI_VERIFY_KEY"] = "${OCI_VERIFY_KEY}"
    env["EDGEPIPE_ENGINE_API_TOKEN"] = "${EDGEPIPE_ENGINE_API_TOKEN:-}"  # empty: no token
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


def local_values_yaml(
    registry: str, plain_http: bool, edge: str | None = None, pipeline_url: str | None = None
) -> str:
    """The values an edge installs the chart with; with ``edge`` and the published
    ``pipeline_url``, the edge follows its pointer."""
    follow = (
        f"pipelineUrl: {fleet.pointer_url(pipeline_url, edge)}\n" if edge and pipeline_url else ""
    )
    return (
        "ociRegistry:\n"
        f"  registry: {registry}\n"
        "  username: <registry user>\n"
        "  password: <registry password or token>\n"
        + ("  plainHttp: true\n" if plain_http else "")
        + (f"edgeName: {edge}\n" if edge else "")
        + follow
    )


def helm_install_command(status: dict[str, Any], release: str, plain_http: bool) -> str:
    flags = " --plain-http" if plain_http else ""
    return (
        f"helm install --values local-values.yaml {release} "
        f"oci://{status['helmChartUrl']} --version {status['helmChartVersion']}{flags}"
    )
