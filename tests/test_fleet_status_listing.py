"""Edge status records as tags in one repository per pipeline, against the real registry:
the newest record per edge wins, a changed record deletes the one before (or, where the
registry refuses deletes, old tags stay and still lose), and a reader asks for one listing,
and a manifest only for the edges whose record changed."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from edgepipe import fleet, oci
from tests.helpers.fleet import CountingProxy
from tests.helpers.oci_registry import Registry

D1, D2 = "sha256:" + "a1" * 32, "sha256:" + "b2" * 32
PREFIX, PIPE = "edge", "det"


def doc(edge: str, state: str = "Current", running: str = D1, target: str | None = D1) -> dict:
    return {
        "edge": edge, "pipeline": PIPE, "state": state, "reason": f"{state} reason",
        "since": "2026-12-05T00:00:00Z", "running": {"version": "v-" + running[7:11], "digest": running},
        "previous": None, "target": target, "lastPoll": None, "pollSeconds": 2.5,
        "lastSeen": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
    }  # fmt: skip


def client_for(host: str, reg) -> oci.Client:
    return oci.Client(host, oci.Credentials(reg.username, reg.password), plain_http=True)


@pytest.fixture
def pipeline(auth_registry, request) -> str:
    """A pipeline name of this test's own in the shared registry."""
    return f"{PIPE}-{request.node.name[-20:].strip('_').replace('_', '-')}-{time.monotonic_ns()}"


def test_tags_name_the_record_and_parse_back() -> None:
    tag = fleet.StatusTag.make("dock-1", 1764892800123, "RolledBack", D1, None)
    assert tag.tag == "dock-1.1764892800123.RolledBack.a1a1a1a1a1a1.none"
    back = fleet.StatusTag.parse(tag.tag)
    assert back == tag and back.ms == 1764892800123 and back.target12 is None
    assert back.since == datetime(2025, 12, 5, 0, 0, 0, 123000, tzinfo=UTC)
    odd = fleet.StatusTag.parse("host.example.5.Current.none.b2b2b2b2b2b2")
    assert odd.edge == "host.example" and odd.running12 == "" and odd.target12 == "b2b2b2b2b2b2"
    for other in ("latest", "edge-dock-1", "dock-1.12x.Current.a.b", "dock-1.1.Broken.a.b"):
        assert fleet.StatusTag.parse(other) is None, other
    with pytest.raises(ValueError, match="no status tag"):
        fleet.StatusTag.make("x" * 120, 1, "Current", D1, D1)


def test_a_change_is_a_new_tag_and_the_previous_manifest_goes(auth_registry, pipeline) -> None:
    client = client_for(auth_registry.host, auth_registry)
    repo = fleet.status_repository(PREFIX, pipeline)
    assert repo == f"{PREFIX}/status/{pipeline}"
    assert fleet.read_status(client, PREFIX, pipeline, "dock-1") is None  # no repository yet
    w = fleet.StatusWriter(repo, "dock-1")
    first = w.push(client, doc("dock-1", "Downloading", D1, D2), ms=1000)
    d_first = w.digest
    again = w.push(client, doc("dock-1", "Downloading", D1, D2), ms=2000)  # a heartbeat
    assert again == first and w.digest != d_first  # same tag, new lastSeen
    assert client.tags(repo) == [first.tag]
    d_beat = w.digest
    new = w.push(client, doc("dock-1", "Current", D2, D2), ms=3000)
    assert new.tag == "dock-1.3000.Current.b2b2b2b2b2b2.b2b2b2b2b2b2"
    assert client.tags(repo) == [new.tag]  # the previous record's manifest was deleted
    with pytest.raises(oci.NotInRegistry):
        client.get_manifest(oci.Reference(client.registry, repo, digest=d_beat))
    assert w.deletes
    got = fleet.read_status(client, PREFIX, pipeline, "dock-1")
    assert (
        got["state"] == "Current" and got["running"]["digest"] == D2 and got["pollSeconds"] == 2.5
    )
    # A restart (a new writer) writes its record and removes the ones from before it.
    w2 = fleet.StatusWriter(repo, "dock-1")
    w2.push(client, doc("dock-1", "Current", D2, D2), ms=4000)
    assert client.tags(repo) == ["dock-1.4000.Current.b2b2b2b2b2b2.b2b2b2b2b2b2"]


def test_a_registry_refusing_deletes_keeps_old_tags_and_the_newest_wins(tmp_path) -> None:
    reg = Registry(tmp_path / "reg", auth=True)
    reg.config.write_text(reg.config.read_text().replace("enabled: true", "enabled: false"))
    reg.start()
    try:
        with CountingProxy(reg.host) as proxy:
            client = client_for(proxy.host, reg)
            repo = fleet.status_repository(PREFIX, PIPE)
            w = fleet.StatusWriter(repo, "dock-1")
            for ms, state in ((1000, "Downloading"), (2000, "Probation"), (3000, "Current")):
                w.push(client, doc("dock-1", state, D2, D2), ms=ms)
            w.push(client, doc("dock-1", "Current", D2, D2), ms=5000)  # a heartbeat
            deletes = [r for r in proxy.requests if r.startswith("DELETE")]
            assert len(deletes) == 1 and not w.deletes  # refused once, never asked again
            assert sorted(client.tags(repo)) == [
                "dock-1.1000.Downloading.b2b2b2b2b2b2.b2b2b2b2b2b2",
                "dock-1.2000.Probation.b2b2b2b2b2b2.b2b2b2b2b2b2",
                "dock-1.3000.Current.b2b2b2b2b2b2.b2b2b2b2b2b2",
            ]
            (newest,) = fleet.list_status_tags(client, PREFIX, PIPE).values()
            assert newest.state == "Current" and newest.ms == 3000
            assert fleet.read_status(client, PREFIX, PIPE, "dock-1")["state"] == "Current"
            reports = fleet.StatusReader().read(client, PREFIX, PIPE)
            assert reports["dock-1"].state == "Current" and reports["dock-1"].on(D2)
    finally:
        reg.stop()


def test_a_reader_lists_once_and_reads_only_changed_edges(auth_registry, pipeline) -> None:
    edges = [f"dock-{i}" for i in range(1, 8)]
    repo = fleet.status_repository(PREFIX, pipeline)
    writer_client = client_for(auth_registry.host, auth_registry)
    writers = {e: fleet.StatusWriter(repo, e) for e in edges}
    for e in edges:
        writers[e].push(writer_client, doc(e, "Current", D1, D1))
    with CountingProxy(auth_registry.host) as proxy:
        client = client_for(proxy.host, auth_registry)
        reader = fleet.StatusReader(heartbeat_seconds=60)
        start = len(proxy.requests)
        first = reader.read(client, PREFIX, pipeline)
        seen = proxy.requests[start:]
        assert sorted(first) == edges
        assert sum("/tags/list" in r for r in seen) == 1
        assert sum("/manifests/" in r for r in seen) == 7 == reader.gets
        assert reader.requests == 8
        r1 = first["dock-1"]
        assert (r1.state, r1.running, r1.version, r1.poll_seconds) == ("Current", D1, "v-a1a1", 2.5)
        assert r1.on(D1) and r1.on(D1[:19]) and not r1.on(D2) and r1.aimed_at(D1)
        assert r1.last_seen is not None and r1.reason == "Current reason"

        # Nothing changed (heartbeats re-PUT the same tags): the listing only.
        for e in edges:
            writers[e].push(writer_client, doc(e, "Current", D1, D1))
        start = len(proxy.requests)
        again = reader.read(client, PREFIX, pipeline)
        seen = proxy.requests[start:]
        assert len(seen) == 1 and "/tags/list" in seen[0], seen
        assert reader.gets == 7 and again["dock-3"].state == "Current"

        # Two edges move on: their manifests only.
        writers["dock-2"].push(writer_client, doc("dock-2", "Downloading", D1, D2))
        writers["dock-5"].push(writer_client, doc("dock-5", "Current", D2, D2))
        start = len(proxy.requests)
        moved = reader.read(client, PREFIX, pipeline)
        seen = [r for r in proxy.requests[start:] if "/manifests/" in r]
        assert sorted(r.split("/manifests/")[1].split(".")[0] for r in seen) == ["dock-2", "dock-5"]
        assert moved["dock-2"].state == "Downloading" and moved["dock-2"].aimed_at(D2)
        assert not moved["dock-2"].on(D2) and moved["dock-2"].target == D2
        assert moved["dock-5"].on(D2) and moved["dock-5"].version == "v-b2b2"
        assert moved["dock-5"].since > first["dock-5"].since

    # Past heartbeat_seconds every edge's document is read again (for its lastSeen).
    short = fleet.StatusReader(heartbeat_seconds=1.5)
    short.read(writer_client, PREFIX, pipeline)
    short.read(writer_client, PREFIX, pipeline)
    assert short.gets == 7 and short.requests == 9
    time.sleep(1.6)
    short.read(writer_client, PREFIX, pipeline)
    assert short.gets == 14 and short.requests == 17
