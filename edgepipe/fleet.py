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

import contextlib
import queue
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

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
    "Clients",
    "EdgeReport",
    "StatusReader",
    "StatusTag",
    "StatusWriter",
    "list_status_tags",
    "manifest_digest",
    "move_pointer",
    "move_pointers",
    "move_pointers_back",
    "pointer_digest",
    "pointer_digests",
    "pointer_tag",
    "pointer_url",
    "push_empty_config",
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
    put_pointer(client, repository, raw, edge)


def put_pointer(client: oci.Client, repository: str, raw: bytes, edge: str) -> None:
    """PUT the manifest bytes ``raw`` under edge ``edge``'s pointer tag."""
    url = f"{client.scheme}://{client.registry}/v2/{repository}/manifests/{pointer_tag(edge)}"
    client._check(
        client.reg.do_request(url, "PUT", data=raw, headers={"Content-Type": oci.MANIFEST}),
        f"pointer of edge {edge} in {repository}",
    )


# -- many pointers at once -------------------------------------------------------------------

WORKERS = 8  # concurrent pointer requests: a wave of 1,000 edges in seconds, not minutes
T = TypeVar("T")


class Clients:
    """Registry clients lent to threads, one at a time each (a client is a session, not
    shared between threads): made by ``factory`` when all are lent, kept for reuse."""

    def __init__(self, factory: Callable[[], oci.Client], first: oci.Client | None = None):
        self.factory = factory
        self.idle: queue.SimpleQueue[oci.Client] = queue.SimpleQueue()
        if first is not None:
            self.idle.put(first)

    @contextlib.contextmanager
    def lend(self) -> Iterator[oci.Client]:
        try:
            client = self.idle.get_nowait()
        except queue.Empty:
            client = self.factory()
        try:
            yield client
        finally:
            self.idle.put(client)


def each_edge(
    clients: Clients, edges: list[str], work: Callable[[oci.Client, str], T], workers: int
) -> tuple[dict[str, T], dict[str, Exception]]:
    """``work(client, edge)`` for every edge, ``workers`` at a time: each edge's result,
    and each failed edge's error."""
    results: dict[str, T] = {}
    errors: dict[str, Exception] = {}

    def run(edge: str) -> T:
        with clients.lend() as client:
            return work(client, edge)

    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(edges)))) as pool:
        futures = {edge: pool.submit(run, edge) for edge in edges}
    for edge, future in futures.items():
        try:
            results[edge] = future.result()
        except Exception as exc:  # reported below, per edge
            errors[edge] = exc
    return results, errors


def raise_per_edge(errors: dict[str, Exception]) -> None:
    """One error for many edges' failures, of their class when they share one (a
    RegistryUnavailable stays one: retried), naming each edge and why."""
    first = next(iter(errors.values()))
    kind = type(first)
    if len(errors) == 1 or not issubclass(kind, oci.OciError) or "__init__" in vars(kind):
        raise first  # one, or not ours to rephrase (a CredentialsRequired says it all)
    if any(type(exc) is not kind for exc in errors.values()):
        kind = oci.OciError
    each = "; ".join(f"edge {edge}: {exc}" for edge, exc in errors.items())
    raise kind(f"{len(errors)} pointers failed: {each}") from first


def pointer_digests(
    clients: Clients, repository: str, edges: list[str], workers: int = WORKERS
) -> dict[str, str | None]:
    """Each edge's pointer digest (``pointer_digest``: one HEAD each, concurrently)."""
    found, errors = each_edge(
        clients, edges, lambda c, e: pointer_digest(c, repository, e), workers
    )
    if errors:
        raise_per_edge(errors)
    return found


def move_pointers(
    clients: Clients,
    repository: str,
    digest: str,
    edges: list[str],
    *,
    before: Callable[[str, str | None], None] = lambda edge, current: None,
    workers: int = WORKERS,
) -> dict[str, str | None]:
    """Point every edge at the manifest ``digest``, concurrently: each pointer read first
    (HEAD) and left alone when already there (a wave moved twice moves nothing the second
    time); the manifest read once (when any moves); ``before(edge, current)`` for each
    other edge (to note where it was), then their PUTs. The edges moved, each
    with the digest its pointer had (None: it had none); when any edge failed (the others
    still move), an error naming each failed edge."""
    pointers, errors = each_edge(
        clients, edges, lambda c, e: pointer_digest(c, repository, e), workers
    )
    todo = [edge for edge in edges if edge in pointers and pointers[edge] != digest]
    if todo:
        with clients.lend() as client:
            raw, _ = client.get_manifest_bytes(
                oci.Reference(client.registry, repository, digest=digest)
            )
        for edge in todo:  # every one noted before any moves
            before(edge, pointers[edge])
        _, failed = each_edge(
            clients, todo, lambda c, e: put_pointer(c, repository, raw, e), workers
        )
        errors.update(failed)
    if errors:  # the others moved
        raise_per_edge({edge: errors[edge] for edge in edges if edge in errors})
    return {edge: pointers[edge] for edge in todo}


def move_pointers_back(
    clients: Clients, repository: str, rollback: dict[str, str], edges: list[str]
) -> list[str]:
    """Point each of ``edges`` back at its ``rollback`` digest (those with one, and not
    there already; one manifest read per digest); the edges moved."""
    moved: set[str] = set()
    for back in sorted({rollback[e] for e in edges if rollback.get(e)}):
        group = [e for e in edges if rollback.get(e) == back]
        moved.update(move_pointers(clients, repository, back, group))
    return [e for e in edges if e in moved]


def push_empty_config(client: oci.Client, prefix: str, pipeline: str) -> None:
    """The status repository's empty config blob (``{}``), pushed once by the publisher:
    a fleet's edges writing their first records together find it rather than all
    uploading it at once (which docker-registry answers with errors)."""
    client.push_bytes(status_repository(prefix, pipeline), b"{}", oci.EMPTY_CONFIG)
