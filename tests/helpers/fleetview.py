"""Publishes and Pipelines whose status a test writes through the API, as the operator
writes it (the status shape of issue 26's design, section 4), for the views that read it:
``edgepipe console``, ``publish edges``, ``publish rollout``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from edgepipe.resources import GROUP, VERSION

V1 = "1f0c2b7e" + "a" * 56
V2 = "9d3e41c0" + "b" * 56
DIGEST = "sha256:" + "c" * 64


def stamp(seconds_ago: float = 0) -> str:
    return (datetime.now(UTC) - timedelta(seconds=seconds_ago)).isoformat(timespec="seconds")


def publish(name: str, edges: list[str], **spec: Any) -> dict:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Publish",
        "metadata": {"name": name},
        "spec": {
            "pipeline": "adder",
            "registry": {"url": "127.0.0.1:5000/edge"},
            "edges": edges,
            **spec,
        },
    }


def edge(name: str, state: str, version: str, wave: int, seen: float = 2, **more: Any) -> dict:
    return {
        "name": name,
        "state": state,
        "version": version,
        "digest": DIGEST if version == V2 else None,
        "lastSeen": stamp(seen),
        "wave": wave,
        **more,
    }


def waves(*states: tuple[list[str], str]) -> list[dict]:
    return [{"edges": edges, "state": state} for edges, state in states]


class StatusWriter:
    """Writes a whole status (the status subresource, a merge patch) with the current
    observedGeneration, as the operator does."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def __call__(self, plural: str, name: str, status: dict[str, Any]) -> dict:
        obj = self.client.get(plural, name)
        body = {"status": {"observedGeneration": obj["metadata"]["generation"], **status}}
        return self.client.api.patch_namespaced_custom_object_status(
            GROUP,
            VERSION,
            self.client.namespace,
            plural,
            name,
            body,
            _content_type="application/merge-patch+json",
        )
