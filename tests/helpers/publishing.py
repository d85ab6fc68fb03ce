"""Publishing without a cluster: registry credentials as env, ``edgepipe publish push``,
and the env the edge chart gives an engine."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from tests.helpers.cli import cli


def creds_env(reg) -> dict[str, str]:
    return {"OCI_USERNAME": reg.username, "OCI_PASSWORD": reg.password}


def edge_env(published, reg, cache: Path, cpus: str = "1") -> dict[str, str]:
    """Exactly the env the chart's Deployment sets."""
    return {
        "PIPELINE_URL": published["status"]["pipelineUrl"],
        "OCI_REGISTRY": reg.host,
        "OCI_USERNAME": reg.username,
        "OCI_PASSWORD": reg.password,
        "OCI_PLAIN_HTTP": "true",
        "CONFIG_CPUS": cpus,
        "EDGEPIPE_ENGINE_CACHE_DIR": str(cache),
    }


def publish(config: dict, folder, registry) -> dict:
    path = folder / f"{config['name']}-{len(list(folder.iterdir()))}.yaml"
    path.write_text(yaml.safe_dump(config))
    args = ["publish", "push", str(path), "--registry", f"{registry.host}/edge", "-o", "json"]
    return json.loads(cli(*args, env=creds_env(registry)).stdout)
