"""A simulated fleet of 50 edges (the engine's own update and status code, serving stubbed)
through the real registry, in a 3-wave rollout driven from the registry alone: each wave is
Current within 2 poll intervals of its pointers moving, the edges at rest only poll, and
each edge keeps one status tag, written only when its record changed."""

from __future__ import annotations

import itertools
import time

from edgepipe import fleet, oci
from edgepipe.publish.waves import WaveDriver
from edgepipe.rolloutspec import RolloutSpec
from tests.helpers import onnx_models as m
from tests.helpers.fleet import keypair, push
from tests.helpers.simfleet import SimFleet, run_waves, wave_times

N, POLL = 50, 4.0


def test_fifty_simulated_edges_roll_out_in_three_waves(auth_registry, tmp_path) -> None:
    reg = auth_registry
    key, pub = keypair(tmp_path)
    config = {"name": "simfleet", "steps": [{"model": {"name": "add", "path": str(
        m.add_constant(tmp_path / "v1.onnx", 1.0))}}]}  # fmt: skip
    edges = [f"sim-{i:04d}" for i in range(1, N + 1)]
    flags = [f for e in edges for f in ("--edge", e)]
    t0 = time.monotonic()
    v1 = push(reg, tmp_path, config, "--sign-key", str(key), *flags)
    config["steps"][0]["model"]["path"] = str(m.add_constant(tmp_path / "v2.onnx", 2.0))
    v2 = push(reg, tmp_path, config, "--sign-key", str(key))
    client = oci.Client(reg.host, oci.Credentials(reg.username, reg.password), plain_http=True)
    d1, d2 = (client.get_manifest(oci.Reference.parse(v["pipelineUrl"]))[1] for v in (v1, v2))
    running = {"version": v1["pipelineVersion"], "digest": d1}
    status_repo = fleet.status_repository("edge", "simfleet")

    print(f"published in {time.monotonic() - t0:.1f} s")
    with SimFleet(reg, v1["pipelineUrl"], running, N, tmp_path / "c", pub=pub, poll=POLL,
                  probation=0.5) as sim:  # fmt: skip
        # Every edge reports once (its first record), then only polls.
        deadline = time.monotonic() + 90
        while len(fleet.list_status_tags(client, "edge", "simfleet")) < N:
            assert time.monotonic() < deadline and not sim.errors, sim.errors
            time.sleep(0.5)
        while any(
            r.target12 is None for r in fleet.list_status_tags(client, "edge", "simfleet").values()
        ):
            assert time.monotonic() < deadline, "every edge reports its pointer's target"
            time.sleep(0.5)  # each edge has polled since its first record
        print(f"fleet reported at {time.monotonic() - t0:.1f} s")
        sim.reset_counts()
        time.sleep(POLL)
        rest = sim.reset_counts()
        # Nothing but polls: no status written (a DELETE may be a retry of an earlier one).
        retried = {"DELETE status", "DELETE status refused"}
        assert set(rest) <= {"HEAD poll", *retried} and "PUT status" not in rest, rest
        assert N * 0.5 <= rest["HEAD poll"] <= N * 2, rest
        refused_before = sim.totals["DELETE status refused"]  # each tried again later

        target = oci.Target(reg.host, "edge", oci.Credentials(reg.username, reg.password), True)
        spec = RolloutSpec.model_validate(
            {"waves": [{"edges": edges[:2]}, {"percent": 50}, {"percent": 100}]}
        )
        driver = WaveDriver(target, "simfleet", d2, v2["pipelineVersion"], edges, spec)
        waves = run_waves(driver, poll=0.5, timeout=120)
        during = sim.reset_counts()
        print(f"rolled out at {time.monotonic() - t0:.1f} s")
        assert not sim.errors, sim.errors

    assert [len(w["edges"]) for w in waves] == [2, 23, 25]
    times = wave_times(sim, waves, d2)
    print(times)
    for i, w in enumerate(times):
        assert w["current"] == w["edges"], (i, w)
        assert w["current_s"] <= 2 * POLL and w["edge_max_s"] <= 2 * POLL, (i, times[i])
    # In order: no edge of a wave was Current on v2 before the wave before it was all Current.
    for earlier, later in itertools.pairwise(waves):
        done = max(sim.current_at[e][1] for e in earlier["edges"])
        assert min(sim.current_at[e][1] for e in later["edges"]) > done
    assert sorted(sim.current(d2)) == edges
    # Status written only on a change: a new tag for the pointer's new target, Downloading,
    # Probation and Current (some may coalesce), each previous manifest deleted.
    assert during.get("PUT status", 0) <= 4 * N, during
    # One DELETE per record written at most, once the registry's refusals are taken off;
    # a delete it refused before the rollout may be done during it.
    deleted = during.get("DELETE status", 0) - during.get("DELETE status refused", 0)
    assert deleted <= during["PUT status"] + refused_before, (during, refused_before)
    records = fleet.list_status_tags(client, "edge", "simfleet")
    # Each earlier record's manifest deleted (docker-registry may refuse a delete with a 500
    # while other edges write their tags; it is tried again, and the newest record wins).
    assert N <= len(client.tags(status_repo)) <= N + 3, client.tags(status_repo)
    assert all(
        r.state == "Current" and fleet.same_digest(r.running12, d2) for r in records.values()
    )
