"""Operator settings from env: defaults, overrides, and errors that name the variable."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from edgepipe_operator.settings import OperatorSettings, SettingsError

from edgepipe.settingsbase import settings_rows


def test_defaults_and_overrides() -> None:
    s = OperatorSettings.from_env({})
    assert (s.workers, s.probe_engines, s.namespace) == (8, True, None)
    assert s == OperatorSettings()  # from_env adds no defaults of its own
    s = OperatorSettings.from_env(
        {
            "EDGEPIPE_OPERATOR_WORKERS": "3",
            "EDGEPIPE_OPERATOR_PROBE_ENGINES": "false",
            "EDGEPIPE_OPERATOR_NAMESPACE": "",  # empty: unset (the chart's default)
        }
    )
    assert (s.workers, s.probe_engines, s.namespace) == (3, False, None)
    assert all(row["description"] for row in settings_rows(OperatorSettings))


def test_resync_seconds_is_gone() -> None:
    # Parsed and never used; a leftover env var is ignored, like any unknown one.
    assert "resync_seconds" not in OperatorSettings.model_fields
    OperatorSettings.from_env({"EDGEPIPE_OPERATOR_RESYNC_SECONDS": "10"})


@pytest.mark.parametrize("value", ["0", "-2", "many", "1.5"])
def test_bad_workers_name_the_variable(value: str) -> None:
    with pytest.raises(SettingsError, match=r"^EDGEPIPE_OPERATOR_WORKERS=.*at least 1$"):
        OperatorSettings.from_env({"EDGEPIPE_OPERATOR_WORKERS": value})


@pytest.mark.parametrize("value", ["0", "-1", "soon"])
def test_bad_edge_poll_names_the_variable(value: str) -> None:
    with pytest.raises(SettingsError, match=r"^EDGEPIPE_OPERATOR_EDGE_POLL_SECONDS=.*positive"):
        OperatorSettings.from_env({"EDGEPIPE_OPERATOR_EDGE_POLL_SECONDS": value})
    assert (
        OperatorSettings.from_env({"EDGEPIPE_OPERATOR_EDGE_POLL_SECONDS": "2.5"}).edge_poll_seconds
        == 2.5
    )


@pytest.mark.parametrize("value", ["ture", "2", "enabled"])
def test_a_probe_engines_typo_is_refused_not_read_as_false(value: str) -> None:
    with pytest.raises(SettingsError) as caught:
        OperatorSettings.from_env({"EDGEPIPE_OPERATOR_PROBE_ENGINES": value})
    assert str(caught.value) == (
        f"EDGEPIPE_OPERATOR_PROBE_ENGINES={value!r}: expected true or false (yes/no, on/off, 1/0)"
    )
    for word, flag in (("yes", True), ("on", True), ("0", False), ("Off", False)):
        env = {"EDGEPIPE_OPERATOR_PROBE_ENGINES": word}
        assert OperatorSettings.from_env(env).probe_engines is flag


OPERATOR = Path(__file__).resolve().parents[1] / "operator" / "edgepipe_operator"


def test_only_the_cli_reads_the_settings_from_the_environment() -> None:
    readers = []
    for path in sorted(OPERATOR.glob("*.py")):
        lines = path.read_text().splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            reads = (isinstance(node, ast.Attribute) and node.attr in ("from_env", "environ")) or (
                isinstance(node, ast.Name) and node.id == "getenv"
            )
            if not reads:
                continue
            line = lines[node.lineno - 1].strip()
            # kube.py finds the apiserver as every Kubernetes client does (KUBECONFIG, the
            # in-cluster KUBERNETES_SERVICE_HOST): a connection, not one of our settings.
            connection = path.name == "kube.py" and "EDGEPIPE" not in line
            if path.name != "cli.py" and not connection:
                readers.append((path.name, line))
    # startup.configure's fallback (for kopf's own CLI) reads an empty mapping: the defaults.
    assert [name for name, line in readers if "from_env({})" not in line] == []
    assert [name for name, _ in readers] == ["startup.py"]
