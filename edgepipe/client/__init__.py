"""The user's side: clients for the engine (and the cluster), each loaded when first used."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .engine import EngineClient, EngineClientError, InferenceResult

__all__ = ["EngineClient", "EngineClientError", "InferenceResult"]


def __getattr__(name: str) -> Any:
    """The engine client's names import numpy: only when asked for, so that the cluster
    client and the CLI's cluster commands start without it."""
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(".engine", __name__), name)
    globals()[name] = value
    return value
