"""The env vars the charts and the operator set are fields of the settings models, and
the operator chart's defaults are the model's: one source for every setting."""

from __future__ import annotations

import re

import pytest
from edgepipe_operator import builders
from edgepipe_operator.registry import Login
from edgepipe_operator.settings import OperatorSettings

from edgepipe import oci
from edgepipe.engine.settings import Settings
from edgepipe.settingsbase import env_names
from tests.helpers.helm import OPERATOR_CHART, edge_chart, edge_template, helm, of_kind
from tests.helpers.paths import ROOT

ENGINE_VARS = {n for f in Settings.model_fields for n in env_names(Settings, f)}
OPERATOR_VARS = {n for f in OperatorSettings.model_fields for n in env_names(OperatorSettings, f)}
ENV_NAME = re.compile(r"""(?:name:\s*|"name":\s*")([A-Z][A-Z0-9_]*_[A-Z0-9_]+)\b""")


def container_env(rendered: str) -> list[dict]:
    return of_kind(rendered, "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]


def as_env(entries: list[dict]) -> dict[str, str]:
    """The env a container gets; a value from a Secret as a stand-in."""
    return {e["name"]: e.get("value", "from-a-secret") for e in entries}


def test_every_env_var_named_in_a_template_or_builder_is_a_setting() -> None:
    operator_chart = (ROOT / "charts/edgepipe/templates").glob("*.yaml")
    named = {n for p in operator_chart for n in ENV_NAME.findall(p.read_text())}
    assert named and named <= OPERATOR_VARS, named - OPERATOR_VARS
    engine_sources = [
        *(ROOT / "edgepipe/publish/templates").rglob("*.j2"),
        *(ROOT / "operator/edgepipe_operator").glob("*.py"),
        ROOT / "edgepipe/enginepod.py",
    ]
    named = {n for p in engine_sources for n in ENV_NAME.findall(p.read_text())}
    assert "OCI_AUTH_FILE" in named and "EDGE_NAME" in named  # the scan finds them
    assert named <= ENGINE_VARS, named - ENGINE_VARS


def test_the_operator_charts_defaults_are_the_models() -> None:
    env = container_env(helm("template", "x", OPERATOR_CHART).stdout)
    assert OperatorSettings.from_env(as_env(env)) == OperatorSettings()
    env = container_env(
        helm("template", "x", OPERATOR_CHART, "--set", "operator.watchNamespace=ns").stdout
    )
    assert {e["name"] for e in env} <= OPERATOR_VARS
    assert OperatorSettings.from_env(as_env(env)).namespace == "ns"


@pytest.mark.parametrize("form", ["basic", "dockerconfig"])
def test_the_engine_pods_the_operator_builds_take_their_env(form: str) -> None:
    spec = builders.parse_spec(
        {
            "steps": [{"model": {"name": "m", "url": "oci://r/m:1", "sha256": "0" * 64}}],
            "registry": {"secretRef": {"name": "login"}, "plainHttp": True},
            "deployment": {"cpus": 0.5},
        }
    )
    config = builders.resolve_pipeline("p", spec)
    login = Login(oci.Credentials("u", "pw"), form, "login")
    dep = builders.build_deployment(config, spec, "ns", image="e:1", login=login)
    env = dep["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {e["name"] for e in env} <= ENGINE_VARS
    settings = Settings.from_env(as_env(env))
    assert settings.registry_login.plain_http and settings.cpus == 1


def test_the_edge_charts_env_is_the_engines(tmp_path) -> None:
    env = container_env(edge_template(edge_chart(tmp_path), "verifyKey=PEM"))
    assert {e["name"] for e in env} <= ENGINE_VARS
    settings = Settings.from_env(as_env(env))
    assert settings.edge is not None and settings.edge.verify_key == "PEM"
    assert settings.local_storage == 2**30 and settings.edge_name == "e"
