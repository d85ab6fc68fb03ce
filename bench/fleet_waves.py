"""Fleet rollouts at scale for bench/fleet_bench.py: simulated edges (the engine's own update
and status code, serving stubbed; tests/helpers/simfleet.py) against the real registry.

- ``sim_rollout``: N simulated edges at rest (registry requests per edge per hour), then a
  3-wave rollout driven from the registry alone (``edgepipe.publish.waves.WaveDriver``,
  the same ``rollout.advance`` as the operator): per wave, the pointer moves and the time
  until its last edge is Current.
"""

from __future__ import annotations

import contextlib
import resource
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

from edgepipe import fleet, oci
from edgepipe.publish.waves import WaveDriver
from edgepipe.rolloutspec import RolloutSpec
from tests.helpers import onnx_models as m
from tests.helpers.fleet import keypair, push
from tests.helpers.oci_registry import Registry
from tests.helpers.simfleet import SimFleet, run_waves, wave_times

WAVES = [{"edges": 2}, {"percent": 50}, {"percent": 100}]


def requests_made(counts: dict[str, int]) -> dict[str, int]:
    """The requests by kind, without the simulator's tally of those refused (each is
    already counted once among the requests)."""
    return {k: v for k, v in counts.items() if not k.endswith(" refused")}


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def publish_two(reg, tmp: Path, name: str) -> tuple[dict, dict, Path, str, str]:
    """Versions 1 and 2 of a one-model pipeline, signed; (v1, v2, public key, d1, d2)."""
    key, pub = keypair(tmp)
    versions = []
    for value in (1.0, 2.0):
        model = m.add_constant(tmp / f"{name}-v{value}.onnx", value)
        config = {"name": name, "steps": [{"model": {"name": "add", "path": str(model)}}]}
        versions.append(push(reg, tmp, config, "--sign-key", str(key)))
    client = oci.Client(reg.host, oci.Credentials(reg.username, reg.password), plain_http=True)
    d1, d2 = (client.get_manifest(oci.Reference.parse(v["pipelineUrl"]))[1] for v in versions)
    return versions[0], versions[1], pub, d1, d2


def point_all(reg, repository: str, edges: list[str], digest: str, workers: int = 8) -> None:
    """Every edge's pointer to ``digest`` (the manifest read once, PUT per edge, in threads:
    docker-registry answers 500 to a read of a manifest that is being PUT)."""
    clients = [
        oci.Client(reg.host, oci.Credentials(reg.username, reg.password), plain_http=True)
        for _ in range(workers)
    ]
    raw, _ = clients[0].get_manifest_bytes(oci.Reference(reg.host, repository, digest=digest))

    def put(i: int) -> None:
        c = clients[i % workers]
        url = f"http://{reg.host}/v2/{repository}/manifests/{fleet.pointer_tag(edges[i])}"
        c._check(c.reg.do_request(url, "PUT", data=raw, headers={"Content-Type": oci.MANIFEST}),
                 f"pointer of {edges[i]}")  # fmt: skip

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(put, range(len(edges))))


def wait_reported(sim: SimFleet, client: oci.Client, name: str, timeout: float) -> float:
    """Seconds until every edge's newest record names its pointer's target."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        records = fleet.list_status_tags(client, "edge", name)
        targeted = sum(bool(r.target12) for r in records.values())
        if len(records) == len(sim.edges) and targeted == len(records):
            return time.monotonic() - t0
        assert not sim.errors, sim.errors
        say(f"{len(records)} edges reported, {targeted} with their target")
        time.sleep(10)
    raise AssertionError(f"not every edge reported within {timeout:g} s")


def sim_rollout(n: int, tmp: Path, poll: float, probation: float, heartbeat: float,
                rest: float) -> dict:  # fmt: skip
    """N simulated edges: at rest, then a 3-wave rollout from the registry alone."""
    name = f"sim{n}"
    reg = Registry(tmp / f"registry-{n}", auth=True).start()
    try:
        v1, v2, pub, d1, d2 = publish_two(reg, tmp, name)
        repository = oci.Reference.parse(v1["pipelineUrl"]).repository
        edges = [f"sim-{i:04d}" for i in range(1, n + 1)]
        point_all(reg, repository, edges, d1)
        client = oci.Client(reg.host, oci.Credentials(reg.username, reg.password), plain_http=True)
        running = {"version": v1["pipelineVersion"], "digest": d1}
        say(f"{n} simulated edges starting (poll {poll:g} s, heartbeat {heartbeat:g} s)")
        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        with SimFleet(reg, v1["pipelineUrl"], running, n, tmp / f"cache-{n}", pub=pub,
                      poll=poll, probation=probation, heartbeat=heartbeat,
                      clients=16, workers=32) as sim:  # fmt: skip
            reported = wait_reported(sim, client, name, 300 + 5 * poll + n / 2)
            say(f"all {n} reported after {reported:.0f} s; at rest for {rest:g} s")
            time.sleep(poll)
            sim.reset_counts()
            t_rest = time.monotonic()
            time.sleep(rest)
            at_rest = requests_made(sim.reset_counts())
            rest_s = time.monotonic() - t_rest
            target = oci.Target(reg.host, "edge", oci.Credentials(reg.username, reg.password),
                                True)  # fmt: skip
            waves = [{"edges": edges[:2]} if "edges" in w else w for w in WAVES]
            spec = RolloutSpec.model_validate({"waves": waves, "waveTimeoutSeconds": 600})
            driver = WaveDriver(target, name, d2, v2["pipelineVersion"], edges, spec)
            say("rollout")
            t0 = time.time()
            done = run_waves(driver, poll=1.0, timeout=1800)
            total = time.time() - t0
            during = requests_made(sim.reset_counts())
            cpu = resource.getrusage(resource.RUSAGE_SELF)
        assert not sim.errors, sim.errors
    finally:
        reg.stop()
    times = wave_times(sim, done, d2)
    polls = at_rest.get("HEAD poll", 0)
    beats = at_rest.get("PUT status", 0)
    status_all = sum(v for k, v in at_rest.items() if k.endswith(" status"))
    per_poll = sum(v for k, v in at_rest.items() if not k.endswith(" status")) / max(1, polls)
    per_beat = status_all / max(1, beats)
    return {
        "edges": n, "poll_s": poll, "heartbeat_s": heartbeat, "probation_s": probation,
        "rest_s": round(rest_s, 1), "at_rest_requests": at_rest,
        "at_rest_per_edge_hour": round(sum(at_rest.values()) / n * 3600 / rest_s, 1),
        "per_poll": round(per_poll, 3), "per_heartbeat": round(per_beat, 3),
        "per_edge_hour_at_defaults": round(3600 / 60 * per_poll + 3600 / 300 * per_beat, 1),
        "waves": [{k: round(v, 2) if isinstance(v, float) else v for k, v in w.items()}
                  for w in times],
        "rollout_s": round(total, 1), "during_rollout_requests": during,
        "driver_registry_requests": driver.reader.requests,
        "sim_process_cpu_s": round(cpu.ru_utime + cpu.ru_stime - cpu0.ru_utime - cpu0.ru_stime,
                                   1),
        "sim_peak_rss_mb": round(cpu.ru_maxrss / 1024, 1),
    }  # fmt: skip


def print_sim(results: list[dict]) -> None:
    print("\n| simulated edges | poll | pointers moved (s), per wave | last edge Current after "
          "the wave's last move (s) | longest pointer move -> Current (s) | rollout (s) "
          "| requests / edge / hour at rest (at the defaults) |")  # fmt: skip
    print("|---:|---:|---|---|---|---:|---:|")
    for r in results:
        w = r["waves"]

        def col(key: str, w=w) -> str:
            return " / ".join(f"{x[key]:.1f}" for x in w)

        print(f"| {r['edges']} | {r['poll_s']:g} s | {col('pointers_s')} | {col('current_s')} "
              f"| {col('edge_max_s')} "
              f"| {r['rollout_s']:.0f} | {r['at_rest_per_edge_hour']:.0f} "
              f"({r['per_edge_hour_at_defaults']:.0f}) |")  # fmt: skip


def real_rollout(n: int, tmp: Path, poll: float, probation: float) -> dict:
    """N edge engines (real processes on the small model, signed) in a 3-wave rollout
    driven from the registry alone; per wave, pointer moves and the time to all Current."""
    from edgepipe.localengine import EngineProcess
    from tests.helpers.fleet import edge_env, status

    name = "real"
    reg = Registry(tmp / "registry-real", auth=True).start()
    engines: list = []
    try:
        v1, v2, pub, d1, d2 = publish_two(reg, tmp, name)
        repository = oci.Reference.parse(v1["pipelineUrl"]).repository
        edges = [f"dock-{i}" for i in range(1, n + 1)]
        point_all(reg, repository, edges, d1, workers=2)
        for e in edges:
            env = edge_env(reg, v1, e, tmp / f"cache-{e}", pub, seconds=poll,
                           probation_seconds=probation)  # fmt: skip
            env["EDGEPIPE_ENGINE_LOG_INFERENCES"] = "false"
            engines.append(EngineProcess(env=env, log_path=tmp / f"{e}.log", timeout=300))
            engines[-1].__enter__()
        say(f"{n} edge engines up")
        target = oci.Target(reg.host, "edge", oci.Credentials(reg.username, reg.password), True)
        waves = [{"edges": edges[:2]} if "edges" in w else w for w in WAVES]
        spec = RolloutSpec.model_validate({"waves": waves})
        driver = WaveDriver(target, name, d2, v2["pipelineVersion"], edges, spec)
        seen: dict[str, float] = {}

        class Watch:  # each engine's /status, for when it turned Current on v2
            def __init__(self) -> None:
                import threading

                self.stop = threading.Event()
                self.thread = threading.Thread(target=self.run, daemon=True)
                self.thread.start()

            def run(self) -> None:
                while not self.stop.is_set():
                    for e, eng in zip(edges, engines, strict=True):
                        if e not in seen:
                            st = status(eng.url)
                            if st["state"] == "Current" and st["running"]["digest"] == d2:
                                seen[e] = time.time()
                    time.sleep(0.2)

        watch = Watch()
        t0 = time.time()
        done = run_waves(driver, poll=0.5, timeout=900)
        total = time.time() - t0
        time.sleep(1)
        watch.stop.set()
        watch.thread.join(10)
    finally:
        for eng in engines:
            with contextlib.suppress(Exception):
                eng.__exit__(None, None, None)
        reg.stop()
    sim = SimpleNamespace(current_at={e: (d2, t) for e, t in seen.items()})
    times = wave_times(sim, done, d2)
    return {"edges": n, "poll_s": poll, "probation_s": probation, "rollout_s": round(total, 1),
            "waves": [{k: round(v, 2) if isinstance(v, float) else v for k, v in w.items()}
                      for w in times]}  # fmt: skip
