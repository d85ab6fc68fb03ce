"""The CRDs: generated from the resource models, structural, and committed as generated."""

from __future__ import annotations

import json
import subprocess
import sys

from edgepipe.crds import build_crds, render
from tests.helpers.paths import ROOT


def test_committed_crds_match_the_models() -> None:
    # The same check CI needs: a model change without `make generate` fails here.
    proc = subprocess.run(
        [sys.executable, "-m", "edgepipe.crds", "--check"], cwd=ROOT, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    for rel, text in render().items():
        assert (ROOT / rel).read_text() == text


def test_schemas_are_structural() -> None:
    for crd in build_crds().values():
        schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        text = json.dumps(schema)
        for banned in ('"$ref"', '"anyOf"', '"allOf"', '"const"', '"title"', '"$defs"'):
            assert banned not in text, banned

        def walk(node, path="") -> None:
            if "properties" in node:
                assert node.get("type") == "object", path
                for key, sub in node["properties"].items():
                    walk(sub, f"{path}.{key}")
            if "items" in node:
                walk(node["items"], path + "[]")
            if node.get("exclusiveMinimum") is not None:
                assert node["exclusiveMinimum"] is True and "minimum" in node, path
            if (
                not {"x-kubernetes-preserve-unknown-fields", "x-kubernetes-int-or-string"}
                & set(node)
                and path
            ):
                assert "type" in node, path

        walk(schema)


def test_pipeline_crd_fields() -> None:
    crd = build_crds()["pipelines.edgepipe.io.yaml"]
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    step = spec["properties"]["steps"]["items"]
    assert spec["required"] == ["steps"] and spec["properties"]["steps"]["minItems"] == 1
    assert step["properties"]["batchConfig"]["enum"] == ["single", "batch"]
    assert step["properties"]["batchConfig"]["default"] == "single"
    cpus = spec["properties"]["deployment"]["properties"]["cpus"]
    assert cpus == {**cpus, "minimum": 0, "exclusiveMinimum": True, "type": "number"}
    assert crd["spec"]["names"]["shortNames"] == ["pl", "epl"]
