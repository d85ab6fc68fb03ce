"""Engine settings from env: defaults, the tutorial's names, and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgepipe.engine.settings import EdgeSource, Settings, SettingsError
from edgepipe.settingsbase import env_names, settings_rows


def test_defaults_and_overrides() -> None:
    s = Settings.from_env({})
    assert (s.host, s.port, s.cpus, s.workers, s.debug) == ("0.0.0.0", 8080, 1, 1, False)
    # INFER_WORKERS defaults to CONFIG_CPUS: one thread a call among others
    four = Settings.from_env({"CONFIG_CPUS": "4"})
    assert (four.infer_workers, four.workers, four.threads_per_call) == (None, 4, 1)
    assert s.edge is None and s.registry_login.username is None
    s = Settings.from_env(
        {
            "EDGEPIPE_ENGINE_PORT": "9000",
            "CONFIG_CPUS": "4",
            "DEBUG": "true",
            "EDGEPIPE_ENGINE_INFER_WORKERS": "2",
            "EDGEPIPE_ENGINE_CACHE_DIR": "/tmp/c",
            "EDGEPIPE_ENGINE_CONFIG": "/etc/p.yaml",
            "EDGEPIPE_ENGINE_HOST": "",  # empty: unset
        }
    )
    assert (s.port, s.cpus, s.debug, s.threads_per_call) == (9000, 4, True, 2)
    assert (s.cache_dir, s.config_path, s.host) == (Path("/tmp/c"), Path("/etc/p.yaml"), "0.0.0.0")
    assert Settings.from_env({"CONFIG_CPUS": "0.5"}).cpus == 1  # half a core: one thread
    assert s.with_overrides(port=1234, host=None).port == 1234
    sizes = {"512Mi": 2**29, "2G": 2 * 10**9, "1e9": 10**9, "100": 100}
    for text, size in sizes.items():
        assert Settings.from_env({"LOCAL_INFERENCE_STORAGE": text}).local_storage == size


def test_defaults_are_written_once() -> None:
    # from_env adds no defaults of its own: with nothing set, it is the model's defaults.
    assert Settings.from_env({}) == Settings()
    rows = settings_rows(Settings)
    assert [r["field"] for r in rows] == list(Settings.model_fields)
    for row in rows:
        assert row["description"], f"{row['env']} has no description"
        field = Settings.model_fields[row["field"]]
        if not (field.json_schema_extra or {}).get("default_text"):
            default = getattr(Settings(), row["field"])
            assert row["default"] in (str(default), str(default).lower(), "(none)"), row
    names = [name for field in Settings.model_fields for name in env_names(Settings, field)]
    assert len(names) == len(set(names))  # one variable sets one field
    assert {"PIPELINE_URL", "CONFIG_CPUS", "EDGE_NAME", "LOCAL_INFERENCE_STORAGE"} <= set(names)
    assert {n for n in names if n.startswith("OCI_")} == {
        "OCI_REGISTRY", "OCI_USERNAME", "OCI_PASSWORD", "OCI_PLAIN_HTTP", "OCI_AUTH_FILE",
        "OCI_VERIFY_KEY",
    }  # fmt: skip


def test_edge_mode_and_registry_login() -> None:
    env = {"OCI_USERNAME": "u", "OCI_PASSWORD": "hunter2-secret", "OCI_PLAIN_HTTP": "yes"}
    s = Settings.from_env(env)
    assert s.edge is None and s.registry_login.username == "u" and s.registry_login.plain_http
    assert not s.inference_log_on  # off outside edge mode
    s = Settings.from_env({**env, "PIPELINE_URL": "r:5000/pipelines/x:1", "OCI_REGISTRY": "r"})
    assert s.edge == EdgeSource("r:5000/pipelines/x:1", "r")
    assert s.inference_log_on  # on in edge mode, unless set
    off = Settings.from_env({"PIPELINE_URL": "r/x:1", "EDGEPIPE_ENGINE_LOG_INFERENCES": "off"})
    assert not off.inference_log_on
    assert "hunter2" not in repr(s) and "hunter2" not in repr(s.registry_login)  # not in logs


@pytest.mark.parametrize(
    ("env", "line"),
    [
        ({"CONFIG_CPUS": "lots"}, "CONFIG_CPUS='lots': expected a number of cores"),
        ({"CONFIG_CPUS": "-1"}, "CONFIG_CPUS='-1': expected a positive number of cores"),
        ({"CONFIG_CPUS": "inf"}, "CONFIG_CPUS='inf': expected a positive number of cores"),
        ({"DEBUG": "maybe"}, "DEBUG='maybe': expected true or false (yes/no, on/off, 1/0)"),
        (
            {"EDGEPIPE_ENGINE_ALLOW_NAN": "ture"},
            "EDGEPIPE_ENGINE_ALLOW_NAN='ture': expected true or false (yes/no, on/off, 1/0)",
        ),
        ({"EDGEPIPE_ENGINE_PORT": "http"}, "EDGEPIPE_ENGINE_PORT='http': expected a whole number"),
        (
            {"EDGEPIPE_ENGINE_INFER_WORKERS": "0"},
            "EDGEPIPE_ENGINE_INFER_WORKERS='0': expected a whole number, at least 1",
        ),
        (
            {"EDGEPIPE_ENGINE_LOG_UPLOAD_SECONDS": "0"},
            "EDGEPIPE_ENGINE_LOG_UPLOAD_SECONDS='0': expected a positive number of seconds",
        ),
        (
            {"LOCAL_INFERENCE_STORAGE": "lots"},
            "LOCAL_INFERENCE_STORAGE='lots': expected a size such as 512Mi, 2Gi or 100000000",
        ),
        ({"EDGE_NAME": "Shop_1"}, "EDGE_NAME='Shop_1': expected an edge name ("),
    ],
)
def test_a_bad_value_is_one_line_naming_the_variable(env, line) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env(env)
    assert str(caught.value).startswith(line) and "\n" not in str(caught.value)


def test_each_bad_value_has_its_own_line() -> None:
    env = {"EDGEPIPE_ENGINE_PORT": "x", "DEBUG": "maybe", "EDGEPIPE_ENGINE_GRPC_PORT": "8081"}
    with pytest.raises(SettingsError) as caught:
        Settings.from_env(env)
    assert caught.value.report("edgepipe-engine").splitlines() == [
        "edgepipe-engine: EDGEPIPE_ENGINE_PORT='x': expected a whole number, at least 0",
        "edgepipe-engine: DEBUG='maybe': expected true or false (yes/no, on/off, 1/0)",
    ]
