"""The pipeline config: validation that names the field, and stable versions."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgepipe.config import (
    ConfigError,
    config_for_model_file,
    load_config,
    parse_config,
    resolve_local,
    sanitize_name,
)

SHA = "a" * 64


def doc(**changes):
    base = {
        "name": "demo",
        "steps": [
            {
                "model": {"name": "m", "path": "/models/m.onnx", "sha256": SHA},
                "tensorFields": ["images"],
                "batchConfig": "single",
            }
        ],
        "engine": {"cpus": 2, "memory": "1Gi"},
    }
    base.update(changes)
    return base


def test_round_trip_uses_camel_case() -> None:
    config = parse_config(doc())
    data = config.to_dict()
    assert data["steps"][0]["tensorFields"] == ["images"]
    assert data["steps"][0]["batchConfig"] == "single"
    assert parse_config(data) == config


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"steps": []}, "steps", "at least 1"),
        ({"name": "Bad_Name"}, "name", "pattern"),
        ({"engine": {"cpus": 0}}, "engine.cpus", "greater than 0"),
        ({"engine": {"memory": "lots"}}, "engine.memory", "pattern"),
        (
            {"steps": [{"model": {"name": "m", "path": "/x"}, "batchConfig": "many"}]},
            "steps[0].batchConfig",
            "single",
        ),
        ({"steps": [{"model": {"name": "m"}}]}, "steps[0].model", "exactly one"),
        (
            {"steps": [{"model": {"name": "m", "path": "/x", "sha256": "xyz"}}]},
            "steps[0].model.sha256",
            "pattern",
        ),
        ({"bogus": 1}, "bogus", "Extra inputs"),
    ],
)
def test_errors_name_the_field(change, field, words) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(doc(**change))
    assert info.value.field == field
    assert field in info.value.message and words in info.value.message


def test_version_is_stable_and_ignores_model_location() -> None:
    a = parse_config(doc()).compute_version()
    assert a == parse_config(doc()).compute_version()
    moved = doc()
    moved["steps"][0]["model"] = {"name": "m", "url": "oci://r/m@sha256:" + SHA, "sha256": SHA}
    assert parse_config(moved).compute_version() == a
    edited = doc()
    edited["steps"][0]["batchConfig"] = "batch"
    assert parse_config(edited).compute_version() != a
    other_model = doc()
    other_model["steps"][0]["model"]["sha256"] = "b" * 64
    assert parse_config(other_model).compute_version() != a
    # UUID-shaped, so 0.0.1-<version> is a valid semver pre-release.
    assert [len(p) for p in a.split("-")] == [8, 4, 4, 4, 12]


def test_model_file_config_and_names() -> None:
    config = config_for_model_file("/models/yolov8n.onnx")
    assert config.name == "yolov8n" and config.steps[0].model.path == "/models/yolov8n.onnx"
    assert sanitize_name("best_fp16") == "best-fp16"
    assert sanitize_name("7up") == "p-7up"


def test_load_config_resolves_relative_paths_and_checks_sha(tmp_path: Path) -> None:
    (tmp_path / "m.onnx").write_bytes(b"not really onnx")
    (tmp_path / "p.yaml").write_text("name: p\nsteps:\n  - model: {name: m, path: m.onnx}\n")
    config = load_config(tmp_path / "p.yaml")
    assert config.steps[0].model.path == str(tmp_path / "m.onnx")
    resolved = resolve_local(config)
    assert resolved.steps[0].model.sha256 and resolved.version
    wrong = config.model_copy(
        update={
            "steps": [
                config.steps[0].model_copy(
                    update={"model": config.steps[0].model.model_copy(update={"sha256": SHA})}
                )
            ]
        }
    )
    with pytest.raises(ConfigError, match="expected " + SHA):
        resolve_local(wrong)


def test_load_config_reports_bad_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("name: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "bad.yaml")
