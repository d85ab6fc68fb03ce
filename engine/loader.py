"""Where the engine's pipeline comes from: a config file, one model file, or a registry."""

from __future__ import annotations

import logging
from pathlib import Path

from edgepipe.config import (
    ConfigError,
    PipelineConfig,
    config_for_model_file,
    load_config,
    resolve_local,
)

from .runtime import Pipeline, load_pipeline
from .settings import Settings

log = logging.getLogger("edgepipe.engine")


class StartupError(RuntimeError):
    """The engine cannot tell what to serve; it exits with this message."""


def read_config(settings: Settings) -> PipelineConfig:
    """The pipeline config named by the settings (not yet resolved)."""
    if settings.config_path:
        try:
            return load_config(settings.config_path)
        except ConfigError as exc:
            raise StartupError(str(exc)) from None
    if settings.model_path:
        return config_for_model_file(settings.model_path)
    raise StartupError(
        "nothing to serve: give --config FILE, --model FILE.onnx, EDGEPIPE_ENGINE_CONFIG, "
        "EDGEPIPE_ENGINE_MODEL, or PIPELINE_URL (edge mode)"
    )


def load_pipelines(settings: Settings) -> list[Pipeline]:
    """Load the pipeline. Model problems give a pipeline in Error, not an exception."""
    if settings.oci is not None:
        from .edge import fetch_pipeline

        config, paths = fetch_pipeline(settings)
        return [load_pipeline(config, paths, settings.threads_per_call)]
    config = read_config(settings)
    try:
        resolved = resolve_local(config)
    except ConfigError as exc:
        log.error("pipeline %s: %s", config.name, exc)
        return [Pipeline(config, error=str(exc))]
    paths = []
    for i, step in enumerate(resolved.steps):
        if step.model.path is None:
            err = (
                f"steps[{i}].model.url: {step.model.url} must be pulled first; "
                "run the engine in edge mode (PIPELINE_URL) or publish the pipeline"
            )
            return [Pipeline(resolved, error=err)]
        paths.append(Path(step.model.path))
    return [load_pipeline(resolved, paths, settings.threads_per_call)]
