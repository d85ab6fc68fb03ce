"""The user's side: clients for the engine (and, later, the cluster)."""

from .engine import EngineClient, EngineClientError, InferenceResult

__all__ = ["EngineClient", "EngineClientError", "InferenceResult"]
