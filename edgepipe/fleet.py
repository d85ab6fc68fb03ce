"""The fleet's registry layout: the pointer each edge follows and the status each edge reports.

Plain OCI tags and manifests, so any registry serves (Debian's ``docker-registry`` too):

- **Pointer**: ``<prefix>/pipelines/<pipeline>:edge-<edge>``, a tag on the manifest that
  edge should run (the very manifest a version tag names, so its signature, kept by
  digest, covers it). A publish with ``--edge NAME`` (or a Publish's ``edges``) moves it.
- **Status**: one repository per pipeline, ``<prefix>/status/<pipeline>``, where each edge
  tags its record ``<edge>.<ms>.<state>.<running12>.<target12>`` (``edgepipe.fleetstatus``):
  one tag listing gives every edge's state, and a manifest GET (the status JSON,
  ``STATUS_SCHEMA``, in its ``io.edgepipe.status`` annotation) the details.
"""

from __future__ import annotations

from edgepipe import oci
from edgepipe.fleetstatus import (
    EMPTY_DIGEST,
    HEARTBEAT_SECONDS,
    STATES,
    STATUS_ANNOTATION,
    STATUS_ARTIFACT,
    STATUS_SCHEMA,
    EdgeReport,
    StatusReader,
    StatusTag,
    StatusWriter,
    list_status_tags,
    read_status,
    same_digest,
    status_repository,
)

__all__ = [
    "EMPTY_DIGEST",
    "HEARTBEAT_SECONDS",
    "STATES",
    "STATUS_ANNOTATION",
    "STATUS_ARTIFACT",
    "STATUS_SCHEMA",
    "EdgeReport",
    "StatusReader",
    "StatusTag",
    "StatusWriter",
    "list_status_tags",
    "manifest_digest",
    "move_pointer",
    "pointer_digest",
    "pointer_tag",
    "pointer_url",
    "read_status",
    "same_digest",
    "status_repository",
]


def pointer_tag(edge: str) -> str:
    return f"edge-{edge}"


def pointer_url(pipeline_url: str, edge: str) -> str:
    """``reg/p/pipelines/x:v3`` -> ``reg/p/pipelines/x:edge-<edge>``: what the edge follows."""
    ref = oci.Reference.parse(pipeline_url)
    return f"{ref.registry}/{ref.repository}:{pointer_tag(edge)}"


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


def pointer_digest(client: oci.Client, repository: str, edge: str) -> str | None:
    """The digest edge ``edge``'s pointer names (one HEAD); None when it has none."""
    try:
        return manifest_digest(
            client, oci.Reference(client.registry, repository, pointer_tag(edge))
        )
    except oci.NotInRegistry:
        return None


def move_pointer(client: oci.Client, repository: str, digest: str, edge: str) -> None:
    """Tag the manifest ``digest`` as edge ``edge``'s pointer (the same bytes, so the same
    digest and signature)."""
    raw, _ = client.get_manifest_bytes(oci.Reference(client.registry, repository, digest=digest))
    url = f"{client.scheme}://{client.registry}/v2/{repository}/manifests/{pointer_tag(edge)}"
    client._check(
        client.reg.do_request(url, "PUT", data=raw, headers={"Content-Type": oci.MANIFEST}),
        f"pointer of edge {edge} in {repository}",
    )
