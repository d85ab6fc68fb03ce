"""Access control on the test control plane: the apiserver's Pod Security admission takes
every pod edgepipe runs in a namespace enforcing "restricted", and an operator installed
with watchNamespaces runs under its own ServiceAccount's Roles, serves its namespace, reads
no Secret elsewhere and leaves other namespaces' Pipelines alone."""

from __future__ import annotations

import copy
import json
import subprocess
import uuid
from pathlib import Path

import pytest
import yaml

from tests.helpers.helm import OPERATOR_CHART, docs, edge_chart, edge_template, helm
from tests.helpers.kube import KWOK_OPERATOR_ENV, Kubectl, OperatorProcess
from tests.helpers.pipelines import pipeline, status, wait_phase
from tests.helpers.securitypods import engine_pod, pod_of

pytestmark = pytest.mark.cluster


def dry_run_pod(kubectl: Kubectl, name: str, spec: dict) -> subprocess.CompletedProcess:
    spec = {**spec, "serviceAccountName": "default"}  # the chart's own may not exist here
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}
    return kubectl("create", "--dry-run=server", "-f", "-", stdin=json.dumps(pod), check=False)


def test_every_pod_is_admitted_where_restricted_is_enforced(
    kubectl: Kubectl, namespace: str, tmp_path: Path
) -> None:
    kubectl(
        "label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted",
        namespaced=False,
    )  # fmt: skip
    chart = edge_chart(tmp_path)
    pods = {
        "engine": engine_pod(auth={"tokenSecretRef": {"name": "engine-token"}}),
        "operator": pod_of(helm("template", "x", OPERATOR_CHART).stdout),
        "edge": pod_of(edge_template(chart, "auth.existingSecret=engine-token")),
    }
    for name, spec in pods.items():
        admitted = dry_run_pod(kubectl, name, spec)
        assert admitted.returncode == 0, (name, admitted.stderr)
        assert "violate" not in admitted.stderr, (name, admitted.stderr)
    # The admission does refuse: the engine pod without its seccomp profile.
    loose = copy.deepcopy(pods["engine"])
    del loose["containers"][0]["securityContext"]["seccompProfile"]
    refused = dry_run_pod(kubectl, "loose", loose)
    assert refused.returncode != 0 and "seccompProfile" in refused.stderr, refused.stderr


def _service_account_kubeconfig(admin: Path, token: str, dest: Path) -> Path:
    config = json.loads(
        subprocess.run(
            ["kubectl", f"--kubeconfig={admin}", "config", "view", "--raw", "--minify", "-o",
             "json"],
            capture_output=True, text=True, check=True,
        ).stdout
    )  # fmt: skip
    config["users"][0]["user"] = {"token": token}
    dest.write_text(json.dumps(config))
    return dest


@pytest.fixture
def scoped(cluster: dict, tmp_path: Path):
    """The chart's RBAC for watchNamespaces [team-a] applied (its ServiceAccount, Roles,
    RoleBindings), and the operator running as that ServiceAccount, told to watch team-a."""
    suffix = uuid.uuid4().hex[:5]
    ops, team_a, team_b = (f"{n}-{suffix}" for n in ("ops", "team-a", "team-b"))
    admin = Kubectl(cluster["kubeconfig"], ops)
    for ns in (ops, team_a, team_b):
        admin("create", "namespace", ns, namespaced=False)
    rendered = helm(
        "template", "x", OPERATOR_CHART, "--namespace", ops,
        "--set", f"watchNamespaces={{{team_a}}}",
    ).stdout  # fmt: skip
    rbac = [d for d in docs(rendered) if d["kind"] != "Deployment"]
    assert {d["kind"] for d in rbac} == {"ServiceAccount", "Role", "RoleBinding"}
    for d in rbac:  # helm leaves the namespace out where it is the release's
        d["metadata"].setdefault("namespace", ops)
    admin("apply", "-f", "-", stdin=yaml.safe_dump_all(rbac), namespaced=False)
    token = admin("create", "token", "x-edgepipe", "--duration=2h").stdout.strip()
    kubeconfig = _service_account_kubeconfig(cluster["kubeconfig"], token, tmp_path / "sa")
    op = OperatorProcess(
        kubeconfig,
        tmp_path / "op.log",
        {
            **KWOK_OPERATOR_ENV,
            "EDGEPIPE_OPERATOR_NAMESPACE": team_a,
        },
    ).start()
    yield admin, ops, team_a, team_b, op
    op.stop()
    for ns in (ops, team_a, team_b):
        admin("delete", "namespace", ns, "--wait=false", namespaced=False, check=False)


def test_a_namespaced_operator_serves_its_namespace_only(scoped) -> None:
    admin, ops, team_a, team_b, op = scoped
    who = f"--as=system:serviceaccount:{ops}:x-edgepipe"

    def can(*args: str) -> str:
        return admin("auth", "can-i", *args, who, check=False, namespaced=False).stdout.strip()

    assert can("get", "secrets", "-n", team_a) == "yes"
    assert can("get", "secrets", "-n", team_b) == "no"
    assert can("list", "secrets", "-A") == "no"
    assert can("list", "pipelines.edgepipe.io", "-A") == "no"
    assert can("list", "customresourcedefinitions") == "no"
    a, b = Kubectl(admin.kubeconfig, team_a), Kubectl(admin.kubeconfig, team_b)
    a.apply(pipeline("mine", replicas=1))
    b.apply(pipeline("theirs", replicas=1))
    try:
        wait_phase(a, "mine", "Running", timeout=120)
    except AssertionError:
        raise AssertionError(op.log()) from None
    assert a.get("deployment", "mine-engine") is not None
    # team-b is not watched: its Pipeline has no status and no engine, even a while later.
    assert status(b, "theirs") == {}
    assert b.get("deployment", "theirs-engine") is None
    # A reference to a Secret in team-b is refused, the field named.
    foreign = pipeline("foreign")
    foreign["spec"]["registry"] = {"secretRef": {"name": "login", "namespace": team_b}}
    a.apply(foreign)
    st = wait_phase(a, "foreign", "Error", timeout=60)
    assert f"spec.registry.secretRef.namespace: '{team_b}'" in st["message"], st
    log = op.log()
    assert "Forbidden" not in log and "Traceback" not in log, log
