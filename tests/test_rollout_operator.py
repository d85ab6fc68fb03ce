"""The operator drives a Publish's rollout in waves: real operator on the test control
plane, the real htpasswd registry, real edge engines for a good rollout, and simulated
edges (the edge's own status writer, an outcome chosen by the test) for aborts, requests
and a SIGKILLed operator. (The registry is the session's: each test names its own edges.)"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
from edgepipe_operator import rollouts

from edgepipe import fleet, oci
from edgepipe.fleetstatus import EdgeReport
from edgepipe.localengine import EngineProcess
from edgepipe.timestamps import parse
from tests.helpers.fleet import CountingProxy, edge_env, wait_status
from tests.helpers.kube import KWOK_OPERATOR_ENV, OperatorProcess, wait_for
from tests.helpers.pipelines import pipeline
from tests.helpers.publishes import apply_publish, publish_status, push_add1, wait_publish
from tests.helpers.rollout_sims import SimEdge

PIPELINE = "adder"


@pytest.fixture(scope="module")
def operator(cluster: dict, tmp_path_factory: pytest.TempPathFactory):
    """This module's operator, polling edges every half second (the SIGKILL test kills
    and restarts this very process)."""
    op = OperatorProcess(
        cluster["kubeconfig"],
        tmp_path_factory.mktemp("operator") / "op.log",
        {
            **KWOK_OPERATOR_ENV,
            "EDGEPIPE_OPERATOR_EDGE_POLL_SECONDS": "0.5",
            "EDGEPIPE_OPERATOR_EDGE_UPLOAD_SECONDS": "1",
        },
    ).start()
    yield op
    op.stop()


def client_of(reg) -> oci.Client:
    return oci.Client(reg.host, oci.Credentials(reg.username, reg.password), plain_http=True)


def setup(kubectl, reg, models_dir, edges: list[str], host: str | None = None) -> dict:
    """Pipeline "adder" (not deployed: edges only), published to ``edges`` at once (through
    ``host`` when given); the Publish's status once v1's rollout is out."""
    model = push_add1(reg, models_dir)
    kubectl("create", "secret", "generic", "registry-creds",
            f"--from-literal=username={reg.username}", f"--from-literal=password={reg.password}")  # fmt: skip
    url = model.reference.replace(reg.host, host or reg.host)  # the same registry
    steps = [{"model": {"name": "add1", "url": url, "sha256": model.sha256}}]
    kubectl.apply(pipeline(PIPELINE, deployed=False, steps=steps))
    wait_for("the pipeline's version", lambda: pipeline_version(kubectl))
    apply_publish(kubectl, SimpleNamespace(host=host or reg.host), "fleet", edges=edges)
    return wait_publish(kubectl, "Published", "fleet")


def pipeline_version(kubectl) -> str | None:
    return ((kubectl.get("pipeline", PIPELINE) or {}).get("status") or {}).get("version")


def new_version(kubectl, cpus: float) -> str:
    """Change the Pipeline so that it has a new version; that version."""
    old = pipeline_version(kubectl)
    patch = {"spec": {"deployment": {"cpus": cpus}}}
    kubectl("patch", "pipeline", PIPELINE, "--type=merge", "-p", json.dumps(patch))
    return wait_for("a new version", lambda: (v := pipeline_version(kubectl)) != old and v)


def roll_out(kubectl, **rollout) -> None:
    """Re-publish the Pipeline's current version to the Publish's edges in ``rollout``'s waves."""
    patch = {"spec": {"rollout": rollout}}
    kubectl("patch", "publish", "fleet", "--type=merge", "-p", json.dumps(patch))


def rollout_status(kubectl, version: str, phase: str, timeout: float = 60) -> dict:
    return wait_for(
        f"rollout of {version} {phase}",
        lambda: (
            (r := publish_status(kubectl, "fleet").get("rollout") or {}).get("version") == version
            and r.get("phase") == phase
            and r
        ),
        timeout,
        interval=0.2,
    )


def request(kubectl, value: str) -> None:
    kubectl("annotate", "--overwrite", "publish", "fleet", f"edgepipe.io/rollout-request={value}")


def events(kubectl, reason: str) -> list[dict]:
    items = kubectl.items("events")
    return [e for e in items if e["reason"] == reason and e["involvedObject"]["name"] == "fleet"]


def pointers(reg, edges: list[str]) -> dict[str, str | None]:
    client = client_of(reg)
    return {e: fleet.pointer_digest(client, f"edge/pipelines/{PIPELINE}", e) for e in edges}


def moved_to(kubectl, reg, edge: str, version: str) -> bool:
    """Whether the rollout of ``version`` has moved ``edge``'s pointer to its digest."""
    r = publish_status(kubectl, "fleet").get("rollout") or {}
    try:
        return r.get("version") == version and pointers(reg, [edge])[edge] == r["digest"]
    except oci.RegistryUnavailable:  # a read racing a PUT of the same tag: a 500
        return False


def edge_record(reg, edge: str) -> dict | None:
    """``edge``'s last status record (None while a read races a PUT of its tag)."""
    try:
        return fleet.read_status(client_of(reg), "edge", PIPELINE, edge)
    except oci.RegistryUnavailable:
        return None


def sims(reg, edges: list[str]) -> list[SimEdge]:
    return [SimEdge(client_of(reg), "edge", PIPELINE, e) for e in edges]


@pytest.mark.cluster
def test_a_two_wave_rollout_to_real_edges_goes_in_order(
    operator, kubectl, auth_registry, models_dir, tmp_path: Path
) -> None:
    reg, edges = auth_registry, ["dock-1", "dock-2"]
    v1 = setup(kubectl, reg, models_dir, edges)
    first = rollout_status(kubectl, v1["pipelineVersion"], "Progressing")
    assert first["waves"] == [{"edges": edges, "state": "Progressing", "movedAt": first["movedAt"]}]
    engines = [
        EngineProcess(
            env=edge_env(reg, v1, e, tmp_path / e, None, probation_seconds=1),
            log_path=tmp_path / f"{e}.log", timeout=90,
        ).start()
        for e in edges
    ]  # fmt: skip
    try:
        rollout_status(kubectl, v1["pipelineVersion"], "Complete", 60)
        v2 = new_version(kubectl, 2)
        roll_out(kubectl, waves=[{"edges": ["dock-1"]}, {"percent": 100}])
        # dock-2's pointer leaves v1 only once dock-1 is Current on v2. Read in that order
        # (the pointer seen moved, then dock-1's own record), the record must say Current on
        # v2 already; its ``since`` is checked against the operator's movedAt below. (A
        # record read before the pointer, in the same sample, may predate both: the operator
        # polls every 0.5 s and moved dock-2 between the two reads.)
        wait_for("dock-2's pointer on v2", lambda: moved_to(kubectl, reg, "dock-2", v2), 60, 0.1)
        dock1 = wait_for("dock-1's record", lambda: edge_record(reg, "dock-1"), 20, 0.1)
        assert dock1["state"] == "Current" and dock1["running"]["version"] == v2, (
            f"dock-2 moved before dock-1 was Current: {dock1}"
        )
        for engine in engines:
            wait_status(engine.url, "Current", v2, timeout=40)
        done = rollout_status(kubectl, v2, "Complete", 40)
    finally:
        for engine in engines:
            engine.stop()
    assert done["wave"] == 2 and done["updated"] == 2 and done["failed"] == 0
    assert [w["edges"] for w in done["waves"]] == [["dock-1"], ["dock-2"]]
    assert [w["state"] for w in done["waves"]] == ["Done", "Done"]
    w1, w2 = done["waves"]
    assert w1["movedAt"] <= w1["doneAt"] <= w2["movedAt"] <= w2["doneAt"] <= done["finishedAt"]
    # dock-1's clock and the operator's: Current (to the second) no later than the move.
    assert parse(dock1["since"]) <= parse(w2["movedAt"]), (dock1["since"], w2["movedAt"])
    lines = publish_status(kubectl, "fleet")["edges"]
    assert [(e["name"], e["version"], e["state"], e["wave"]) for e in lines] == [
        ("dock-1", v2, "Current", 1),
        ("dock-2", v2, "Current", 2),
    ]
    assert all(e["digest"] == done["digest"] and e["lastSeen"] for e in lines)
    assert all("EDGE_NAME=" + e["name"] in e["dockerRunCommand"] for e in lines)
    started = [e["message"] for e in events(kubectl, "RolloutWaveStarted")]
    assert any("wave 2/2" in m and v2 in m for m in started), started
    assert events(kubectl, "RolloutComplete")


@pytest.mark.cluster
def test_failures_abort_and_requests_abort_and_resume(
    operator, kubectl, auth_registry, models_dir
) -> None:
    reg, edges = auth_registry, ["abort-1", "abort-2", "abort-3", "abort-4"]
    edge_sims = sims(reg, edges)
    for s in edge_sims:
        s.__enter__()
    try:
        v1 = setup(kubectl, reg, models_dir, edges)
        d1 = rollout_status(kubectl, v1["pipelineVersion"], "Complete")["digest"]
        # v2 breaks after its swap on the first wave's edges: more than 1 failure aborts.
        v2 = new_version(kubectl, 2)
        for s in edge_sims[:2]:
            s.default = "bad"
        roll_out(kubectl, waves=[{"edges": ["abort-1", "abort-2"]}, {"percent": 100}],
                 maxFailures=1, waveTimeoutSeconds=60)  # fmt: skip
        aborted = rollout_status(kubectl, v2, "Aborted")
        assert aborted["failedEdges"] == ["abort-1", "abort-2"] and aborted["wave"] == 1
        assert "maxFailures" in aborted["reason"]
        d2 = aborted["digest"]
        assert [w["state"] for w in aborted["waves"]] == ["Aborted", "Pending"]
        assert pointers(reg, edges) == dict.fromkeys(edges, d1)
        assert all(d2 not in {r for _, r in s.history} for s in edge_sims)
        assert all(d2 != t for s in edge_sims[2:] for t in s.targets), "wave 2 moved"
        (warning,) = wait_for("the abort's Event", lambda: events(kubectl, "RolloutAborted"))
        assert warning["type"] == "Warning"
        assert "abort-1 (fails after its swap)" in warning["message"]
        lines = wait_for(
            "the edges back on v1 in the status",
            lambda: (
                (e := publish_status(kubectl, "fleet")["edges"])
                and all(x.get("state") == "Current" and x.get("digest") == d1 for x in e)
                and e
            ),
        )
        assert [x["wave"] for x in lines] == [1, 1, 2, 2]

        # Fixed at the edges: a resume request moves wave 1 again, and it completes.
        for s in edge_sims[:2]:
            s.default = "good"
            s.refused.clear()
        request(kubectl, "resume:1")
        done = rollout_status(kubectl, v2, "Complete")
        assert done["handledRequest"] == "resume:1" and done["failed"] == 0
        assert pointers(reg, edges) == dict.fromkeys(edges, d2)

        # v3 hangs on abort-1, and v4 supersedes it: wave 1's edges keep v2 to go back to.
        waves = [{"edges": ["abort-1", "abort-2"]}, {"percent": 100}]
        v3 = new_version(kubectl, 3)
        edge_sims[0].default = "hold"
        roll_out(kubectl, waves=waves, waveTimeoutSeconds=120)
        d3 = rollout_status(kubectl, v3, "Progressing")["digest"]
        wait_for("abort-2 on v3", lambda: edge_sims[1].running == d3)
        v4 = new_version(kubectl, 4)
        roll_out(kubectl, waves=waves, waveTimeoutSeconds=121)
        r4 = rollout_status(kubectl, v4, "Progressing")
        d4 = r4["digest"]
        assert r4["superseded"] == d3 and r4["rollback"] == dict.fromkeys(edges, d2)
        (superseded,) = wait_for("an Event", lambda: events(kubectl, "RolloutSuperseded"))
        assert v3 in superseded["message"] and v4 in superseded["message"]
        # An abort request moves wave 1 back to v2; wave 2 never moves.
        wait_for("abort-2 on v4", lambda: edge_sims[1].running == d4)
        request(kubectl, "abort:2")
        aborted = rollout_status(kubectl, v4, "Aborted")
        assert aborted["reason"] == "aborted by request"
        assert aborted["handledRequest"] == "abort:2"
        assert pointers(reg, edges) == dict.fromkeys(edges, d2)
        assert all(t not in (d3, d4) for s in edge_sims[2:] for t in s.targets)
        assert len(events(kubectl, "RolloutAborted")) == 2
    finally:
        for s in edge_sims:
            s.__exit__()
    # (docker-registry answers a HEAD racing a PUT of the same tag with a 500 at times)
    errors = [e for s in edge_sims for e in s.errors if "RegistryUnavailable" not in e]
    assert not errors, errors


@pytest.mark.cluster
def test_an_operator_killed_mid_rollout_resumes_without_moving_a_wave_twice(
    operator, kubectl, auth_registry, models_dir
) -> None:
    reg, edges = auth_registry, ["kill-1", "kill-2", "kill-3"]
    with CountingProxy(reg.host) as proxy:
        edge_sims = sims(reg, edges)
        for s in edge_sims:
            s.__enter__()
        try:
            setup(kubectl, reg, models_dir, edges, host=proxy.host)
            v1 = publish_status(kubectl, "fleet")["pipelineVersion"]
            rollout_status(kubectl, v1, "Complete")
            v2 = new_version(kubectl, 2)
            mark = len(proxy.requests)
            edge_sims[1].default = "hold"
            roll_out(kubectl, waves=[{"edges": [e]} for e in edges])
            d2 = rollout_status(kubectl, v2, "Progressing")["digest"]
            put = f"PUT /v2/edge/pipelines/{PIPELINE}/manifests/edge-kill-2"
            wait_for("wave 2's pointer PUT", lambda: put in proxy.requests[mark:], 30, 0.02)
            operator.kill()  # right after it moved wave 2, maybe before it wrote so
            time.sleep(1)
            operator.start()
            wait_for("kill-2 on v2", lambda: edge_sims[1].targets[-1:] == [d2], 30)
            edge_sims[1].default = "good"
            done = rollout_status(kubectl, v2, "Complete", 60)
            # At rest: a tag listing per poll, no status manifest, no pointer, no write.
            rv = kubectl.get("publish", "fleet")["metadata"]["resourceVersion"]
            rest = len(proxy.requests)
            time.sleep(2.5)  # 5 polls
            quiet = proxy.requests[rest:]
            listings = [r for r in quiet if r.startswith(f"GET /v2/edge/status/{PIPELINE}/tags")]
            assert 1 <= len(listings) <= 6, quiet
            assert not [r for r in quiet if "/manifests/" in r and "/status/" in r], quiet
            assert not [r for r in quiet if "/manifests/edge-" in r], quiet
            assert kubectl.get("publish", "fleet")["metadata"]["resourceVersion"] == rv
        finally:
            for s in edge_sims:
                s.__exit__()
    puts = [r for r in proxy.requests[mark:] if r.startswith("PUT") and "/manifests/edge-" in r]
    assert sorted(puts) == [f"PUT /v2/edge/pipelines/{PIPELINE}/manifests/edge-{e}" for e in edges]
    assert [w["state"] for w in done["waves"]] == ["Done"] * 3 and done["updated"] == 3
    w = done["waves"]
    assert w[0]["doneAt"] <= w[1]["movedAt"] and w[1]["doneAt"] <= w[2]["movedAt"]
    assert pointers(reg, edges) == dict.fromkeys(edges, d2)


def test_the_edge_lines_say_offline_unknown_and_the_wave() -> None:
    now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)

    def report(edge: str, seen_ago: float) -> EdgeReport:
        seen = now - timedelta(seconds=seen_ago)
        return EdgeReport(edge, "Current", "sha256:" + "a" * 64, None, seen - timedelta(hours=1),
                          seen, None, "v2", 10.0, {})  # fmt: skip

    listed = [{"name": e, "dockerRunCommand": f"docker run {e}"} for e in ("a", "b", "c")]
    reports = {"a": report("a", 2 * 300 + 9), "b": report("b", 2 * 300 + 11)}
    uploads = {"a": {"lastUpload": "2026-01-01T11:59:00Z", "uploadedSegments": 3}}
    lines = rollouts.edge_lines(listed, reports, [["a"], ["b", "c"]], uploads, now)
    assert [(x["name"], x["state"], x["wave"]) for x in lines] == [
        ("a", "Current", 1), ("b", "Offline", 2), ("c", "Unknown", 2)
    ]  # fmt: skip
    assert lines[0] == {
        "name": "a", "dockerRunCommand": "docker run a", "state": "Current", "version": "v2",
        "digest": "sha256:" + "a" * 64, "lastSeen": "2026-01-01T11:49:51Z", "wave": 1,
        "lastUpload": "2026-01-01T11:59:00Z", "uploadedSegments": 3,
    }  # fmt: skip
    assert lines[2] == {"name": "c", "dockerRunCommand": "docker run c", "state": "Unknown",
                        "wave": 2}  # fmt: skip


def test_a_new_rollout_keeps_the_rollback_digests_and_handled_request_of_the_last() -> None:
    now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    d1, d2, d3 = ("sha256:" + c * 64 for c in "123")
    old, _ = rollouts.begin(None, ["a", "b"], "v2", d2, None, now)
    old.rollback = {"a": d1}
    # A new version supersedes it; new edges (or a restarted handler) re-plan it.
    for digest, superseded, said in ((d3, d2, ["RolloutSuperseded"]), (d2, None, [])):
        new, events = rollouts.begin(None, ["a", "b", "c"], "v3", digest, old.to_status(), now)
        assert new.rollback == {"a": d1} and new.superseded == superseded
        assert new.waves == [["a", "b", "c"]] and new.moved_at is None
        assert [e.reason for e in events] == said
    done = {**old.to_status(), "phase": "Aborted", "handledRequest": "abort:1"}
    new, events = rollouts.begin(None, ["a"], "v3", d3, done, now)
    assert new.rollback == {} and events == []
    # The request the last rollout handled is not one for the new one.
    assert rollouts.request(new, "abort:1", now) is None
    step = rollouts.request(new, "abort:2", now)
    assert step is not None and step.state.phase == "Aborted"


def test_a_complete_rollout_counts_an_edge_that_caught_up() -> None:
    now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    digest = "sha256:" + "b" * 64
    state, _ = rollouts.begin(None, ["a", "b"], "v2", digest, None, now)
    state.phase, state.updated, state.pending = "Complete", 1, 1

    def current(edge: str) -> EdgeReport:
        return EdgeReport(edge, "Current", digest, digest, now, now, None, "v2", 1.0, {})

    acts = []
    reports = {"a": current("a"), "b": current("b")}
    done = rollouts.step_once(
        state, reports, None, None, now, lambda s: acts.append(s) or rollouts.Acted(s.state)
    )
    assert [s.action for s in acts] == ["wait"]
    assert (done.state.phase, done.state.updated, done.state.pending) == ("Complete", 2, 0)
