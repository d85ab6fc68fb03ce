"""The operator driving fleet rollouts, for bench/fleet_bench.py: a test control plane (kwok),
the real operator, 10 Pipelines each with a Publish to N/10 simulated edges (the engine's own
update and status code, tests/helpers/simfleet.py) through the real registry.

Per N: the operator's CPU seconds, peak RSS and API writes (its audit log) at rest (edge
status unchanged: nothing should be written) and during one 3-wave rollout on every
Publish, and the waves' times (status.rollout, and each simulated edge's Current).
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

from edgepipe import oci
from edgepipe.oci import signing
from tests.helpers import onnx_models as m
from tests.helpers.oci_registry import Registry
from tests.helpers.scale_cluster import ProcStats, ScaleCluster, wait_until
from tests.helpers.simfleet import SimFleet

NS = "fleet"
PUBLISHES = 10
WAVES = [{"percent": 2}, {"percent": 50}, {"percent": 100}]
WRITES = ("create", "update", "patch", "delete")


def say(text: str) -> None:
    import sys

    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def pipeline(name: str, model: oci.PushedModel) -> dict:
    steps = [{"model": {"name": "add", "url": model.reference, "sha256": model.sha256}}]
    return {
        "apiVersion": "edgepipe.io/v1alpha1", "kind": "Pipeline",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"deployed": True, "steps": steps,
                 "deployment": {"replicas": 1, "cpus": 0.1, "memory": "64Mi"}},
    }  # fmt: skip


def publish(name: str, reg, edges: list[str], waves: list | None, version: str = "") -> dict:
    spec = {
        "pipeline": name,
        **({"version": version} if version else {}),
        "registry": {"url": f"{reg.host}/edge", "secretRef": {"name": "registry-creds"}},
        "signing": {"secretRef": {"name": "edge-signing"}},
        "edges": edges,
    }
    if waves:
        spec["rollout"] = {"waves": waves, "waveTimeoutSeconds": 600}
    return {"apiVersion": "edgepipe.io/v1alpha1", "kind": "Publish",
            "metadata": {"name": name, "namespace": NS}, "spec": spec}  # fmt: skip


class Sampler:
    def __init__(self, pid: int) -> None:
        self.proc, self.peak = ProcStats(pid), 0.0

    def __call__(self) -> None:
        self.peak = max(self.peak, self.proc.memory_mb()[0])


def seconds(a: str | None, b: str | None) -> float:
    from datetime import datetime

    if not a or not b:
        return -1.0
    t = [datetime.fromisoformat(x.replace("Z", "+00:00")) for x in (a, b)]
    return round((t[1] - t[0]).total_seconds(), 1)


def writes(events: list[dict]) -> dict[str, int]:
    out: dict[str, int] = {}
    for e in events:
        if e["verb"] in WRITES:
            ref = e.get("objectRef") or {}
            key = f"{e['verb']} {ref.get('resource')}" + (
                f"/{ref['subresource']}" if ref.get("subresource") else ""
            )
            out[key] = out.get(key, 0) + 1
    return out


def run(n: int, work: Path, poll: float, edge_poll: float, rest: float) -> dict:
    """N simulated edges over 10 Publishes, driven by the operator."""
    per = n // PUBLISHES
    reg = Registry(work / f"registry-{n}", auth=True).start()
    cluster = ScaleCluster(work / f"cp-{n}", pods=4 * PUBLISHES + 20).start()
    fleets: list[SimFleet] = []
    try:
        kubectl = cluster.namespace(NS)
        kubectl("create", "secret", "generic", "registry-creds",
                f"--from-literal=username={reg.username}",
                f"--from-literal=password={reg.password}")  # fmt: skip
        signer = signing.Signer.generate()
        (work / "key.pem").write_text(signer.private_pem())
        (work / "pub.pem").write_text(signer.public_pem())
        kubectl(
            "create", "secret", "generic", "edge-signing", f"--from-file=key={work / 'key.pem'}"
        )
        client = oci.Client(reg.host, oci.Credentials(reg.username, reg.password), plain_http=True)
        models = [
            oci.push_model(client, m.add_constant(work / f"add{v:g}.onnx", v), name="add",
                           repository=f"edge/models/add{v:g}")
            for v in (1.0, 2.0)
        ]  # fmt: skip
        op = cluster.start_operator(
            work / f"operator-{n}.log",
            EDGEPIPE_OPERATOR_EDGE_POLL_SECONDS=str(edge_poll),
            EDGEPIPE_OPERATOR_EDGE_UPLOAD_SECONDS="300",
        )
        sample = Sampler(op.proc.pid)
        names = [f"p{i}" for i in range(PUBLISHES)]
        edges = {p: [f"{p}-e{j:04d}" for j in range(per)] for p in names}
        cluster.create(NS, (pipeline(p, models[0]) for p in names))
        cluster.create(NS, (publish(p, reg, edges[p], None) for p in names))
        say(f"N={n}: 10 Pipelines and Publishes applied")

        def publishes() -> list[dict]:
            return cluster.get(f"/apis/edgepipe.io/v1alpha1/namespaces/{NS}/publishes")["items"]

        def rollouts(phase: str, version: dict | None = None) -> bool:
            items = publishes()
            return len(items) == PUBLISHES and all(
                ((p.get("status") or {}).get("rollout") or {}).get("phase") == phase
                and (version is None or p["status"]["rollout"].get("version") == version[
                    p["metadata"]["name"]])
                for p in items
            )  # fmt: skip

        wait_until("10 Publishes Published", lambda: all(
            (p.get("status") or {}).get("phase") == "Published" for p in publishes()
        ) and len(publishes()) == PUBLISHES, 600, 2.0, sample)  # fmt: skip
        v1 = {p["metadata"]["name"]: p["status"] for p in publishes()}
        rss_base = ProcStats(op.proc.pid).memory_mb()[0]  # 10 Publishes, no edge reported yet
        for p in names:
            st = v1[p]
            d1 = client.get_manifest(oci.Reference.parse(st["pipelineUrl"]))[1]
            running = {"version": st["pipelineVersion"], "digest": d1}
            sim = SimFleet(reg, st["pipelineUrl"], running, 0, work / f"cache-{n}-{p}",
                           pub=work / "pub.pem", poll=poll, probation=1.0, heartbeat=300,
                           clients=2, workers=6)  # fmt: skip
            sim.edges = edges[p]
            fleets.append(sim.__enter__())
        say(f"N={n}: {n} simulated edges started (poll {poll:g} s)")
        wait_until("every edge Current on v1 (rollouts Complete)", lambda: rollouts("Complete"),
                   300 + 3 * poll, 2.0, sample)  # fmt: skip
        time.sleep(2 * edge_poll)  # the edges' first records (target set) are read
        # At rest: nothing changes; what does the operator spend and write?
        pid = op.proc.pid
        cpu0, audit0, sample.peak = ProcStats(pid).cpu_seconds(), len(cluster.audit()), 0.0
        rss_rest0 = ProcStats(pid).memory_mb()[0]
        say(f"N={n}: at rest for {rest:g} s")
        t0 = time.monotonic()
        while time.monotonic() - t0 < rest:
            sample()
            time.sleep(1)
        rest_cpu = ProcStats(pid).cpu_seconds() - cpu0
        rest_writes = writes(cluster.audit()[audit0:])
        # One rollout of a new version on every Publish, in 3 waves.

        def pipelines() -> dict[str, dict]:
            items = cluster.get(f"/apis/edgepipe.io/v1alpha1/namespaces/{NS}/pipelines")["items"]
            return {p["metadata"]["name"]: p.get("status") or {} for p in items}

        before = {k: v.get("version") for k, v in pipelines().items()}
        for p in names:
            kubectl("apply", "-f", "-", stdin=json.dumps(pipeline(p, models[1])))
        wait_until("the Pipelines' new versions", lambda: all(
            st.get("version") != before[k] and st.get("phase") == "Running"
            for k, st in pipelines().items()), 600, 2.0, sample)  # fmt: skip
        v2 = {k: st["version"] for k, st in pipelines().items()}
        t1, cpu1, audit1 = time.time(), ProcStats(pid).cpu_seconds(), len(cluster.audit())
        for p in names:
            kubectl("apply", "-f", "-", stdin=json.dumps(publish(p, reg, edges[p], WAVES, v2[p])))
        say(f"N={n}: v2 published with a rollout in 3 waves")
        wait_until("v2 published", lambda: all(
            (p.get("status") or {}).get("pipelineVersion") == v2[p["metadata"]["name"]]
            for p in publishes()), 600, 2.0, sample)  # fmt: skip
        v2 = {p["metadata"]["name"]: p["status"]["pipelineVersion"] for p in publishes()}
        rolled = wait_until("rollouts Complete", lambda: rollouts("Complete", v2),
                            1800, 2.0, sample)  # fmt: skip
        roll_cpu = ProcStats(pid).cpu_seconds() - cpu1
        roll_writes = writes(cluster.audit()[audit1:])
        waves = [  # per wave: seconds from its pointers' move to done, over the Publishes
            [seconds(w.get("movedAt"), w.get("doneAt"))
             for w in p["status"]["rollout"].get("waves", [])]
            for p in publishes()
        ]  # fmt: skip
        return {
            "edges": n, "publishes": PUBLISHES, "edge_poll_s": edge_poll, "poll_s": poll,
            "rss_base_mb": round(rss_base, 1), "rss_at_rest_mb": round(rss_rest0, 1),
            "peak_rss_mb": round(sample.peak, 1), "extra_rss_mb": round(sample.peak - rss_base, 1),
            "rest_s": rest, "rest_cpu_s": round(rest_cpu, 2), "rest_writes": rest_writes,
            "rollout_s": round(time.time() - t1, 1), "rollout_wait_s": round(rolled, 1),
            "rollout_cpu_s": round(roll_cpu, 2), "rollout_writes": roll_writes,
            "wave_s_max": [max(w[i] for w in waves) for i in range(len(waves[0]))],
            "wave_s_min": [min(w[i] for w in waves) for i in range(len(waves[0]))],
            "operator_log": str(work / f"operator-{n}.log"),
        }  # fmt: skip
    finally:
        for sim in fleets:
            with contextlib.suppress(Exception):
                sim.__exit__(None, None, None)
        cluster.stop()
        reg.stop()


def print_results(results: list[dict]) -> None:
    print("\n| edges (10 Publishes) | operator extra RSS (MB) | peak RSS (MB) | CPU s at rest "
          "/ 1,000 edges / min | API writes at rest | rollout CPU s / 1,000 edges "
          "| rollout API writes | rollout (s) | waves (s, slowest Publish) |")  # fmt: skip
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in results:
        n = r["edges"]
        print(f"| {n} | {r['extra_rss_mb']} | {r['peak_rss_mb']} "
              f"| {r['rest_cpu_s'] * 1000 / n * 60 / r['rest_s']:.2f} "
              f"| {sum(r['rest_writes'].values())} | {r['rollout_cpu_s'] * 1000 / n:.1f} "
              f"| {sum(r['rollout_writes'].values())} | {r['rollout_s']:.0f} "
              f"| {' / '.join(str(x) for x in r['wave_s_max'])} |")  # fmt: skip
