"""The operator survives SIGKILL mid-reconcile and converges with no duplicates."""

from __future__ import annotations

import json
import time

import pytest

from tests.helpers.kube import wait_for
from tests.helpers.pipelines import pipeline, wait_phase

pytestmark = pytest.mark.cluster


def test_killed_operator_converges_after_restart(operator, kubectl) -> None:
    names = [f"p{i}" for i in range(4)]
    for name in names:
        kubectl.apply(pipeline(name))
    time.sleep(0.3)  # some reconciles are under way, some not started
    operator.kill()
    operator.start()
    for name in names:
        st = wait_phase(kubectl, name, "Running", timeout=90)
        assert len(st["versions"]) == 1
    for kind in ("deployments", "services", "configmaps"):
        objs = kubectl.items(kind, "app.kubernetes.io/managed-by=edgepipe-operator")
        assert sorted(o["metadata"]["labels"]["app.kubernetes.io/instance"] for o in objs) == names
    # And a restart with nothing to do changes nothing.
    before = {
        o["metadata"]["name"]: o["metadata"]["resourceVersion"]
        for o in kubectl.items("deployments")
    }
    operator.stop()
    # A Publish deleted while no operator ran: its entry goes when the Pipeline is resumed.
    ghost = {"status": {"publishes": [{"name": "gone", "phase": "Failed"}]}}
    kubectl("patch", "pipeline", "p0", "--subresource=status", "--type=merge", "-p",
            json.dumps(ghost))  # fmt: skip
    operator.start()
    wait_for(
        "the deleted publish to leave the list",
        lambda: not (kubectl.get("pipeline", "p0").get("status") or {}).get("publishes"),
        timeout=60,
    )
    time.sleep(3)
    after = {
        o["metadata"]["name"]: o["metadata"]["resourceVersion"]
        for o in kubectl.items("deployments")
    }
    assert after == before
    wait_for("operator alive", lambda: operator.proc.poll() is None)
