"""The operator's handlers as kopf loads them: the reconciler, run under kopf's KopfRunner in
this process, deploys and undeploys a Pipeline on the test control plane."""

from __future__ import annotations

import pytest


@pytest.mark.cluster
def test_handlers_are_wired_under_kopf_runner(cluster, kubectl, monkeypatch) -> None:
    """The reconciler, registered as kopf would load it, deploys and undeploys a Pipeline."""
    # The operator's own login handler (startup.py) reads KUBECONFIG when kopf logs in.
    from kopf.testing import KopfRunner

    from tests.helpers.kube import wait_for
    from tests.helpers.pipelines import pipeline, wait_phase

    monkeypatch.setenv("KUBECONFIG", str(cluster["kubeconfig"]))
    args = ["run", "--standalone", "--all-namespaces", "-m", "edgepipe_operator.startup"]
    with KopfRunner(args, timeout=60) as runner:
        kubectl.apply(pipeline("wired"))
        wait_phase(kubectl, "wired", "Running", timeout=60)
        assert kubectl.get("deployment", "wired-engine") is not None
        kubectl("patch", "pipeline", "wired", "--type=merge", "-p", '{"spec":{"deployed":false}}')
        wait_phase(kubectl, "wired", "Undeployed", timeout=60)
        wait_for(
            "the engine Deployment to go", lambda: kubectl.get("deployment", "wired-engine") is None
        )
    assert runner.exit_code == 0, runner.output
    assert runner.exception is None
    assert "Handler 'reconcile_pipeline' succeeded" in runner.output
