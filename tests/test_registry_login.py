"""A registry login, from the user's Secret to the engine: the operator hands it to the pod by
reference only (edgepipe_operator.registry), and the engine logs in from a docker config file."""

from __future__ import annotations

import base64
import json

import pytest
from edgepipe_operator.registry import SecretProblem, login_from_secret, pod_registry

from edgepipe import oci
from edgepipe.engine.settings import Settings
from edgepipe.resources import ModelRegistry, SecretRef


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
    assert settings.registry_login.credentials("r:5000") == oci.Credentials("u", "pw")
    assert settings.registry_login.credentials("other:1") == oci.Credentials("a", "b")
    explicit = Settings.from_env(
        {"OCI_AUTH_FILE": str(path), "OCI_USERNAME": "x", "OCI_PASSWORD": "y"}
    )
    assert explicit.registry_login.credentials("r:5000") == oci.Credentials("x", "y")
