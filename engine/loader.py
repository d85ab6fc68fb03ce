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

from .calls import Calls
from .errors import StartupError
from .pipeline import Pipeline
from .settings import Settings
from .wiring import Loading, load_pipeline

log = logging.getLogger("edgepipe.engine")


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


def load_pipelines(settings: Settings, calls: Calls) -> list[Pipeline]:
    """Load the pipeline, its models sharing ``calls``. Model problems give a pipeline in
    Error, not an exception."""
    loading = Loading.of(settings, calls)
    if settings.edge is not None:
        from .edge import fetch_pipeline

        return [load_pipeline(*fetch_pipeline(settings), loading)]
    config = read_config(settings)
    try:
        resolved = resolve_local(config)
    except ConfigError as exc:
        log.error("pipeline %s: %s", config.name, exc)
        return [Pipeline(config, error=str(exc))]
    paths: dict[str, Path] = {}
    shas: dict[str, str] = {}
    for where, model in resolved.models():
        if model.path is not None:
            paths[where] = Path(model.path)
            continue
        if not (model.url or "").startswith("oci://"):
            err = f"{where}.url: only oci:// model references are fetched, not {model.url}"
            return [Pipeline(resolved, error=err)]
        from edgepipe import oci

        from .edge import fetch_model

        try:
            path = fetch_model(model.url, settings)
        except (oci.OciError, StartupError) as exc:
            return [Pipeline(resolved, error=f"{where}.url: {exc}")]
        sha = path.name
        if model.sha256 and model.sha256 != sha:
            err = f"{where}.sha256: {model.url} holds sha256 {sha}, not {model.sha256}"
            return [Pipeline(resolved, error=err)]
        shas[where] = sha
        paths[where] = path
    resolved = resolved.map_models(
        lambda where, ref: ref.model_copy(update={"sha256": shas[where]}) if where in shas else ref
    )
    return [load_pipeline(resolved.with_version(), paths, loading)]
