"""The ModelPack spec edgepipe writes to: the pinned schema and media types match the
model-spec Go module's, and the config edgepipe pushes validates against that schema."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest

from edgepipe import oci
from edgepipe.oci import modelpack
from tests.helpers.modeltools import go_module_dir


def test_the_config_edgepipe_pushes_validates_against_the_spec_schema(
    auth_registry, models_dir: Path
) -> None:
    creds = oci.Credentials(auth_registry.username, auth_registry.password)
    client = oci.Client(auth_registry.host, creds, plain_http=True)
    pushed = oci.push_model(
        client, models_dir / "add1.onnx", name="add1", repository="mp/models/add1", version="v3"
    )
    ref = oci.Reference.parse(pushed.reference)
    manifest, _ = client.get_manifest(ref)
    assert manifest["artifactType"] == modelpack.ARTIFACT_TYPE
    assert manifest["config"]["mediaType"] == modelpack.CONFIG
    (layer,) = manifest["layers"]
    assert layer["mediaType"] == modelpack.WEIGHT_RAW
    assert layer["annotations"][modelpack.FILEPATH] == "add1.onnx"
    config = client.get_blob(ref.repository, manifest["config"]["digest"])
    document = json.loads(config)
    jsonschema.Draft4Validator(modelpack.config_schema()).validate(document)
    assert document["config"]["format"] == "onnx"
    assert document["descriptor"] == {"name": "add1", "version": "v3"}
    assert document["modelfs"]["diffIds"] == [f"sha256:{pushed.sha256}"] == [layer["digest"]]


def test_the_schema_refuses_what_the_spec_refuses() -> None:
    """The validator does read the schema: a config without modelfs fails it."""
    bad = {"descriptor": {"name": "m"}, "config": {"format": "onnx"}}
    with pytest.raises(jsonschema.ValidationError, match="modelfs"):
        jsonschema.Draft4Validator(modelpack.config_schema()).validate(bad)


def _go_constants(source: str) -> dict[str, str]:
    return dict(re.findall(r'^\s*(\w+)\s*=\s*"([^"]+)"', source, re.M))


def test_the_pinned_spec_has_not_drifted_from_the_go_module(tmp_path: Path) -> None:
    """The vendored schema is the module's byte for byte; every media type and annotation
    key edgepipe uses is the module's constant."""
    spec = go_module_dir(modelpack.MODEL_SPEC_MODULE, modelpack.MODEL_SPEC_VERSION, tmp_path)
    schema = spec / "schema" / "config-schema.json"
    assert modelpack.SCHEMA_PATH.read_bytes() == schema.read_bytes()
    assert (modelpack.SCHEMA_PATH.parent / "LICENSE").read_bytes() == (
        spec / "LICENSE"
    ).read_bytes()
    go = _go_constants((spec / "specs-go" / "v1" / "mediatype.go").read_text())
    go |= _go_constants((spec / "specs-go" / "v1" / "annotations.go").read_text())
    assert go["ArtifactTypeModelManifest"] == modelpack.ARTIFACT_TYPE
    assert go["MediaTypeModelConfig"] == modelpack.CONFIG
    assert go["MediaTypeModelWeightRaw"] == modelpack.WEIGHT_RAW
    assert go["MediaTypeModelWeight"] == modelpack.WEIGHT_TAR
    assert go["MediaTypeModelWeightGzip"] == modelpack.WEIGHT_TAR_GZIP
    assert go["MediaTypeModelWeightZstd"] == modelpack.WEIGHT_TAR_ZSTD
    assert go["AnnotationFilepath"] == modelpack.FILEPATH


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("oci://r.example/m:v1", None),
        ("oci://r.example/m:v1?path=/models/b.onnx", "/models/b.onnx"),
        ("r.example/m@sha256:" + "a" * 64 + "?path=b.onnx", "b.onnx"),
    ],
)
def test_a_model_reference_names_its_file_with_path(url: str, path: str | None) -> None:
    ref = oci.Reference.parse(url)
    assert ref.path == path
    assert str(ref) == url.removeprefix("oci://")
    assert "?" not in ref.target


def test_a_reference_with_another_query_is_refused() -> None:
    with pytest.raises(oci.OciError, match=r"r.example/m:v1\?file=x: expected \?path=FILE"):
        oci.Reference.parse("oci://r.example/m:v1?file=x")
