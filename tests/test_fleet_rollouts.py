"""Rollouts in waves, end to end: the operator on the test control plane drives a signed
Publish across 12 edge engines (real processes on the small model, polling every second)
through the real htpasswd registry. A recording proxy in front of the registry times every
pointer move and every status record an edge writes, so the order of the waves is checked
from what the registry saw. One fleet and one operator serve every scenario, in order:
v1 everywhere, a good rollout (v2), a bad one (v3, aborted), an offline edge (v4), the
operator SIGKILLed mid-rollout (v5)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from edgepipe import fleet, oci
from edgepipe.oci import signing
from tests.helpers.cli import cli
from tests.helpers.fleet import Load
from tests.helpers.fleet_rollouts import (
    EDGES,
    PIPELINE,
    PUBLISH,
    Fleet,
    RecordingProxy,
    StatusWatch,
    Versions,
    events,
    publish_manifest,
    rollout_status,
    wait_rollout,
)
from tests.helpers.kube import Kubectl, wait_for
from tests.helpers.publishes import publish_status, wait_publish

pytestmark = pytest.mark.cluster

# 2 named edges, then 50% (cumulative: 6 of 12), then 100%. Percent waves take edges in
# spec.edges order, skipping those already planned.
WAVES = [{"edges": ["dock-5", "dock-9"]}, {"percent": 50}, {"percent": 100}]
# The offline edge's wave waits this long for it: twice a wave's usual 4-5 s, so that a
# wave that ended without waiting shows (15 s made the case 5 s longer, for nothing).
WAVE_TIMEOUT = 10
PLAN = [
    ["dock-5", "dock-9"],
    ["dock-1", "dock-2", "dock-3", "dock-4"],
    ["dock-6", "dock-7", "dock-8", "dock-10", "dock-11", "dock-12"],
]


@dataclass
class World:
    kubectl: Kubectl
    kube: list[str]  # the CLI's --kubeconfig and -n
    proxy: RecordingProxy
    fleet: Fleet
    watch: StatusWatch
    versions: Versions
    version: str  # what every edge runs between scenarios
    digest: str


@pytest.fixture(scope="module")
def fleet_kubectl(cluster) -> Iterator[Kubectl]:
    """One namespace for the module's Publish and its fleet."""
    ns = f"fleet-rollouts-{uuid.uuid4().hex[:5]}"
    kubectl = Kubectl(cluster["kubeconfig"], ns)
    kubectl("create", "namespace", ns, namespaced=False)
    yield kubectl
    kubectl("delete", "namespace", ns, "--wait=false", namespaced=False, check=False)


@pytest.fixture(scope="module")
def world(operator, fleet_kubectl, auth_registry, cluster, tmp_path_factory) -> Iterator[World]:
    """v1 published to the 12 edges (all at once: no rollout yet), each edge started on
    its pointer and Current."""
    k, reg = fleet_kubectl, auth_registry
    folder = tmp_path_factory.mktemp("fleet")
    signer = signing.Signer.generate()
    (folder / "key.pem").write_text(signer.private_pem())
    k("create", "secret", "generic", "registry-creds",
      f"--from-literal=username={reg.username}", f"--from-literal=password={reg.password}")  # fmt: skip
    k("create", "secret", "generic", "edge-signing", f"--from-file=key={folder / 'key.pem'}")
    with RecordingProxy(reg.host) as proxy:
        versions = Versions(k, proxy, reg, folder)
        v1 = versions.add(1.0)
        k.apply(publish_manifest(proxy, {"version": v1}))
        st = wait_publish(k, "Published", PUBLISH)
        digest = versions.digest(st)
        repo = oci.Reference.parse(st["pipelineUrl"]).repository
        wait_for(
            "every edge's pointer on v1",
            lambda: all(pointer(versions.client, repo, e) == digest for e in EDGES),
            60,
        )
        (folder / "key.pub").write_text(st["publicKey"])
        edges = Fleet(proxy, reg, st, folder / "key.pub", folder)
        try:
            t = time.monotonic()
            edges.start()
            print(f"\n12 edges started in {time.monotonic() - t:.1f} s")
            edges.wait_all(digest)
            kube = ["--kubeconfig", str(cluster["kubeconfig"]), "-n", k.namespace]
            with StatusWatch(edges.urls()) as watch:
                yield World(k, kube, proxy, edges, watch, versions, v1, digest)
        finally:
            edges.stop()


def pointer(client: oci.Client, repository: str, edge: str) -> str | None:
    """The digest edge ``edge``'s pointer names; None before it has one."""
    ref = oci.Reference(client.registry, repository, tag=fleet.pointer_tag(edge))
    try:
        return fleet.manifest_digest(client, ref)
    except oci.NotInRegistry:
        return None


def roll(w: World, version: str, **rollout) -> float:
    """Publish ``version`` with a rollout in WAVES (and ``rollout``'s fields); the time."""
    t = time.monotonic()
    spec = {"version": version, "rollout": {"waves": WAVES, **rollout}}
    w.kubectl("patch", "publish", PUBLISH, "--type=merge", "-p", json.dumps({"spec": spec}))
    return t


def published_digest(w: World, version: str) -> str:
    st = wait_for(
        f"the Publish to publish {version}",
        lambda: (s := publish_status(w.kubectl, PUBLISH)).get("pipelineVersion") == version and s,
        90,
    )
    return w.versions.digest(st)


def check_waves_in_order(w: World, digest: str, since: float) -> None:
    """Each edge's pointer moved to ``digest`` exactly once, and no edge of a wave moved
    before every edge of the wave before it had reported Current on it."""
    moves = {e: w.proxy.pointer_moves(e, since) for e in EDGES}
    assert {e: [d for _, d in mv] for e, mv in moves.items()} == {e: [digest] for e in EDGES}
    for k in range(1, len(PLAN)):
        first = min(moves[e][0][0] for e in PLAN[k])
        for e in PLAN[k - 1]:
            current = w.proxy.current_at(e, digest, since)
            assert current is not None and current < first, (k, e, current, first)


def edges_cli(w: World, *flags: str) -> subprocess.CompletedProcess:
    return cli("publish", "edges", PUBLISH, *w.kube, *flags)


def test_bad_specs_are_refused_with_the_field_named(operator, fleet_kubectl) -> None:
    k = fleet_kubectl
    cases = [
        ({"waves": [{"edges": ["x-1", "x-9"]}, {"percent": 100}]},
         "spec.rollout.waves[0].edges[1]", "x-9"),
        ({"waves": [{"percent": 50}, {"percent": 50}, {"percent": 100}]},
         "spec.rollout.waves[1].percent", ""),
        ({"waves": [{"percent": 100}], "maxFailures": 4}, "spec.rollout.maxFailures", ""),
    ]  # fmt: skip
    for i, (rollout, _, _) in enumerate(cases):
        k.apply(
            {
                "apiVersion": "edgepipe.io/v1alpha1",
                "kind": "Publish",
                "metadata": {"name": f"bad-{i}"},
                "spec": {
                    "pipeline": PIPELINE,
                    "registry": {"url": "127.0.0.1:9/edge"},
                    "edges": ["x-1", "x-2", "x-3"],
                    "rollout": rollout,
                },
            }
        )
    for i, (_, where, words) in enumerate(cases):
        st = wait_publish(k, "Failed", f"bad-{i}", timeout=60)
        assert st["reason"] == "InvalidSpec", st
        assert where in st["message"] and words in st["message"], st["message"]
    for i in range(len(cases)):
        k("delete", "publish", f"bad-{i}")


def test_good_rollout_in_three_waves(operator, world: World) -> None:
    w = world
    v2 = w.versions.add(2.0)
    with Load(w.fleet.url("dock-12"), PIPELINE, rate=10) as load:
        since = roll(w, v2)
        digest = published_digest(w, v2)
        wait_rollout(w.kubectl, v2, "Progressing", 60)
        progress = subprocess.Popen(
            [sys.executable, "-m", "edgepipe.cli", "publish", "rollout", PUBLISH, *w.kube],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        wait_for("wave 2", lambda: rollout_status(w.kubectl).get("wave") == 2, 60, interval=0.2)
        print(f"\n$ edgepipe publish edges {PUBLISH}   # during wave 2\n{edges_cli(w).stdout}")
        out, err = progress.communicate(timeout=180)
        r = wait_rollout(w.kubectl, v2, "Complete", 30)
        w.fleet.wait_all(digest, timeout=30)
        time.sleep(1)
    took = time.monotonic() - since
    print(f"\nrollout of v2 to 12 edges in 3 waves: {took:.1f} s")
    print(f"$ edgepipe publish rollout {PUBLISH}\n{err}{out}")
    assert not load.failures, load.failures[:3]
    assert len(load.changes()) == 2, load.changes()  # v1's model, then v2's, once
    assert progress.returncode == 0, err
    assert "wave 3/3: " in err, err  # a line per wave change
    assert out.startswith("Complete: 12 updated, 0 pending, 0 failed"), out
    assert (r["updated"], r["pending"], r["failed"], r["wave"]) == (12, 0, 0, 3), r
    assert [wave["edges"] for wave in r["waves"]] == PLAN
    assert r["startedAt"] and r["finishedAt"]
    check_waves_in_order(w, digest, since)
    # The Publish shows each edge, as the CLI does.
    st = publish_status(w.kubectl, PUBLISH)
    assert {(e["name"], e["version"], e["state"]) for e in st["edges"]} == {
        (e, v2, "Current") for e in EDGES
    }
    table = edges_cli(w).stdout
    print(table)
    rows = json.loads(edges_cli(w, "-o", "json").stdout)
    assert {(row["edge"], row["version"], row["state"]) for row in rows} == {
        (e, v2, "Current") for e in EDGES
    }
    assert table.split()[:5] == ["EDGE", "VERSION", "STATE", "LAST", "SEEN"]
    assert len(w.kubectl("get", "events", "--field-selector", "reason=RolloutComplete").stdout)
    w.version, w.digest = v2, digest


def test_bad_version_aborts_after_wave_one(operator, world: World) -> None:
    w = world
    good, good_digest = w.version, w.digest
    v3 = w.versions.breaking()
    first, rest = PLAN[0], [e for wave in PLAN[1:] for e in wave]
    # Both edges of wave 1 serve a client, so the NaN answers are seen in their probation.
    with Load(w.fleet.url(first[0]), PIPELINE), Load(w.fleet.url(first[1]), PIPELINE):
        since = roll(w, v3, maxFailures=1)
        digest = published_digest(w, v3)
        r = wait_rollout(w.kubectl, v3, "Aborted", 90)
        print(f"\n$ edgepipe publish edges {PUBLISH}   # aborted\n{edges_cli(w).stdout}")
        w.fleet.wait_all(good_digest, first, timeout=30)
    time.sleep(3)  # three more polls of the operator: nothing moves after the abort
    r = rollout_status(w.kubectl)
    assert r["phase"] == "Aborted" and r["wave"] == 1, r
    assert sorted(r["failedEdges"]) == sorted(first) and r["failed"] == 2, r
    assert r["reason"] and r["finishedAt"], r
    # Wave 1: moved to v3, then back to the good version; its edges serve it again.
    for e in first:
        assert [d for _, d in w.proxy.pointer_moves(e, since)] == [digest, good_digest]
    # Waves 2-3: never moved; never served anything else (the registry's status records
    # and their own /status agree).
    short = good_digest.removeprefix("sha256:")[:12]
    for e in rest:
        assert w.proxy.pointer_moves(e, since) == [], e
        assert {rec[2] for rec in w.proxy.status_records(e, since)} <= {short}, e
        assert w.watch.digests(e, since) <= {good_digest}, e
    w.fleet.wait_all(good_digest)
    (event,) = [ev for ev in events(w.kubectl, "RolloutAborted") if v3 in ev["message"]] or [None]
    assert event and event["type"] == "Warning" and all(e in event["message"] for e in first)
    print(f"\nEvent {event['reason']}: {event['message']}")
    # The CLI says why, and exits 1.
    proc = cli("publish", "rollout", PUBLISH, *w.kube, check=False)
    said = proc.stdout + proc.stderr
    print(f"\n$ edgepipe publish rollout {PUBLISH}\n{said}")
    assert proc.returncode == 1 and "Aborted" in said and all(e in said for e in first), said
    w.version, w.digest = good, good_digest


def test_an_offline_edge_lets_the_wave_complete_and_catches_up(operator, world: World) -> None:
    w = world
    v4 = w.versions.add(4.0)
    gone = PLAN[1][0]
    since = roll(w, v4, waveTimeoutSeconds=WAVE_TIMEOUT)
    digest = published_digest(w, v4)
    w.fleet.stop(gone)  # the rollout runs; this edge is switched off
    r = wait_rollout(w.kubectl, v4, "Complete", 150)
    assert (r["updated"], r["pending"], r["failed"]) == (11, 1, 0), r
    # Its pointer moved with its wave; its wave ended on the timeout, not before.
    assert [d for _, d in w.proxy.pointer_moves(gone, since)] == [digest]
    wave2 = min(w.proxy.pointer_moves(e, since)[0][0] for e in PLAN[1])
    wave3 = min(w.proxy.pointer_moves(e, since)[0][0] for e in PLAN[2])
    assert wave3 - wave2 >= WAVE_TIMEOUT - 1, (wave2, wave3)
    w.fleet.wait_all(digest, [e for e in EDGES if e != gone])
    # Back on: it follows its pointer, and the Publish shows it Current.
    w.fleet.start(gone)
    w.watch.urls[gone] = w.fleet.url(gone)
    w.fleet.wait_all(digest, [gone], timeout=60)
    wait_for(
        f"{gone} Current on {v4} in the Publish",
        lambda: any(
            e["name"] == gone and e.get("state") == "Current" and e.get("version") == v4
            for e in publish_status(w.kubectl, PUBLISH).get("edges") or []
        ),
        30,
    )
    # And the finished rollout counts it: updated, no longer pending.
    wait_for(
        "the rollout to count the late edge",
        lambda: (r := rollout_status(w.kubectl))["updated"] == 12 and r["pending"] == 0 and r,
        30,
    )
    w.version, w.digest = v4, digest


def test_operator_killed_mid_rollout_resumes_from_its_status(operator, world: World) -> None:
    w = world
    v5 = w.versions.add(5.0)
    since = roll(w, v5, waveTimeoutSeconds=600)
    digest = published_digest(w, v5)
    wait_for(
        "wave 2 under way",
        lambda: (r := rollout_status(w.kubectl)).get("version") == v5 and r.get("wave", 0) >= 2,
        90,
        interval=0.2,
    )
    operator.kill()
    killed = time.monotonic()
    time.sleep(2)
    operator.start()
    r = wait_rollout(w.kubectl, v5, "Complete", 150)
    # Killed in the middle: wave 2 had moved, wave 3 had not.
    assert all(w.proxy.pointer_moves(e, since) for e in PLAN[1])
    assert min(w.proxy.pointer_moves(e, since)[0][0] for e in PLAN[1]) < killed
    assert min(w.proxy.pointer_moves(e, since)[0][0] for e in PLAN[2]) > killed
    assert (r["updated"], r["pending"], r["failed"]) == (12, 0, 0), r
    check_waves_in_order(w, digest, since)  # each pointer moved once, wave after wave
    w.fleet.wait_all(digest)
    w.version, w.digest = v5, digest
