"""CRDs generated from the resource models: ``python -m edgepipe.crds --write|--check``.

Pydantic's JSON Schema is turned into the structural OpenAPI v3 subset that the
apiextensions API accepts: references are inlined, ``Optional`` becomes an omittable field,
``const`` becomes a one-value ``enum``, draft-2020 ``exclusiveMinimum: n`` becomes OpenAPI's
``minimum: n, exclusiveMinimum: true``, and keywords Kubernetes rejects are dropped. The
files under ``crds/`` and ``charts/edgepipe/crds/`` are this module's output; a test fails
when they drift from it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from .resources import GROUP, VERSION, PipelineSpec, PipelineStatus, PublishSpec, PublishStatus

ROOT = Path(__file__).resolve().parent.parent
OUTPUT_DIRS = ("crds", "charts/edgepipe/crds")

_KEEP = {
    "type",
    "description",
    "default",
    "enum",
    "pattern",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "items",
    "properties",
    "required",
    "additionalProperties",
    "format",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-int-or-string",
}


class SchemaError(ValueError):
    """A model uses a construct that has no structural-schema equivalent."""


def structural(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """One JSON-Schema node (from pydantic) as a structural OpenAPI v3 node."""
    node = dict(schema)
    if "$ref" in node:
        target = defs[node.pop("$ref").split("/")[-1]]
        merged = {**target, **{k: v for k, v in node.items() if k in ("description", "default")}}
        return structural(merged, defs)
    if "anyOf" in node:
        options = [o for o in node.pop("anyOf") if o.get("type") != "null"]
        if len(options) != 1:
            raise SchemaError(f"unions are not structural: {options}")
        inner = structural(options[0], defs)
        for key in ("description", "default", "x-kubernetes-preserve-unknown-fields"):
            if key in node and node[key] is not None:
                inner[key] = node[key]
        return inner
    if "allOf" in node and len(node["allOf"]) == 1:
        inner = node.pop("allOf")[0]
        return structural({**inner, **node}, defs)
    if "const" in node:
        node["enum"] = [node.pop("const")]
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key not in _KEEP:
            continue
        if key == "default" and value is None:
            continue
        if key == "properties":
            value = {name: structural(sub, defs) for name, sub in value.items()}
        elif key == "items":
            value = structural(value, defs)
        elif key == "additionalProperties":
            if value is False:
                continue  # unknown fields are pruned by the apiserver instead
            if value is True:  # any fields: kept with x-kubernetes-preserve-unknown-fields
                continue
            value = structural(value, defs) if isinstance(value, dict) else value
        elif key in ("exclusiveMinimum", "exclusiveMaximum") and not isinstance(value, bool):
            out["minimum" if key == "exclusiveMinimum" else "maximum"] = value
            value = True
        out[key] = value
    if "properties" in out:
        out.setdefault("type", "object")
    if "enum" in out and "type" not in out:
        out["type"] = "string"
    return out


def model_schema(model: type[BaseModel]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    return structural(raw, raw.get("$defs", {}))


def build_crd(
    *,
    kind: str,
    plural: str,
    short_names: list[str],
    spec: type[BaseModel],
    status: type[BaseModel],
    columns: list[dict[str, Any]],
) -> dict[str, Any]:
    status_schema = model_schema(status)
    # kopf may keep per-handler progress under status.kopf; keep it from being pruned.
    status_schema["properties"]["kopf"] = {
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": True,
    }
    spec_schema = model_schema(spec)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": short_names,
                "categories": ["edgepipe"],
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": spec_schema.get("description", kind),
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec_schema,
                                "status": status_schema,
                            },
                        }
                    },
                }
            ],
        },
    }


def _column(name: str, path: str, type_: str = "string", **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": type_, "jsonPath": path, **extra}


def build_crds() -> dict[str, dict[str, Any]]:
    """Both CRDs, keyed by file name."""
    age = _column("Age", ".metadata.creationTimestamp", "date")
    return {
        f"pipelines.{GROUP}.yaml": build_crd(
            kind="Pipeline",
            plural="pipelines",
            short_names=["pl", "epl"],
            spec=PipelineSpec,
            status=PipelineStatus,
            columns=[
                _column("Phase", ".status.phase"),
                _column("Deployed", ".status.deployed", "boolean"),
                _column("Version", ".status.version"),
                _column("URL", ".status.url"),
                age,
            ],
        ),
        f"publishes.{GROUP}.yaml": build_crd(
            kind="Publish",
            plural="publishes",
            short_names=["pub"],
            spec=PublishSpec,
            status=PublishStatus,
            columns=[
                _column("Pipeline", ".spec.pipeline"),
                _column("Phase", ".status.phase"),
                _column("Chart Version", ".status.helmChartVersion"),
                age,
            ],
        ),
    }


HEADER = (
    "# Generated by `python -m edgepipe.crds --write` from edgepipe/resources.py. Do not edit.\n"
)


def render() -> dict[Path, str]:
    """Every generated file, by path under the repo root, with its text."""
    files = {}
    for name, crd in build_crds().items():
        text = HEADER + yaml.safe_dump(crd, sort_keys=False, width=100)
        for folder in OUTPUT_DIRS:
            files[Path(folder) / name] = text
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgepipe.crds", description=__doc__)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", action="store_true", help="write the generated files")
    mode.add_argument("--check", action="store_true", help="fail when files differ")
    args = parser.parse_args(argv)
    stale = []
    for rel, text in render().items():
        path = ROOT / rel
        if args.write:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        elif not path.exists() or path.read_text() != text:
            stale.append(str(rel))
    if stale:
        print("out of date (run `make generate`): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
