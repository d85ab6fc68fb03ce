"""The fleet's registry layout: the pointer each edge follows and the status each edge reports.

Plain OCI tags and manifests, so any registry serves (Debian's ``docker-registry`` too):

- **Pointer**: ``<prefix>/pipelines/<pipeline>:edge-<edge>``, a tag on the manifest that
  edge should run (the very manifest a version tag names, so its signature, kept by
  digest, covers it). A publish with ``--edge NAME`` (or a Publish's ``edges``) moves it.
- **Status**: ``<prefix>/status/<pipeline>/<edge>:latest``, a tiny artifact the edge
  overwrites on every change and at least every 5 minutes, with one manifest PUT: the
  status JSON (``STATUS_SCHEMA``) is its ``io.edgepipe.status`` annotation (config and
  layer are the empty ``{}``), so one manifest GET reads it and a HEAD's digest says
  whether it changed.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from edgepipe import oci

STATUS_ARTIFACT = "application/vnd.edgepipe.edge.status.v1"
# The empty JSON object, the status manifest's config and layer (the status is annotated).
EMPTY_DIGEST = "sha256:" + hashlib.sha256(b"{}").hexdigest()
STATUS_ANNOTATION = "io.edgepipe.status"
STATUS_TAG = "latest"
# An edge rewrites its status at least this often, so that lastSeen tells a live edge.
HEARTBEAT_SECONDS = 300
STATES = ("Current", "Downloading", "Waiting", "Probation", "RolledBack", "Rejected")

# The status document, as GET /status gives it and the registry keeps it (plus lastSeen).
STATUS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["edge", "pipeline", "state", "since", "running"],
    "properties": {
        "edge": {"type": "string"},
        "pipeline": {"type": "string"},
        "state": {"enum": list(STATES)},
        "reason": {"type": ["string", "null"], "description": "why, for any state but Current"},
        "since": {"type": "string", "description": "when the state began (RFC 3339)"},
        "running": {"$ref": "#/$defs/version"},
        "previous": {"oneOf": [{"$ref": "#/$defs/version"}, {"type": "null"}]},
        "target": {
            "type": ["string", "null"],
            "description": "the digest the edge's pointer named at the last poll",
        },
        "lastPoll": {
            "type": ["object", "null"],
            "properties": {"at": {"type": "string"}, "result": {"type": "string"}},
        },
        "lastSeen": {"type": "string", "description": "when the edge wrote this (registry only)"},
    },
    "$defs": {
        "version": {
            "type": "object",
            "properties": {"version": {"type": "string"}, "digest": {"type": "string"}},
        }
    },
}


def pointer_tag(edge: str) -> str:
    return f"edge-{edge}"


def pointer_url(pipeline_url: str, edge: str) -> str:
    """``reg/p/pipelines/x:v3`` -> ``reg/p/pipelines/x:edge-<edge>``: what the edge follows."""
    ref = oci.Reference.parse(pipeline_url)
    return f"{ref.registry}/{ref.repository}:{pointer_tag(edge)}"


def status_repository(prefix: str, pipeline: str, edge: str) -> str:
    return "/".join(p for p in (prefix, "status", pipeline, edge) if p)


def manifest_digest(client: oci.Client, ref: oci.Reference) -> str:
    """The digest a tag names, from one HEAD request (no body, no blob)."""
    url = f"{client.scheme}://{client.registry}/v2/{ref.repository}/manifests/{ref.tag}"
    client.reg.auth.load_configs(client._container(ref.repository))
    resp = client._check(
        client.reg.do_request(url, "HEAD", headers={"Accept": oci.MANIFEST}), f"manifest {ref}"
    )
    digest = resp.headers.get("Docker-Content-Digest")
    if digest:
        return digest
    return client.get_manifest_bytes(ref)[1]  # a registry that does not say: read it


def move_pointer(client: oci.Client, repository: str, digest: str, edge: str) -> None:
    """Tag the manifest ``digest`` as edge ``edge``'s pointer (the same bytes, so the same
    digest and signature)."""
    raw, _ = client.get_manifest_bytes(oci.Reference(client.registry, repository, digest=digest))
    url = f"{client.scheme}://{client.registry}/v2/{repository}/manifests/{pointer_tag(edge)}"
    client._check(
        client.reg.do_request(url, "PUT", data=raw, headers={"Content-Type": oci.MANIFEST}),
        f"pointer of edge {edge} in {repository}",
    )


def push_status(
    client: oci.Client, repository: str, doc: dict[str, Any], *, blob_known: bool = False
) -> None:
    """Overwrite an edge's status artifact with ``doc``: one manifest PUT (plus, the first
    time, the empty config blob it names; ``blob_known`` skips that check)."""
    data = json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()
    empty = {"mediaType": oci.EMPTY_CONFIG, "digest": EMPTY_DIGEST, "size": 2}
    if not blob_known:
        empty = client.push_bytes(repository, b"{}", oci.EMPTY_CONFIG)
    manifest = {
        "schemaVersion": 2,
        "mediaType": oci.MANIFEST,
        "artifactType": STATUS_ARTIFACT,
        "config": empty,
        "layers": [empty],
        "annotations": {STATUS_ANNOTATION: data.decode()},
    }
    client.put_manifest(repository, manifest, tag=STATUS_TAG)


def read_status(client: oci.Client, repository: str) -> dict[str, Any] | None:
    """An edge's last reported status (one manifest GET); None when it never reported."""
    try:
        manifest, _ = client.get_manifest(
            oci.Reference(client.registry, repository, tag=STATUS_TAG)
        )
    except oci.NotInRegistry:
        return None
    return json.loads((manifest.get("annotations") or {})[STATUS_ANNOTATION])
