"""What the cluster client's parts share: its error, the progress callback, and when a
status is the latest spec's."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Progress = Callable[[dict[str, Any]], None]

# How long deploy, undeploy, rollback, publish and an edge change wait by default: one
# rule for all, long enough to pull a large model; a failing wait ends sooner.
WAIT_SECONDS = 600


class ClusterError(RuntimeError):
    """A Kubernetes call failed, or a wait ended in failure or timed out."""


def status_is_current(obj: dict[str, Any]) -> bool:
    """The status describes the object's latest spec."""
    status = obj.get("status") or {}
    return bool(status) and status.get("observedGeneration") == obj["metadata"].get("generation")
