"""Engines as real processes: the type of the ``start_engine`` fixture, and a small
two-step config many engine tests serve."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from edgepipe.localengine import EngineProcess

EngineFactory = Callable[..., EngineProcess]


def chain_config(models_dir: Path) -> dict:
    """Two steps, z = (x + 1) * 2 on float32 [N, 4]; the second batches its rows."""
    return {
        "name": "chain",
        "steps": [
            {"model": {"name": "add1", "path": str(models_dir / "add1.onnx")}},
            {
                "model": {"name": "double", "path": str(models_dir / "double.onnx")},
                "batchConfig": "batch",
            },
        ],
    }
