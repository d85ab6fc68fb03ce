"""What the charts and the operator's builders render for access control: every pod passes
Pod Security "restricted", the engine's token comes from a Secret (a mounted file, never a
value), the operator chart with watchNamespaces grants Roles in those namespaces only, the
docker and compose lines pass the token through from the environment, and a Secret
reference naming another namespace is refused with its field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from edgepipe_operator.settings import OperatorSettings

from edgepipe.engine.settings import Settings
from edgepipe.enginepod import TOKEN_DIR
from edgepipe.publish import compose_yaml, docker_run_command
from edgepipe.resources import PipelineSpec, PublishSpec
from edgepipe.secretrefs import ForeignSecret, check_own_namespace
from tests.helpers.helm import OPERATOR_CHART, docs, edge_template, helm
from tests.helpers.helm import edge_chart as render_edge_chart
from tests.helpers.podsecurity import restricted_violations
from tests.helpers.securitypods import engine_pod, pod_of


def as_env(entries: list[dict]) -> dict[str, str]:
    return {e["name"]: e.get("value", "from-a-secret") for e in entries}


@pytest.fixture(scope="module")
def edge_chart(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return render_edge_chart(tmp_path_factory.mktemp("edge-chart"))


def test_the_edge_chart_takes_the_token_from_a_secret(edge_chart: Path) -> None:
    rendered = edge_template(edge_chart, "auth.existingSecret=engine-token")
    pod = pod_of(rendered)
    (engine,) = pod["containers"]
    env = as_env(engine["env"])
    assert env["EDGEPIPE_ENGINE_API_TOKEN_FILE"] == f"{TOKEN_DIR}/token"
    assert "EDGEPIPE_ENGINE_API_TOKEN" not in env  # never a value
    volume = next(v for v in pod["volumes"] if v["name"] == "api-token")
    assert volume["secret"] == {
        "secretName": "engine-token",
        "items": [{"key": "token", "path": "token"}],
    }
    assert {"name": "api-token", "mountPath": TOKEN_DIR, "readOnly": True} in engine["volumeMounts"]
    settings = Settings.from_env(env)
    assert settings.api_token_file == Path(TOKEN_DIR) / "token" and settings.metrics_protected
    assert restricted_violations(pod) == []


def test_the_edge_chart_without_a_token_and_with_an_open_metrics(edge_chart: Path) -> None:
    pod = pod_of(edge_template(edge_chart))
    env = as_env(pod["containers"][0]["env"])
    assert not {"EDGEPIPE_ENGINE_API_TOKEN_FILE", "EDGEPIPE_ENGINE_API_TOKEN"} & set(env)
    assert restricted_violations(pod) == []
    pod = pod_of(edge_template(edge_chart, "auth.existingSecret=t", "auth.metricsAuth=false"))
    assert not Settings.from_env(as_env(pod["containers"][0]["env"])).metrics_protected


def test_the_docker_and_compose_lines_pass_the_token_through() -> None:
    line = docker_run_command("e:1", "r/p:v", "r", False, {"cpus": 1})
    assert "-e EDGEPIPE_ENGINE_API_TOKEN \\" in line  # from the environment, no value
    assert "EDGEPIPE_ENGINE_API_TOKEN=" not in line
    status = {"pipelineUrl": "r/p:v", "engineUrl": "e:1", "engineConfig": {"cpus": 1}}
    env = yaml.safe_load(compose_yaml(status, "r", False))["services"]["engine"]["environment"]
    assert env["EDGEPIPE_ENGINE_API_TOKEN"] == "${EDGEPIPE_ENGINE_API_TOKEN:-}"


def test_the_operator_mounts_a_pipelines_token_secret() -> None:
    pod = engine_pod(auth={"tokenSecretRef": {"name": "engine-token", "key": "tokens"}})
    (engine,) = pod["containers"]
    assert as_env(engine["env"])["EDGEPIPE_ENGINE_API_TOKEN_FILE"] == f"{TOKEN_DIR}/token"
    volume = next(v for v in pod["volumes"] if v["name"] == "api-token")
    assert volume["secret"]["secretName"] == "engine-token"
    assert volume["secret"]["items"] == [{"key": "tokens", "path": "token"}]
    assert restricted_violations(pod) == []
    settings = Settings.from_env(as_env(engine["env"]))
    assert settings.api_token_file is not None and settings.metrics_protected
    scraped = engine_pod(auth={"tokenSecretRef": {"name": "t"}, "metricsAuth": False})
    assert not Settings.from_env(as_env(scraped["containers"][0]["env"])).metrics_protected
    pod = engine_pod()
    assert "EDGEPIPE_ENGINE_API_TOKEN_FILE" not in as_env(pod["containers"][0]["env"])
    assert restricted_violations(pod) == []


def test_the_operator_charts_pod_is_restricted() -> None:
    assert restricted_violations(pod_of(helm("template", "x", OPERATOR_CHART).stdout)) == []


def test_cluster_wide_by_default_with_a_cluster_role() -> None:
    kinds = {d["kind"] for d in docs(helm("template", "x", OPERATOR_CHART).stdout)}
    assert {"ClusterRole", "ClusterRoleBinding"} <= kinds and "Role" not in kinds


def test_watch_namespaces_grants_roles_there_only() -> None:
    rendered = helm(
        "template", "x", OPERATOR_CHART, "--namespace", "ops", "--set", "watchNamespaces={a,b}"
    ).stdout
    found = docs(rendered)
    kinds = [d["kind"] for d in found]
    assert "ClusterRole" not in kinds and "ClusterRoleBinding" not in kinds
    roles = {d["metadata"]["namespace"] for d in found if d["kind"] == "Role"}
    bindings = [d for d in found if d["kind"] == "RoleBinding"]
    assert roles == {"a", "b"} == {b["metadata"]["namespace"] for b in bindings}
    for binding in bindings:
        assert binding["roleRef"]["kind"] == "Role"
        assert binding["subjects"][0]["namespace"] == "ops"  # the operator's ServiceAccount
    secrets = [
        rule
        for d in found
        if d["kind"] == "Role"
        for rule in d["rules"]
        if "secrets" in rule["resources"]
    ]
    assert all(rule["verbs"] == ["get"] for rule in secrets)
    env = as_env(pod_of(rendered)["containers"][0]["env"])
    assert OperatorSettings.from_env(env).namespaces == ["a", "b"]


@pytest.mark.parametrize(
    ("kind", "spec", "field"),
    [
        (
            "Pipeline",
            {
                "steps": [{"model": {"name": "m", "url": "oci://r/m:1"}}],
                "registry": {"secretRef": {"name": "login", "namespace": "team-b"}},
            },
            "spec.registry.secretRef.namespace",
        ),
        (
            "Pipeline",
            {
                "steps": [{"model": {"name": "m", "url": "oci://r/m:1"}}],
                "auth": {"tokenSecretRef": {"name": "t", "namespace": "team-b"}},
            },
            "spec.auth.tokenSecretRef.namespace",
        ),
        (
            "Publish",
            {
                "pipeline": "p",
                "registry": {"url": "r/edge"},
                "signing": {"secretRef": {"name": "key", "namespace": "team-b"}},
            },
            "spec.signing.secretRef.namespace",
        ),
    ],
)
def test_a_secret_in_another_namespace_is_refused_with_its_field(kind, spec, field) -> None:
    model = PipelineSpec if kind == "Pipeline" else PublishSpec
    parsed = model.model_validate(spec)
    with pytest.raises(ForeignSecret) as refused:
        check_own_namespace(parsed, "team-a", kind)
    assert refused.value.field == field
    assert str(refused.value).startswith(f"{field}: 'team-b' is not this {kind}'s namespace")
    check_own_namespace(parsed, "team-b", kind)  # its own namespace, named: fine
