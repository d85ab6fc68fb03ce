"""Edge mode: pull a published pipeline (config and model layers) from an OCI registry."""

from __future__ import annotations

from pathlib import Path

from edgepipe.config import PipelineConfig

from .settings import Settings


def fetch_pipeline(settings: Settings) -> tuple[PipelineConfig, list[Path]]:
    from .loader import StartupError

    raise StartupError("edge mode (PIPELINE_URL) is not available in this build yet")
