"""``edgepipe publish edges`` and ``publish rollout`` as a user runs them, and the Python API
under them (``Client.edges``, ``Client.rollout``), against the test apiserver. The
operator's part (acting on a rollout request, rolling a new version wave by wave) is played
by a stand-in thread that writes the status the operator writes, except in the last test,
where the real operator acts on --abort and --resume (its rollouts with real edges are
tested end to end in test_fleet_rollouts.py)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator

import pandas as pd
import pytest

from edgepipe.client.cluster import Client
from edgepipe.client.rollouts import ROLLOUT_REQUEST
from tests.helpers.cli import ep
from tests.helpers.fleetview import V1, V2, StatusWriter, edge, publish, stamp, waves
from tests.helpers.kube import wait_for
from tests.helpers.pipelines import pipeline, wait_phase
from tests.helpers.pipelines import status as pipeline_status
from tests.helpers.publishes import apply_publish, publish_status, push_add1, wait_publish

pytestmark = pytest.mark.cluster

EDGES = ["dock-1", "dock-2", "dock-3"]


class StandIn:
    """Plays the operator for one Publish: ``react(obj)`` returns the statuses to write,
    one after another, when the object needs an answer."""

    def __init__(self, client: Client, name: str, react: Callable[[dict], list[dict]]) -> None:
        self.client, self.name, self.react = client, name, react
        self.write = StatusWriter(client)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(0.2):
            for status in self.react(self.client.get("publishes", self.name)):
                self.write("publishes", self.name, status)
                time.sleep(1.0)  # long enough for the CLI (polling every 0.5 s) to see each


@pytest.fixture
def fleet(cluster: dict, namespace: str, kubectl) -> Iterator[tuple[Client, StatusWriter, dict]]:
    client = Client(kubeconfig=str(cluster["kubeconfig"]), namespace=namespace)
    write = StatusWriter(client)
    kubectl.apply(pipeline("adder", deployed=False))
    kept = [{"version": v, "createdAt": stamp(60), "specDigest": v} for v in (V1, V2)]
    write("pipelines", "adder", {"phase": "Undeployed", "version": V2, "versions": kept})
    kubectl.apply(publish("pub", EDGES, version=V1))
    env = {"KUBECONFIG": str(cluster["kubeconfig"])}
    yield client, write, env


def _cli(env: dict, namespace: str, *args: str):
    return ep(*args, "-n", namespace, env=env)


def _status(rollout: dict, edges: list[dict], version: str = V1) -> dict:
    return {"phase": "Published", "pipelineVersion": version, "rollout": rollout, "edges": edges}


def test_publish_edges_is_a_table_and_json_and_a_dataframe(fleet, namespace: str) -> None:
    client, write, env = fleet
    write(
        "publishes",
        "pub",
        _status(
            {"phase": "Complete", "version": V1, "wave": 1, "waves": waves((EDGES, "Done"))},
            [
                edge("dock-1", "Current", V1, 1, seen=65),
                edge("dock-2", "RolledBack", V1, 1, seen=130, reason="probe failed"),
                {"name": "dock-3", "state": "Unknown"},
            ],
        ),
    )
    proc = _cli(env, namespace, "publish", "edges", "pub")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["EDGE", "VERSION", "STATE", "LAST", "SEEN", "REASON"]
    assert lines[1].split() == ["dock-1", V1[:8], "Current", "1m", "ago"]
    assert lines[2].split() == ["dock-2", V1[:8], "RolledBack", "2m", "ago", "probe", "failed"]
    assert lines[3].split() == ["dock-3", "-", "Unknown", "never"]
    # The columns line up under their headers.
    assert lines[1].index("Current") == lines[0].index("STATE") == lines[2].index("RolledBack")

    rows = json.loads(_cli(env, namespace, "publish", "edges", "pub", "-o", "json").stdout)
    assert [(r["edge"], r["state"], r["wave"]) for r in rows] == [
        ("dock-1", "Current", 1),
        ("dock-2", "RolledBack", 1),
        ("dock-3", "Unknown", None),
    ]
    assert rows[1]["reason"] == "probe failed" and rows[1]["version"] == V1

    df = client.edges("pub")
    assert list(df.columns) == ["edge", "version", "state", "lastSeen", "reason", "wave"]
    assert list(df["state"]) == ["Current", "RolledBack", "Unknown"]
    assert isinstance(df["lastSeen"].dtype, pd.DatetimeTZDtype)
    assert str(df["lastSeen"].dt.tz) == "UTC"
    age = pd.Timestamp.now(tz="UTC") - df["lastSeen"][1]
    assert pd.Timedelta(seconds=120) < age < pd.Timedelta(seconds=200)
    assert pd.isna(df["lastSeen"][2]) and list(df["wave"][:2]) == [1, 1]

    missing = _cli(env, namespace, "publish", "edges", "nope")
    assert missing.returncode == 1 and "publish 'nope'" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_rollout_abort_sets_the_request_and_waits_until_it_is_handled(
    fleet, namespace: str
) -> None:
    client, write, env = fleet
    progressing = {
        "phase": "Progressing",
        "version": V1,
        "wave": 1,
        "waves": waves((EDGES[:1], "Progressing"), (EDGES[1:], "Pending")),
        "updated": 0,
    }
    write("publishes", "pub", _status(progressing, [edge(e, "Waiting", V1, 1) for e in EDGES]))
    seen: list[str] = []

    def react(obj: dict) -> list[dict]:
        asked = (obj["metadata"].get("annotations") or {}).get(ROLLOUT_REQUEST)
        handled = ((obj.get("status") or {}).get("rollout") or {}).get("handledRequest")
        if not asked or asked == handled:
            return []
        seen.append(asked)
        aborted = {**progressing, "phase": "Aborted", "reason": "aborted by request"}
        return [{"rollout": {**aborted, "handledRequest": asked}}]

    stand_in = StandIn(client, "pub", react)
    stand_in.thread.start()
    try:
        started = time.monotonic()
        proc = _cli(env, namespace, "publish", "rollout", "pub", "--abort", "--timeout", "30")
        took = time.monotonic() - started
    finally:
        stand_in.stop.set()
    assert proc.returncode == 0, proc.stderr
    assert len(seen) == 1 and seen[0].startswith("abort:") and len(seen[0]) == len("abort:") + 12
    assert proc.stdout.strip() == "Aborted: 0 updated, 0 pending, 0 failed (aborted by request)"
    assert took < 15
    # Nothing in progress any more: a second abort says so at once, in one line.
    again = _cli(env, namespace, "publish", "rollout", "pub", "--abort")
    assert again.returncode == 1 and "no rollout in progress to abort (Aborted)" in again.stderr
    both = _cli(env, namespace, "publish", "rollout", "pub", "--abort", "--resume")
    assert both.returncode == 2 and "give one of --to, --abort or --resume" in both.stderr


def test_rollout_to_a_version_shows_each_wave_and_fails_when_aborted(fleet, namespace: str) -> None:
    client, _, env = fleet
    bad = {"on": False}

    def react(obj: dict) -> list[dict]:
        st = obj.get("status") or {}
        if st.get("observedGeneration") == obj["metadata"]["generation"]:
            return []
        if obj["spec"].get("version") != V2:
            return [_status({"phase": "Complete", "version": V1}, [])]
        w = [EDGES[:1], EDGES[1:]]
        moving = {"phase": "Progressing", "version": V2, "startedAt": stamp()}
        steps = [
            {**moving, "wave": 1, "waves": waves((w[0], "Progressing"), (w[1], "Pending"))},
            {
                **moving,
                "wave": 1,
                "updated": 1,
                "waves": waves((w[0], "Progressing"), (w[1], "Pending")),
            },
            {
                **moving,
                "wave": 2,
                "updated": 1,
                "waves": waves((w[0], "Done"), (w[1], "Progressing")),
            },
        ]
        if bad["on"]:
            end = {
                **moving,
                "phase": "Aborted",
                "wave": 2,
                "updated": 1,
                "failed": 2,
                "failedEdges": EDGES[1:],
                "failureReasons": {"dock-2": "probe failed after the swap"},
                "reason": "2 edges failed, more than maxFailures 1",
                "waves": waves((w[0], "Done"), (w[1], "Aborted")),
            }
        else:
            end = {
                **moving,
                "phase": "Complete",
                "wave": 2,
                "updated": 3,
                "waves": waves((w[0], "Done"), (w[1], "Done")),
            }
        edges = [edge("dock-1", "Current", V2, 1)] + [
            edge(e, "RolledBack" if bad["on"] else "Current", V1 if bad["on"] else V2, 2)
            for e in EDGES[1:]
        ]
        return [_status(s, edges, V2) for s in [*steps, end]]

    stand_in = StandIn(client, "pub", react)
    stand_in.thread.start()
    try:
        proc = _cli(env, namespace, "publish", "rollout", "pub", "--to", V2[:8], "--timeout", "60")
        assert proc.returncode == 0, proc.stderr
        assert client.get("publishes", "pub")["spec"]["version"] == V2
        progress = [ln for ln in proc.stderr.splitlines() if not ln.startswith("warning")]
        steps = [
            "wave 1/2: 0 updated, 0 pending, 0 failed",
            "wave 1/2: 1 updated, 0 pending, 0 failed",
            "wave 2/2: 1 updated, 0 pending, 0 failed",
            "Complete: 3 updated, 0 pending, 0 failed",
        ]
        # Each change once, in order (a step the CLI's 0.5 s poll missed on a loaded
        # machine may be absent, but never the second wave or the end).
        assert progress == [ln for ln in steps if ln in progress], proc.stderr
        assert steps[2] in progress and progress[-1] == steps[3], proc.stderr
        assert proc.stdout.strip() == "Complete: 3 updated, 0 pending, 0 failed"

        # The same version again, with a failing second wave: exit 1, why, and who failed.
        bad["on"] = True
        client._merge("publishes", "pub", {"spec": {"version": V1}})
        _wait_generation(client)
        proc = _cli(env, namespace, "publish", "rollout", "pub", "--to", V2, "--timeout", "60")
    finally:
        stand_in.stop.set()
    assert proc.returncode == 1
    assert "  dock-2: RolledBack - probe failed after the swap" in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        "Error: the rollout of publish 'pub' was aborted: 2 edges failed, more than "
        "maxFailures 1; failing edges: dock-2, dock-3"
    )
    assert "Traceback" not in proc.stderr


def _wait_generation(client: Client) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        obj = client.get("publishes", "pub")
        if (obj.get("status") or {}).get("observedGeneration") == obj["metadata"]["generation"]:
            return
        time.sleep(0.2)
    raise AssertionError("the stand-in did not answer the spec change")


def test_abort_and_resume_are_acted_on_by_the_real_operator(
    operator, kubectl, auth_registry, models_dir, cluster, namespace
) -> None:
    reg = auth_registry
    model = push_add1(reg, models_dir)
    kubectl("create", "secret", "generic", "registry-creds",
            f"--from-literal=username={reg.username}", f"--from-literal=password={reg.password}")  # fmt: skip
    steps = [{"model": {"name": "add1", "url": model.reference, "sha256": model.sha256}}]
    kubectl.apply(pipeline("adder", steps=steps))
    wait_phase(kubectl, "adder", "Running")
    # No edge runs: wave 1 (cli-1) waits for a report that never comes. (Edge names of its
    # own: the registry is the session's, and test_rollout_operator's dock-* edges report.)
    edges = ["cli-1", "cli-2", "cli-3"]
    rollout = {"waves": [{"edges": ["cli-1"]}, {"percent": 100}], "waveTimeoutSeconds": 600}
    apply_publish(kubectl, reg, "pub", edges=edges, rollout=rollout)
    wait_publish(kubectl, "Published", "pub")
    wait_for(
        "the rollout to wait in wave 1",
        lambda: (publish_status(kubectl, "pub").get("rollout") or {}).get("phase") == "Progressing",
        timeout=30,
    )
    env = {"KUBECONFIG": str(cluster["kubeconfig"])}
    proc = _cli(env, namespace, "publish", "rollout", "pub", "--abort", "--timeout", "60")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("Aborted: ") and "aborted by request" in proc.stdout
    obj = kubectl.get("publish", "pub")
    asked = obj["metadata"]["annotations"][ROLLOUT_REQUEST]
    roll = obj["status"]["rollout"]
    assert roll["phase"] == "Aborted" and roll["handledRequest"] == asked
    assert asked.startswith("abort:") and roll["reason"] == "aborted by request"
    # The operator's own status.edges, as the DataFrame shows it: no edge ever reported.
    df = Client(kubeconfig=str(cluster["kubeconfig"]), namespace=namespace).edges("pub")
    assert list(df["edge"]) == edges and set(df["state"]) == {"Unknown"}
    assert list(df["wave"]) == [1, 2, 2] and df["lastSeen"].isna().all()

    # resume: the operator takes the rollout up again at wave 1 (which waits again, so the
    # CLI's wait for its end times out; the request was handled all the same).
    proc = _cli(env, namespace, "publish", "rollout", "pub", "--resume", "--timeout", "3")
    assert proc.returncode == 1 and "still Published after 3s" in proc.stderr, proc.stderr
    asked = kubectl.get("publish", "pub")["metadata"]["annotations"][ROLLOUT_REQUEST]
    assert asked.startswith("resume:")
    roll = wait_for(
        "the resume to be handled",
        lambda: (r := publish_status(kubectl, "pub")["rollout"])["handledRequest"] == asked and r,
        timeout=30,
    )
    assert roll["phase"] == "Progressing" and roll["wave"] == 1

    # --to a new version of the pipeline, on a Publish whose edges never report either: each
    # wave ends after waveTimeoutSeconds with its edges pending (offline, not failed).
    quick = {"waves": [{"edges": ["cam-1"]}, {"percent": 100}], "waveTimeoutSeconds": 1}
    apply_publish(kubectl, reg, "pub2", edges=["cam-1", "cam-2", "cam-3"], rollout=quick)
    v1 = wait_publish(kubectl, "Published", "pub2")["pipelineVersion"]
    steps[0]["model"]["version"] = "2"
    kubectl.apply(pipeline("adder", steps=steps))
    v2 = wait_for(
        "the pipeline's second version",
        lambda: (v := pipeline_status(kubectl, "adder").get("version")) != v1 and v,
        timeout=60,
    )
    proc = _cli(env, namespace, "publish", "rollout", "pub2", "--to", v2[:8], "--timeout", "60")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "Complete: 0 updated, 3 pending, 0 failed"
    progress = [ln for ln in proc.stderr.splitlines() if not ln.startswith("warning")]
    assert progress[-1] == "Complete: 0 updated, 3 pending, 0 failed", proc.stderr
    assert set(progress[:-1]) <= {
        "wave 1/2: 0 updated, 0 pending, 0 failed",
        "wave 2/2: 0 updated, 1 pending, 0 failed",
    }, proc.stderr
    st = publish_status(kubectl, "pub2")
    assert st["pipelineVersion"] == v2 and st["rollout"]["version"] == v2
