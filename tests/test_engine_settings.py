"""Engine settings from env: defaults, the tutorial's names, and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgepipe.engine.settings import Settings, SettingsError


def test_defaults_and_overrides() -> None:
    s = Settings.from_env({})
    assert (s.host, s.port, s.cpus, s.infer_workers, s.debug) == ("0.0.0.0", 8080, 1, 1, False)
    assert s.oci is None and s.registry.username is None
    s = Settings.from_env(
        {
            "EDGEPIPE_ENGINE_PORT": "9000",
            "CONFIG_CPUS": "4",
            "DEBUG": "true",
            "EDGEPIPE_ENGINE_INFER_WORKERS": "2",
            "EDGEPIPE_ENGINE_CACHE_DIR": "/tmp/c",
        }
    )
    assert (s.port, s.cpus, s.debug, s.threads_per_call) == (9000, 4, True, 2)
    assert s.cache_dir == Path("/tmp/c")
    assert Settings.from_env({"CONFIG_CPUS": "0.5"}).cpus == 1  # half a core: one thread
    assert s.with_overrides(port=1234, host=None).port == 1234


def test_edge_mode_and_registry_login() -> None:
    env = {"OCI_USERNAME": "u", "OCI_PASSWORD": "hunter2-secret", "OCI_PLAIN_HTTP": "yes"}
    s = Settings.from_env(env)
    assert s.oci is None and s.registry.username == "u" and s.registry.plain_http
    s = Settings.from_env({**env, "PIPELINE_URL": "r:5000/pipelines/x:1", "OCI_REGISTRY": "r"})
    assert s.oci is not None and s.oci.pipeline_url == "r:5000/pipelines/x:1"
    assert "hunter2" not in repr(s.oci)  # the password stays out of logs


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({"CONFIG_CPUS": "lots"}, "CONFIG_CPUS='lots'"),
        ({"CONFIG_CPUS": "-1"}, "positive"),
        ({"DEBUG": "maybe"}, "true or false"),
        ({"EDGEPIPE_ENGINE_PORT": "http"}, "whole number"),
        ({"EDGEPIPE_ENGINE_INFER_WORKERS": "0"}, "at least 1"),
    ],
)
def test_bad_values_name_the_variable(env, words) -> None:
    with pytest.raises(SettingsError, match=words):
        Settings.from_env(env)
