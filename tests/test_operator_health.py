"""The operator's pod health (edgepipe_operator.health): why an engine pod is not ready,
read from its container statuses, its scheduling, and the engine's own /health/ready."""

from __future__ import annotations

import pytest
from edgepipe_operator import health


def pod(state: dict, ready: bool = False, last: dict | None = None, **status) -> dict:
    cs = {"name": "engine", "ready": ready, "state": state, "lastState": last or {}}
    return {
        "metadata": {"name": "p-1"},
        "status": {"containerStatuses": [cs], "podIP": "10.213.88.9", **status},
    }


@pytest.mark.parametrize(
    ("the_pod", "words"),
    [
        (pod({"waiting": {"reason": "ImagePullBackOff", "message": "no such image"}}),
         "container engine: ImagePullBackOff: no such image"),
        (pod({"waiting": {"reason": "CrashLoopBackOff"}},
             last={"terminated": {"reason": "OOMKilled", "exitCode": 137}}),
         "CrashLoopBackOff (last exit: OOMKilled, code 137)"),
        (pod({"running": {}}, last={"terminated": {"reason": "Error", "exitCode": 137}}),
         "restarted after Error"),
        (pod({"terminated": {"reason": "Completed", "exitCode": 0}}), "terminated (Completed"),
        ({"metadata": {"name": "p-2"}, "status": {"conditions": [
            {"type": "PodScheduled", "status": "False", "message": "0/2 nodes: Insufficient cpu"}]}},
         "cannot be scheduled: 0/2 nodes: Insufficient cpu"),
    ],
)  # fmt: skip
def test_why_a_pod_is_not_ready(the_pod: dict, words: str) -> None:
    assert words in health.pods_problem([the_pod])


def test_starting_and_leaving_pods_are_not_problems() -> None:
    assert health.pods_problem([pod({"waiting": {"reason": "ContainerCreating"}})]) is None
    leaving = pod({"waiting": {"reason": "CrashLoopBackOff"}})
    leaving["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    assert health.pods_problem([leaving]) is None


def test_a_running_unready_engine_is_asked_why() -> None:
    asked = []

    def probe(p: dict) -> str:
        asked.append(p["status"]["podIP"])
        return health.ready_reason({"status": "not ready", "errors": {"x": "model missing"}})

    running = pod({"running": {}})
    assert health.pods_problem([running], probe) == (
        "engine p-1 not ready: pipeline x: model missing"
    )
    assert asked == ["10.213.88.9"]
    assert health.pods_problem([pod({"running": {}}, ready=True)], probe) is None
    assert health.ready_reason({"status": "not ready", "reason": "shutting down"}) == (
        "shutting down"
    )
