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


SHORT_VERSION = 8  # as pipeline list shows versions


def find_version(pipeline: str, history: list[str], wanted: str) -> str:
    """The kept version ``wanted`` names: itself, or the one version it is a prefix of (at
    least 8 characters, as ``pipeline list`` shows them, and git takes short hashes)."""
    if wanted in history:
        return wanted
    kept = f"its versions are {', '.join(history) or 'none yet'}"
    if len(wanted) < SHORT_VERSION:
        raise ClusterError(
            f"version {wanted!r} is too short: give at least {SHORT_VERSION} characters of a "
            f"version of pipeline {pipeline!r}; {kept}"
        )
    found = sorted({v for v in history if v.startswith(wanted)})
    if len(found) > 1:
        raise ClusterError(
            f"version {wanted!r} is ambiguous in pipeline {pipeline!r}: it starts "
            f"{', '.join(found)}; give more characters"
        )
    if not found:
        raise ClusterError(f"pipeline {pipeline!r} has no version {wanted}; {kept}")
    return found[0]
