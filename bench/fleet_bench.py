"""Fleet update benchmark: how long an edge takes from a pointer move to serving the new
version, what the swap costs its clients, and what an edge at rest asks of the registry.

Run with ``make bench-fleet`` (or ``.venv/bin/python bench/fleet_bench.py``). One edge
engine (a real process, signed publishes, the htpasswd registry behind a counting proxy)
serves a client at about 20 requests/s while its pointer is moved back and forth between
two versions of the small model (``--pad-mb`` makes the model that much larger, to show
the download). Per swap: poll wait (pointer move to the engine seeing it), download,
load, smoke test, switch (from the engine's log), and the total; failed requests; p99
latency from the move until 2 s after the switch, against the 10 s before the move. At
rest: registry requests per poll and per heartbeat, as requests per edge per hour at the
default interval (60 s) and heartbeat (5 min).

``--sim 100,1000`` adds issue 26's fleet measurements (bench/fleet_waves.py): that many
simulated edges (the engine's own update and status code, serving stubbed) at rest and in a
3-wave rollout through the real registry; ``--skip-swaps`` leaves out the one-edge part.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edgepipe import fleet, oci  # noqa: E402
from edgepipe.localengine import EngineProcess  # noqa: E402
from tests.helpers import onnx_models as m  # noqa: E402
from tests.helpers.fleet import CountingProxy, Load, edge_env, keypair, push, wait_status  # noqa: E402
from tests.helpers.oci_registry import Registry  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
import fleet_operator  # noqa: E402
import fleet_waves  # noqa: E402

EDGE = "bench-1"
TOOK = re.compile(r"^(\S+ \S+) INFO .*update: took download ([\d.]+) s, load ([\d.]+) s, "
                  r"smoke ([\d.]+) s, switch ([\d.]+) s", re.M)  # fmt: skip
SEEN = re.compile(r"^(\S+ \S+) INFO .*update: Downloading", re.M)


def stamp(text: str) -> float:
    return dt.datetime.strptime(text, "%Y-%m-%d %H:%M:%S,%f").timestamp()


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98] if len(values) > 10 else max(values)


def swaps(args, reg, proxy, tmp: Path) -> list[dict]:
    key, pub = keypair(tmp)
    versions = []
    for value in (1.0, 2.0):
        model = m.add_constant(tmp / f"v{value}.onnx", value, pad_bytes=int(args.pad_mb * 1e6))
        config = {"name": "fleet", "steps": [{"model": {"name": "add", "path": str(model)}}]}
        edges = ("--edge", EDGE) if value == 1.0 else ()
        versions.append(push(reg, tmp, config, "--sign-key", str(key), *edges))
    client = oci.Client(reg.host, oci.Credentials(reg.username, reg.password), plain_http=True)
    repo = oci.Reference.parse(versions[0]["pipelineUrl"]).repository
    digest = {
        v["pipelineVersion"]: client.get_manifest(oci.Reference.parse(v["pipelineUrl"]))[1]
        for v in versions
    }
    env = edge_env(reg, versions[0], EDGE, tmp / "cache", pub, seconds=args.poll,
                   probation_seconds=args.probation)  # fmt: skip
    env["PIPELINE_URL"] = env["PIPELINE_URL"].replace(reg.host, proxy.host)
    env["OCI_REGISTRY"] = proxy.host
    rows = []
    with EngineProcess(env=env, log_path=tmp / "engine.log", timeout=120) as engine:
        with Load(engine.url, "fleet", rate=20) as load:
            times: list[float] = []
            for i in range(args.swaps):
                target = versions[(i + 1) % 2]["pipelineVersion"]
                time.sleep(10)  # steady state before the move
                n0, failed0 = len(load.latencies), len(load.failures)
                steady = load.latencies[-int(10 * 20 * 0.9) :]
                moved = time.time()
                fleet.move_pointer(client, repo, digest[target], EDGE)
                wait_status(engine.url, "Probation", target, timeout=args.poll * 2 + 60)
                time.sleep(2)
                swap = load.latencies[n0:]
                took = TOOK.findall(engine.log())[-1]
                seen = SEEN.findall(engine.log())[-1]
                download, load_s, smoke, switch = map(float, took[1:])
                rows.append({
                    "poll wait": stamp(seen) - moved,
                    "download": download, "load": load_s, "smoke": smoke, "switch": switch,
                    "total": stamp(took[0]) - moved,
                    "failed": len(load.failures) - failed0,
                    "p99 swap ms": p99(swap) * 1e3, "p99 steady ms": p99(steady) * 1e3,
                })  # fmt: skip
                wait_status(engine.url, "Current", target, timeout=args.probation + 30)
                times.append(rows[-1]["total"])
        print(f"engine log: {tmp / 'engine.log'}", file=sys.stderr)
    return rows


def at_rest(reg, proxy, tmp: Path, seconds: float) -> tuple[float, float]:
    """(registry requests per poll, per heartbeat) of an edge where nothing changes."""
    config = {"name": "rest", "steps": [{"model": {"name": "add", "path": str(
        m.add_constant(tmp / "rest.onnx", 1.0))}}]}  # fmt: skip
    status = push(reg, tmp, config, "--edge", EDGE)
    env = edge_env(reg, status, EDGE, tmp / "rest-cache", None, seconds=1,
                   heartbeat_seconds=5)  # fmt: skip
    env["PIPELINE_URL"] = env["PIPELINE_URL"].replace(reg.host, proxy.host)
    env["OCI_REGISTRY"] = proxy.host
    env["EDGEPIPE_ENGINE_LOG_INFERENCES"] = "false"
    with EngineProcess(env=env, log_path=tmp / "rest.log", timeout=120):
        time.sleep(3)
        proxy.requests.clear()
        proxy.codes.clear()
        time.sleep(seconds)
        seen, codes = list(proxy.requests), list(proxy.codes)
    polls = [r for r in seen if "/pipelines/rest/manifests/" in r]
    beats = [r for r in seen if r.startswith("PUT") and "/status/rest/" in r]
    other = [r for r in seen if r not in polls and "/status/rest/" not in r]
    assert not other, other
    # A poll is one request, or two when the registry first answers 401 (a login retried).
    answered = [r for r, c in zip(seen, codes, strict=False) if c != 401]
    per_poll = len(polls) / max(1, len([r for r in answered if r in polls]))
    per_beat = len([r for r in seen if "/status/rest/" in r]) / max(1, len(beats))
    print(f"at rest: {len(polls)} poll requests, {len(beats)} heartbeats in {seconds:g} s",
          file=sys.stderr)  # fmt: skip
    return per_poll, per_beat


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--swaps", type=int, default=4)
    ap.add_argument("--poll", type=float, default=5.0, help="EDGEPIPE_ENGINE_UPDATE_SECONDS")
    ap.add_argument("--probation", type=float, default=3.0)
    ap.add_argument("--pad-mb", type=float, default=20.0, help="model size beyond the graph")
    ap.add_argument("--rest-seconds", type=float, default=20.0)
    ap.add_argument("--sim", default="", help="simulated fleet sizes, e.g. 100,1000")
    ap.add_argument("--sim-poll", type=float, default=20.0)
    ap.add_argument("--sim-heartbeat", type=float, default=60.0)
    ap.add_argument("--sim-probation", type=float, default=1.0)
    ap.add_argument("--sim-rest", type=float, default=120.0)
    ap.add_argument("--skip-swaps", action="store_true")
    ap.add_argument("--real", type=int, default=0, help="edge engines in a 3-wave rollout")
    ap.add_argument("--operator", default="", help="edge counts over 10 Publishes: 100,300,1000")
    ap.add_argument("--op-edge-poll", type=float, default=10.0, help="operator's edge poll")
    ap.add_argument("--op-rest", type=float, default=60.0)
    args = ap.parse_args()
    if args.real:
        with tempfile.TemporaryDirectory() as d:
            real = fleet_waves.real_rollout(args.real, Path(d), args.poll, args.probation)
        print(json.dumps(real), flush=True)
    if args.operator:
        ops = []
        for n in (int(x) for x in args.operator.split(",")):
            with tempfile.TemporaryDirectory() as d:
                ops.append(fleet_operator.run(n, Path(d), args.sim_poll, args.op_edge_poll,
                                              args.op_rest))  # fmt: skip
            print(json.dumps(ops[-1]), flush=True)
        fleet_operator.print_results(ops)
    if args.sim:
        results = []
        for n in (int(x) for x in args.sim.split(",")):
            with tempfile.TemporaryDirectory() as d:
                results.append(fleet_waves.sim_rollout(
                    n, Path(d), args.sim_poll, args.sim_probation, args.sim_heartbeat,
                    args.sim_rest))  # fmt: skip
            print(json.dumps(results[-1]), flush=True)
        fleet_waves.print_sim(results)
    if args.skip_swaps:
        return
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        reg = Registry(tmp / "registry", auth=True).start()
        try:
            with CountingProxy(reg.host) as proxy:
                rows = swaps(args, reg, proxy, tmp)
                per_poll, per_beat = at_rest(reg, proxy, tmp, args.rest_seconds)
        finally:
            reg.stop()
    keys = list(rows[0])
    print("| swap | " + " | ".join(keys) + " |")
    print("|" + "---|" * (len(keys) + 1))
    for i, row in enumerate(rows, 1):
        print(f"| {i} | " + " | ".join(f"{row[k]:.3f}".rstrip("0").rstrip(".") if isinstance(
            row[k], float) else str(row[k]) for k in keys) + " |")  # fmt: skip
    hourly = 3600 / 60 * per_poll + 3600 / 300 * per_beat
    print(f"\nat rest: {per_poll:g} request(s) per poll, {per_beat:g} per heartbeat -> "
          f"{hourly:g} registry requests per edge per hour at the defaults (60 s, 5 min)")  # fmt: skip


if __name__ == "__main__":
    main()
