"""Hard times for the operator on a control plane of its own: the apiserver stopped for
20 s, etcd restarted, and the operator SIGKILLed while 500 Pipelines reconcile.

The operator runs under its own user, so the apiserver's audit log holds exactly its
requests: the write counts below come from there.
"""

from __future__ import annotations

import os
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.helpers.scale_cluster import (
    OWNED,
    WRITES,
    ScaleCluster,
    owned_writes,
    pipeline,
    wait_until,
)

pytestmark = pytest.mark.cluster

PIPELINES = int(os.environ.get("EDGEPIPE_RESTART_PIPELINES", "500"))


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory):
    cluster = ScaleCluster(tmp_path_factory.mktemp("restarts") / "cp", pods=2 * PIPELINES + 50)
    yield cluster.start()
    cluster.stop()


def converged(plane: ScaleCluster, namespace: str, n: int, replicas: dict[str, int]) -> bool:
    """All n Running at their latest spec, each Deployment with the replicas wanted. (The
    Deployments are listed only once every Pipeline is Running: with 500 of each, a poll
    that listed both every time took seconds of the loaded apiserver's CPU from the
    operator it waits for.)"""
    pipelines = plane.items(namespace, "pipelines")
    if len(pipelines) != n:
        return False
    for p in pipelines:
        st = p.get("status") or {}
        if (
            st.get("phase") != "Running"
            or st.get("observedGeneration") != p["metadata"]["generation"]
        ):
            return False
    deployments = {d["metadata"]["name"]: d for d in plane.items(namespace, "deployments")}
    for p in pipelines:
        name = p["metadata"]["name"]
        d = deployments.get(f"{name}-engine")
        if d is None or d["spec"]["replicas"] != replicas.get(name, 1):
            return False
    return True


def scale_some(plane: ScaleCluster, namespace: str, names: list[str], replicas: int) -> None:
    for name in names:
        plane.kubectl(
            "patch",
            "pipeline",
            name,
            f"--namespace={namespace}",
            "--type=merge",
            "-p",
            f'{{"spec": {{"deployment": {{"replicas": {replicas}}}}}}}',
            namespaced=False,
        )


# The control plane's own clients of the apiserver: client-go's reflectors back off up to
# 30 s (no flag sets it) while it is down, and the deployment controller saw the operator's
# edits 25-40 s after the apiserver was back (each Deployment's spec at 2 replicas, its
# status at generation 1). They are the harness, not what is tested: restarted once the
# apiserver answers (1.5 s each), they list at once and the wait is the operator's (the
# case took 56-64 s, now 38). Not kwok: a new kwok waits out the node lease (40 s).
HARNESS = ("kube-controller-manager", "kube-scheduler")


def fresh_harness(plane: ScaleCluster) -> None:
    for name in HARNESS:
        plane.component("stop", name)
        plane.component("start", name)


@pytest.mark.parametrize("component, down", [("kube-apiserver", 20.0), ("etcd", 0.0)])
def test_operator_rides_out_a_control_plane_restart(
    plane: ScaleCluster, tmp_path: Path, component: str, down: float
) -> None:
    ns = f"restart-{component}"
    plane.namespace(ns)
    op = plane.start_operator(tmp_path / "operator.log")
    try:
        names = [f"p{i:02d}" for i in range(20)]
        plane.create(ns, (pipeline(name, ns) for name in names))
        wait_until("20 Pipelines Running", lambda: converged(plane, ns, 20, {}), 120)
        # Edited just before the stop: the operator's reconciles of these are cut short.
        scale_some(plane, ns, names[:5], 2)
        stopped = time.monotonic()
        plane.component("stop", component)
        # Down ``down`` s from the stop: the apiserver stops listening at once, but the stop
        # waits up to 10 s for it to exit (it often does not), and an outage 10 s longer
        # than asked only grew every client's backoff (the case took 108 s, not 65).
        time.sleep(max(0.0, down - (time.monotonic() - stopped)))
        assert op.proc.poll() is None, "the operator exited while the control plane was down"
        plane.component("start", component)
        # Edited as soon as it is back, while the operator's watches are reconnecting.
        scale_some(plane, ns, names[5:10], 2)
        if component == "kube-apiserver":
            fresh_harness(plane)
        wanted = {name: 2 for name in names[:10]}
        wait_until(
            "every Pipeline at its latest spec", lambda: converged(plane, ns, 20, wanted), 180
        )
        assert op.proc.poll() is None, op.log()
    finally:
        op.stop()


def _time(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp)


def landed_after(events: list[dict], killed_at: datetime, restarted_at: datetime) -> set:
    """(kind, name) of owned objects whose first successful write was received before the
    kill and completed after the restart began."""
    first: dict[tuple[str, str], dict] = {}
    for e in sorted(events, key=lambda e: e["requestReceivedTimestamp"]):
        ref = e.get("objectRef") or {}
        key = (ref.get("resource", ""), ref.get("name", ""))
        written = e["verb"] in WRITES and not ref.get("subresource")
        if written and key[0] in OWNED and (e.get("responseStatus") or {}).get("code", 0) < 300:
            first.setdefault(key, e)
    return {
        key
        for key, e in first.items()
        if _time(e["requestReceivedTimestamp"]) < killed_at
        and _time(e["stageTimestamp"]) > restarted_at
    }


def test_operator_killed_while_500_pipelines_reconcile(plane: ScaleCluster, tmp_path: Path):
    ns = "sigkill"
    plane.namespace(ns)
    op = plane.start_operator(tmp_path / "operator.log")
    names = [f"p{i:03d}" for i in range(PIPELINES)]
    plane.create(ns, (pipeline(name, ns) for name in names))

    def deployments_written() -> int:
        writes = owned_writes(plane.audit(), ns)
        return sum(1 for kind, _ in writes if kind == "deployments")

    # Killed part-way: some Pipelines done, some half-done, some not started.
    wait_until("a fifth of the Deployments", lambda: deployments_written() >= PIPELINES // 5, 300)
    op.kill()
    killed_at = datetime.now(UTC)
    before = deployments_written()
    assert before < PIPELINES, "all were done before the kill: the test proved nothing"
    restarted_at = datetime.now(UTC)
    op = plane.start_operator(tmp_path / "operator-again.log")
    try:
        wait_until(
            f"{PIPELINES} Pipelines Running", lambda: converged(plane, ns, PIPELINES, {}), 420, 2
        )
    finally:
        op.stop()
    events = plane.audit()
    sent = owned_writes(events, ns, succeeded=False)
    done = owned_writes(events, ns)
    # One of each object per Pipeline, written once: the restarted operator found what its
    # predecessor had applied (even a write whose answer it never read) and left it. The
    # only second write allowed is to an object whose first write failed under the kill.
    for kind in OWNED:
        assert sum(1 for k, _ in sent if k == kind) == PIPELINES, kind
    # A write the killed operator had sent that the apiserver (loaded with 500 Pipelines)
    # finished only after the restart: the new operator's first list could not show it, so
    # writing again is right. Any other second write is a fault.
    late = landed_after(events, killed_at, restarted_at)
    twice = {key: n for key, n in done.items() if n > 1 and not (n == 2 and key in late)}
    if twice:
        shutil.copy(plane.info["audit_log"], tmp_path / "audit.log")  # kept for a look
    assert not twice, f"written more than once: {sorted(twice.items())[:10]}"
    resent = {key: n for key, n in sent.items() if n > 1}
    assert all(n == 2 and done[key] <= 1 for key, n in resent.items()), resent
    for kind in ("deployments", "services", "configmaps", "controllerrevisions"):
        group = "apis/apps/v1" if kind in ("deployments", "controllerrevisions") else "api/v1"
        items = plane.get(f"/{group}/namespaces/{ns}/{kind}")["items"]
        if kind == "configmaps":
            items = [i for i in items if i["metadata"]["name"] != "kube-root-ca.crt"]
        assert len(items) == PIPELINES, (kind, len(items))
    print(
        f"\n{before} of {PIPELINES} Deployments written before the SIGKILL; "
        f"{sum(sent.values()) - sum(done.values())} write(s) cut by it, "
        f"{len(resent)} object(s) written again after it"
    )
