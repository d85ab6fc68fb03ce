"""Many edges' pointers moved at once (``fleet.move_pointers``) against the real registry:
one manifest GET and one HEAD and PUT per edge, concurrently; a pointer already there is
not written again; rollback digests noted before any PUT; failures named per edge. And a
publish to edges pushes their status repository's empty config first."""

from __future__ import annotations

import time

import pytest

from edgepipe import fleet, oci
from tests.helpers import onnx_models as m
from tests.helpers.fleet import CountingProxy, push

PREFIX = "edge"


def client_for(host: str, reg) -> oci.Client:
    return oci.Client(host, oci.Credentials(reg.username, reg.password), plain_http=True)


def push_version(client: oci.Client, repository: str, version: str) -> str:
    """A small manifest tagged ``version``; its digest."""
    empty = client.push_bytes(repository, b"{}", oci.EMPTY_CONFIG)
    manifest = {
        "schemaVersion": 2,
        "mediaType": oci.MANIFEST,
        "config": empty,
        "layers": [empty],
        "annotations": {"org.opencontainers.image.version": version},
    }
    return client.put_manifest(repository, manifest, tag=version)


@pytest.fixture
def repository(auth_registry) -> str:
    return f"{PREFIX}/pipelines/moves-{time.monotonic_ns()}"


def counts(proxy: CountingProxy, start: int = 0) -> dict[str, int]:
    seen = proxy.requests[start:]
    return {
        "GET manifest": sum(r.startswith("GET ") and "/manifests/sha256:" in r for r in seen),
        "HEAD pointer": sum(r.startswith("HEAD ") and "/manifests/edge-" in r for r in seen),
        "PUT pointer": sum(r.startswith("PUT ") and "/manifests/edge-" in r for r in seen),
    }


def test_fifty_pointers_move_with_one_manifest_read(auth_registry, repository) -> None:
    edges = [f"dock-{i}" for i in range(50)]
    with CountingProxy(auth_registry.host) as proxy:
        made: list[oci.Client] = []

        def factory() -> oci.Client:
            made.append(client_for(proxy.host, auth_registry))
            return made[-1]

        clients = fleet.Clients(factory)
        v1 = push_version(factory(), repository, "v1")
        v2 = push_version(factory(), repository, "v2")
        fleet.move_pointers(clients, repository, v1, edges[:10])  # 10 edges already on v1
        noted: dict[str, str | None] = {}
        start = len(proxy.requests)
        t = time.monotonic()
        moved = fleet.move_pointers(
            clients, repository, v2, edges, before=lambda e, d: noted.setdefault(e, d)
        )
        took = time.monotonic() - t
        assert counts(proxy, start) == {"GET manifest": 1, "HEAD pointer": 50, "PUT pointer": 50}
        assert moved == {e: (v1 if i < 10 else None) for i, e in enumerate(edges)}
        assert noted == moved
        assert len(made) <= 2 + fleet.WORKERS  # a client per thread, reused
        check = client_for(auth_registry.host, auth_registry)
        assert {e: fleet.pointer_digest(check, repository, e) for e in edges} == dict.fromkeys(
            edges, v2
        )
        # Again (a restart re-running the wave): every pointer read, none written.
        start = len(proxy.requests)
        assert fleet.move_pointers(clients, repository, v2, edges) == {}
        assert counts(proxy, start) == {"GET manifest": 0, "HEAD pointer": 50, "PUT pointer": 0}
        # Back, per edge's own digest: one manifest read per digest.
        rollback = {e: v1 for e in edges[:5]} | {e: v2 for e in edges[5:8]}
        start = len(proxy.requests)
        back = fleet.move_pointers_back(clients, repository, rollback, edges)
        assert back == edges[:5]
        assert counts(proxy, start) == {"GET manifest": 1, "HEAD pointer": 8, "PUT pointer": 5}
    print(f"50 pointers moved in {took:.2f} s")


def test_failures_are_named_per_edge_and_the_others_move(auth_registry, repository) -> None:
    client = client_for(auth_registry.host, auth_registry)
    v1 = push_version(client, repository, "v1")
    edges = ["ok-1", "bad:one", "ok-2", "bad:two"]  # ':' makes no valid tag
    with pytest.raises(oci.OciError) as caught:
        fleet.move_pointers(fleet.Clients(lambda: client_for(auth_registry.host, auth_registry)),
                            repository, v1, edges)  # fmt: skip
    message = str(caught.value)
    assert "bad:one" in message and "bad:two" in message and "ok-1" not in message
    assert fleet.pointer_digest(client, repository, "ok-1") == v1
    assert fleet.pointer_digest(client, repository, "ok-2") == v1


def test_a_publish_to_edges_pushes_their_status_config(auth_registry, tmp_path) -> None:
    """The status repository's empty config is there before any edge writes a record."""
    client = client_for(auth_registry.host, auth_registry)
    name = f"status-{time.monotonic_ns()}"
    repo = fleet.status_repository(PREFIX, name)
    model = m.add_constant(tmp_path / "add.onnx", 1.0)
    config = {"name": name, "steps": [{"model": {"name": "add", "path": str(model)}}]}
    published = push(auth_registry, tmp_path, config, "--edge", "dock-1", "--edge", "dock-2")
    assert client.blob_exists(repo, fleet.EMPTY_DIGEST)
    assert not client.blob_exists(f"{PREFIX}/status/never-{name}", fleet.EMPTY_DIGEST)
    pipeline = oci.Reference.parse(published["pipelineUrl"]).repository
    digest = client.get_manifest(oci.Reference.parse(published["pipelineUrl"]))[1]
    assert {e: fleet.pointer_digest(client, pipeline, e) for e in ("dock-1", "dock-2")} == {
        "dock-1": digest,
        "dock-2": digest,
    }
