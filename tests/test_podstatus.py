"""Pure functions of the real-node work: why an engine pod is not ready, and how a
registry login reaches the pod by reference only."""

from __future__ import annotations

import base64
import json

import pytest
from edgepipe_operator import health
from edgepipe_operator.registry import SecretProblem, login_from_secret, pod_registry

from edgepipe import oci
from edgepipe.engine.settings import Settings
from edgepipe.resources import ModelRegistry, SecretRef


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


def secret(**data: str) -> dict:
    return {"data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}


def docker_config(host: str, user: str, password: str) -> str:
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    return json.dumps({"auths": {host: {"auth": auth}}})


def test_a_login_reaches_the_pod_by_reference_only() -> None:
    registry = ModelRegistry(secret_ref=SecretRef(name="reg"), plain_http=True)
    basic = login_from_secret(secret(username="u", password="s3cret"), "reg")
    env, volumes, mounts = pod_registry(registry, basic)
    assert {"name": "OCI_PLAIN_HTTP", "value": "true"} in env
    assert {
        "name": "OCI_PASSWORD",
        "valueFrom": {"secretKeyRef": {"name": "reg", "key": "password"}},
    } in env
    assert "s3cret" not in json.dumps([env, volumes, mounts])
    dc = login_from_secret(
        secret(**{".dockerconfigjson": docker_config("r:5000", "u", "pw")}), "dc"
    )
    assert dc.credentials == oci.Credentials("u", "pw") and dc.form == "dockerconfig"
    env, volumes, mounts = pod_registry(registry, dc)
    assert volumes == [{"name": "registry-login", "secret": {"secretName": "dc"}}]
    assert {"name": "OCI_AUTH_FILE", "value": "/etc/edgepipe/registry/.dockerconfigjson"} in env
    assert "pw" not in json.dumps(env)
    with pytest.raises(SecretProblem, match="not found; create it"):
        login_from_secret(None, "missing")
    with pytest.raises(SecretProblem, match="neither username/password"):
        login_from_secret(secret(token="x"), "odd")
    assert "s3cret" not in repr(basic.credentials)  # never in a log line either


def test_the_engine_logs_in_from_a_docker_config_file(tmp_path) -> None:
    path = tmp_path / "config.json"
    both = json.loads(docker_config("https://other:1/v1/", "a", "b"))
    both["auths"].update(json.loads(docker_config("r:5000", "u", "pw"))["auths"])
    path.write_text(json.dumps(both))
    settings = Settings.from_env({"OCI_AUTH_FILE": str(path)})
    assert settings.registry.credentials("r:5000") == oci.Credentials("u", "pw")
    assert settings.registry.credentials("other:1") == oci.Credentials("a", "b")
    explicit = Settings.from_env(
        {"OCI_AUTH_FILE": str(path), "OCI_USERNAME": "x", "OCI_PASSWORD": "y"}
    )
    assert explicit.registry.credentials("r:5000") == oci.Credentials("x", "y")
