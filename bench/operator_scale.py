"""The operator at scale: N Pipelines applied at once to a fresh test control plane.

For each N it reports the time until all are Running, the operator's peak RSS and CPU
seconds, its API requests per Pipeline (counted in the apiserver's audit log, which records
the operator's user only), the control plane's CPU seconds by component, and the time for
a change that touches every Pipeline (a new engine image in the operator's settings) to be
rolled out and Running again.

    .venv/bin/python bench/operator_scale.py [--sizes 100,200,500,1000] [--json FILE]
    .venv/bin/python bench/operator_scale.py --idle    # the floor: RSS with no Pipelines

The operator runs as its image does, without the ``kubernetes`` package (kopf imports it
when it is installed, and the dev venv has it for the tests): ``--with-kubernetes`` runs it
with the venv's as it is.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
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
    # The Deployments (whole objects: ~8 MB at 1,000) only once every Pipeline is Running:
    # listing them on every poll cost the apiserver and this process O(N) per poll, O(N^2)
    # per rollout, on the cores being measured.
    if not all_running(cluster, n):
        return False
    deployments = cluster.items(NAMESPACE, "deployments")
    new = sum(
        d["spec"]["template"]["spec"]["containers"][0]["image"] == image
        and (d.get("status") or {}).get("updatedReplicas") == 1
        and (d.get("status") or {}).get("availableReplicas") == 1
        and (d.get("status") or {}).get("replicas") == 1
        for d in deployments
    )
    return new == n


def breakdown(events: list[dict]) -> dict:
    """The requests by verb and resource (``get pipelines``, ``patch pipelines/status``),
    and those the apiserver refused, by answer code as well (``409 patch deployments``):
    which requests grow with N, and whether conflicts drive the extra reads."""
    by: Counter[str] = Counter()
    refused: Counter[str] = Counter()
    for e in events:
        ref = e.get("objectRef") or {}
        what = ref.get("resource", "?") + (
            f"/{ref['subresource']}" if ref.get("subresource") else ""
        )
        key = f"{e['verb']} {what}"
        by[key] += 1
        code = (e.get("responseStatus") or {}).get("code", 0)
        if code >= 400:
            refused[f"{code} {key}"] += 1
    return {
        "by_verb_resource": dict(sorted(by.items(), key=lambda kv: -kv[1])),
        "refused": dict(sorted(refused.items(), key=lambda kv: -kv[1])),
    }


class Profiler:
    """py-spy recording the operator (its Python stacks, sampled; folded: one line per
    stack with its count) for one phase: ``DIR/<phase>-<N>.folded``. Needs py-spy in the
    venv (``.venv/bin/pip install py-spy``)."""

    def __init__(self, out: Path | None, pid: int, phase: str, n: int, rate: int = 50) -> None:
        self.proc: subprocess.Popen | None = None
        if out is None:
            return
        out.mkdir(parents=True, exist_ok=True)
        spy = Path(sys.executable).parent / "py-spy"
        command = [str(spy), "record", "--pid", str(pid), "--rate", str(rate), "--format", "raw"]
        command += ["--threads"]  # the event loop apart from the handler threads
        self.proc = subprocess.Popen(
            [*command, "--nonblocking", "-o", str(out / f"{phase}-{n}.folded")],
            stdout=subprocess.DEVNULL,
            stderr=open(out / f"{phase}-{n}.py-spy.log", "wb"),  # noqa: SIM115 - the child's
        )

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # py-spy writes its file and exits
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()


# --gc-stats: a sitecustomize the operator's interpreter runs first, timing every cyclic
# garbage collection by generation (CPU of the collecting thread), written out after each
# full collection and at exit.
GC_PROBE = """
import atexit, gc, json, os, time
out, stats, began = os.environ["EDGEPIPE_BENCH_GC_OUT"], {}, [0.0]
def dump():
    with open(out, "w") as f:
        json.dump(stats, f)
def timed(phase, info):
    if phase == "start":
        began[0] = time.thread_time()
        return
    s = stats.setdefault(str(info["generation"]), {"runs": 0, "cpu_s": 0.0, "collected": 0})
    s["runs"] += 1
    s["cpu_s"] = round(s["cpu_s"] + time.thread_time() - began[0], 4)
    s["collected"] += info["collected"]
    if info["generation"] == 2:
        dump()
gc.callbacks.append(timed)
atexit.register(dump)
"""


def gc_stats(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def last_write(events: list[dict], resource: str, since: float) -> float | None:
    times = [
        datetime.fromisoformat(e["stageTimestamp"].replace("Z", "+00:00")).timestamp()
        for e in events
        if e["verb"] in ("create", "patch", "update")
        and (e.get("objectRef") or {}).get("resource") == resource
        and not (e.get("objectRef") or {}).get("subresource")
    ]
    return round(max(times) - since, 1) if times else None


def idle(workdir: Path, settle: float = 15) -> dict:
    """The operator's floor: its RSS ``settle`` s after start with no Pipelines (watching,
    nothing to do), as the image runs it and with the venv's ``kubernetes`` importable."""
    cluster = ScaleCluster(workdir / "cp-idle").start()
    out: dict = {"pipelines": 0, "settle_s": settle}
    try:
        cluster.namespace(NAMESPACE)
        for image_like, key in ((True, "image"), (False, "with_kubernetes")):
            cluster.image_like = image_like
            op = cluster.start_operator(workdir / f"operator-idle-{key}.log")
            time.sleep(settle)
            stats = ProcStats(op.proc.pid)
            rss, peak = stats.memory_mb()
            out[key] = {
                "rss_mb": round(rss, 1),
                "peak_rss_mb": round(peak, 1),
                "rss_by_kind_mb": stats.rss_by_kind_mb(),
                "cpu_s": round(stats.cpu_seconds(), 2),
            }
            op.stop()
            cluster.operator = None
    finally:
        cluster.stop()
    return out


def run(
    n: int,
    workdir: Path,
    rollout: bool = True,
    timeout: float = 900,
    image_like: bool = True,
    profile: Path | None = None,
    gc_probe: bool = False,
) -> dict:
    # Room for two pods per Pipeline: a rollout surges one new pod beside the old.
    cluster = ScaleCluster(workdir / f"cp-{n}", pods=2 * n + 20, image_like=image_like)
    gc_out = {phase: workdir / f"gc-{phase}-{n}.json" for phase in ("create", "rollout")}
    if gc_probe:
        (workdir / "gc-probe").mkdir(exist_ok=True)
        (workdir / "gc-probe" / "sitecustomize.py").write_text(GC_PROBE)
        cluster.python_path = [str(workdir / "gc-probe")]
    cluster.start()
    try:
        cluster.namespace(NAMESPACE)
        op = cluster.start_operator(
            workdir / f"operator-{n}.log", EDGEPIPE_BENCH_GC_OUT=str(gc_out["create"])
        )
        sample = Sampler(op.proc.pid)
        time.sleep(3)  # the operator is up and watching (its start-up is not what we time)
        cpu0 = ProcStats(op.proc.pid).cpu_seconds()
        plane = {name: ProcStats(pid) for name, pid in cluster.pids().items()}
        plane0 = {name: p.cpu_seconds() for name, p in plane.items()}
        audit0 = len(cluster.audit())
        spy = Profiler(profile, op.proc.pid, "create", n)
        t0, wall0 = time.monotonic(), time.time()
        cluster.create(NAMESPACE, (pipeline(f"p{i:04d}", NAMESPACE) for i in range(n)))
        created = time.monotonic() - t0
        try:
            running = created + wait_until(
                f"{n} Pipelines Running", lambda: all_running(cluster, n), timeout, 2.0, sample
            )
        except AssertionError:  # too slow (a loaded machine): its memory is still a figure
            running = None
        spy.stop()
        events = cluster.audit()[audit0:]
        verbs = requests_by_verb(events)
        result = {
            "pipelines": n,
            "operator_without_kubernetes": image_like,
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
            "api_requests": breakdown(events),
            "control_plane_cpu_s": {
                name: round(p.cpu_seconds() - plane0[name], 1) for name, p in plane.items()
            },
        }
        # A change that touches every Pipeline: the operator restarts with a new engine image
        # (a `helm upgrade` of the operator's chart does the same in a cluster).
        op.stop()
        if gc_probe:  # written at its exit (from its start: few collections before N)
            result["operator_gc"] = gc_stats(gc_out["create"])
        if not rollout or running is None:
            return result
        op = cluster.start_operator(
            workdir / f"operator-{n}-b.log",
            EDGEPIPE_OPERATOR_ENGINE_IMAGE="edgepipe:scale-b",
            EDGEPIPE_BENCH_GC_OUT=str(gc_out["rollout"]),
        )
        sample = Sampler(op.proc.pid)
        spy = Profiler(profile, op.proc.pid, "rollout", n)
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
        spy.stop()
        events = cluster.audit()[audit0:]
        result["rollout_last_deployment_written_s"] = last_write(
            events, "deployments", rollout_wall0
        )
        result["rollout_operator_cpu_s"] = round(ProcStats(op.proc.pid).cpu_seconds(), 1)
        result["rollout_api_requests_per_pipeline"] = round(len(events) / n, 2)
        result["rollout_api_requests"] = breakdown(events)
        if gc_probe:
            op.stop()  # its collections written at exit
            result["rollout_operator_gc"] = gc_stats(gc_out["rollout"])
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
    parser.add_argument(
        "--idle", action="store_true", help="only the floor: the RSS with no Pipelines"
    )
    parser.add_argument(
        "--with-kubernetes",
        action="store_true",
        help="let kopf import the venv's kubernetes package (the image has none)",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="record the operator with py-spy in each phase: DIR/{create,rollout}-N.folded",
    )
    parser.add_argument(
        "--gc-stats",
        action="store_true",
        help="time the operator's garbage collections (a sitecustomize on its path)",
    )
    args = parser.parse_args()
    # Started in the background, SIGINT would be ignored: make both signals stop the run
    # through its finally blocks (the control plane is stopped, not left behind).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    results = []
    with tempfile.TemporaryDirectory(prefix="edgepipe-scale-") as tmp:
        if args.idle:
            result = idle(Path(tmp))
            print(json.dumps(result), flush=True)
            if args.json:
                args.json.write_text(json.dumps(result, indent=2))
            return
        for n in (int(s) for s in args.sizes.split(",")):
            result = run(
                n,
                Path(tmp),
                rollout=not args.no_rollout,
                timeout=args.timeout,
                image_like=not args.with_kubernetes,
                profile=args.profile,
                gc_probe=args.gc_stats,
            )
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
