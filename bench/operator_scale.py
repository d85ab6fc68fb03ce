"""The operator at scale: N Pipelines applied at once to a fresh test control plane.

For each N it reports the time until all are Running, the operator's peak RSS and CPU
seconds, its API requests per Pipeline (counted in the apiserver's audit log, which records
the operator's user only), the control plane's CPU seconds by component, and the time for
a change that touches every Pipeline (a new engine image in the operator's settings) to be
rolled out and Running again.

    .venv/bin/python bench/operator_scale.py [--sizes 100,200,500,1000] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.helpers.scale_cluster import (  # the harness lives with the tests
    ProcStats,
    ScaleCluster,
    pipeline,
    requests_by_verb,
    wait_until,
)

NAMESPACE = "scale"


class Sampler:
    """Polls the operator's RSS (the peak is the kernel's own high-water mark)."""

    def __init__(self, pid: int) -> None:
        self.proc = ProcStats(pid)
        self.peak = 0.0

    def __call__(self) -> None:
        self.peak = max(self.peak, self.proc.memory_mb()[1])


def all_running(cluster: ScaleCluster, n: int) -> bool:
    return cluster.phases(NAMESPACE).get("Running", 0) == n


def rolled_out(cluster: ScaleCluster, image: str, n: int) -> bool:
    deployments = cluster.items(NAMESPACE, "deployments")
    new = sum(
        d["spec"]["template"]["spec"]["containers"][0]["image"] == image
        and (d.get("status") or {}).get("updatedReplicas") == 1
        and (d.get("status") or {}).get("availableReplicas") == 1
        and (d.get("status") or {}).get("replicas") == 1
        for d in deployments
    )
    return new == n and all_running(cluster, n)


def last_write(events: list[dict], resource: str, since: float) -> float | None:
    times = [
        datetime.fromisoformat(e["stageTimestamp"].replace("Z", "+00:00")).timestamp()
        for e in events
        if e["verb"] in ("create", "patch", "update")
        and (e.get("objectRef") or {}).get("resource") == resource
        and not (e.get("objectRef") or {}).get("subresource")
    ]
    return round(max(times) - since, 1) if times else None


def run(n: int, workdir: Path, rollout: bool = True, timeout: float = 900) -> dict:
    # Room for two pods per Pipeline: a rollout surges one new pod beside the old.
    cluster = ScaleCluster(workdir / f"cp-{n}", pods=2 * n + 20).start()
    try:
        cluster.namespace(NAMESPACE)
        op = cluster.start_operator(workdir / f"operator-{n}.log")
        sample = Sampler(op.proc.pid)
        time.sleep(3)  # the operator is up and watching (its start-up is not what we time)
        cpu0 = ProcStats(op.proc.pid).cpu_seconds()
        plane = {name: ProcStats(pid) for name, pid in cluster.pids().items()}
        plane0 = {name: p.cpu_seconds() for name, p in plane.items()}
        audit0 = len(cluster.audit())
        t0, wall0 = time.monotonic(), time.time()
        cluster.create(NAMESPACE, (pipeline(f"p{i:04d}", NAMESPACE) for i in range(n)))
        created = time.monotonic() - t0
        try:
            running = created + wait_until(
                f"{n} Pipelines Running", lambda: all_running(cluster, n), timeout, 2.0, sample
            )
        except AssertionError:  # too slow (a loaded machine): its memory is still a figure
            running = None
        events = cluster.audit()[audit0:]
        verbs = requests_by_verb(events)
        result = {
            "pipelines": n,
            "created_s": round(created, 1),
            "all_running_s": round(running, 1) if running is not None else None,
            "running_at_end": cluster.phases(NAMESPACE).get("Running", 0),
            "operator_cpu_s": round(ProcStats(op.proc.pid).cpu_seconds() - cpu0, 1),
            "operator_peak_rss_mb": round(sample.peak, 1),
            "operator_rss_by_kind_mb": ProcStats(op.proc.pid).rss_by_kind_mb(),
            # When the operator had written its last Deployment: the rest of the wait is the
            # control plane's (controller-manager, scheduler, kwok) and the status sync.
            "last_deployment_written_s": last_write(events, "deployments", wall0),
            "api_requests_per_pipeline": round(len(events) / n, 2),
            "api_requests_by_verb": dict(sorted(verbs.items())),
            "control_plane_cpu_s": {
                name: round(p.cpu_seconds() - plane0[name], 1) for name, p in plane.items()
            },
        }
        if not rollout or running is None:
            return result
        # A change that touches every Pipeline: the operator restarts with a new engine image
        # (a `helm upgrade` of the operator's chart does the same in a cluster).
        op.stop()
        op = cluster.start_operator(
            workdir / f"operator-{n}-b.log", EDGEPIPE_OPERATOR_ENGINE_IMAGE="edgepipe:scale-b"
        )
        sample = Sampler(op.proc.pid)
        audit0 = len(cluster.audit())
        t0, rollout_wall0 = time.monotonic(), time.time()
        result["rollout_s"] = round(
            wait_until(
                "the new image rolled out",
                lambda: rolled_out(cluster, "edgepipe:scale-b", n),
                900,
                2.0,
                sample,
            ),
            1,
        )
        result["rollout_last_deployment_written_s"] = last_write(
            cluster.audit()[audit0:], "deployments", rollout_wall0
        )
        result["rollout_operator_cpu_s"] = round(ProcStats(op.proc.pid).cpu_seconds(), 1)
        result["rollout_api_requests_per_pipeline"] = round((len(cluster.audit()) - audit0) / n, 2)
        result["rollout_operator_peak_rss_mb"] = round(sample.peak, 1)
        return result
    finally:
        cluster.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100,200,500,1000")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--no-rollout", action="store_true", help="measure the creation only (no image rollout)"
    )
    parser.add_argument(
        "--timeout", type=float, default=900, help="seconds to wait for all Running, per N"
    )
    args = parser.parse_args()
    # Started in the background, SIGINT would be ignored: make both signals stop the run
    # through its finally blocks (the control plane is stopped, not left behind).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    results = []
    with tempfile.TemporaryDirectory(prefix="edgepipe-scale-") as tmp:
        for n in (int(s) for s in args.sizes.split(",")):
            result = run(n, Path(tmp), rollout=not args.no_rollout, timeout=args.timeout)
            print(json.dumps(result), flush=True)
            results.append(result)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    print()
    print(
        "| N | all Running (s) | operator CPU (s) | CPU s / 100 | peak RSS (MB) "
        "| API req / Pipeline | rollout (s) |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(
            f"| {r['pipelines']} | {r['all_running_s']} | {r['operator_cpu_s']} "
            f"| {100 * r['operator_cpu_s'] / r['pipelines']:.2f} | {r['operator_peak_rss_mb']} "
            f"| {r['api_requests_per_pipeline']} | {r.get('rollout_s', '-')} |"
        )


if __name__ == "__main__":
    main()
