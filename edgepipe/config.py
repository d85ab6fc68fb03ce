"""The pipeline config: the one document that the operator, the engine and a Publish share.

A pipeline config is what a `Pipeline` resource resolves to, what the operator writes into
the engine's ConfigMap, and what a Publish pushes to a registry as the pipeline artifact's
config blob. The engine reads the same bytes in the cluster and at the edge.

Field names are camelCase in documents (``tensorFields``, ``batchConfig``), as in the CRDs;
Python code uses snake_case attributes.

Versions: a pipeline version is a digest of the document with model *locations* left out,
so the same steps, models (by sha256) and engine settings always give the same version,
whether a model is read from a local path, a URL or an OCI reference. It is shaped like a
UUID (as the tutorial's versions are), which also keeps ``0.0.1-<version>`` a valid semver.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any, Literal

import orjson
import yaml
from pydantic import Field, ValidationError, field_validator

from .spec import (
    API_VERSION,
    KIND,
    NAME_MAX,
    NAME_PATTERN,
    QUANTITY_PATTERN,
    SHA256_PATTERN,
    ConfigError,
    Name,
    SpecModel,
)
from .steps import (
    Batching,
    ImagePreprocess,
    ModelRef,
    Split,
    Step,
    Validation,
    Variant,
    YoloPostprocess,
)

__all__ = [
    "API_VERSION",
    "KIND",
    "MAX_ERRORS",
    "NAME_MAX",
    "NAME_PATTERN",
    "QUANTITY_PATTERN",
    "SHA256_PATTERN",
    "Batching",
    "ConfigError",
    "EngineConfig",
    "ImagePreprocess",
    "ModelRef",
    "Name",
    "PipelineConfig",
    "SpecModel",
    "Split",
    "Step",
    "Validation",
    "Variant",
    "YoloPostprocess",
    "absolutize_paths",
    "config_error",
    "config_for_model_file",
    "digest_to_uuid",
    "error_field",
    "file_sha256",
    "from_pipeline_manifest",
    "load_config",
    "model_version",
    "parse_config",
    "read_documents",
    "resolve_local",
    "sanitize_name",
]


class EngineConfig(SpecModel):
    """Resources of one engine replica. ``cpus`` also sets onnxruntime's threads."""

    cpus: float = Field(default=1.0, gt=0, description="CPU cores (CONFIG_CPUS).")
    memory: str = Field(default="1Gi", pattern=QUANTITY_PATTERN, description="Memory, e.g. 1Gi.")
    gpus: int = Field(default=0, ge=0, description="GPUs (nvidia.com/gpu).")


class PipelineConfig(SpecModel):
    """A pipeline: name, version, ordered steps and engine settings."""

    api_version: Literal["edgepipe.io/v1alpha1"] = API_VERSION
    kind: Literal["PipelineConfig"] = KIND
    name: Name
    version: str | None = Field(default=None, description="Digest of the document; computed.")
    steps: list[Step] = Field(min_length=1)
    engine: EngineConfig = Field(default_factory=EngineConfig)
    validations: list[Validation] = Field(
        default_factory=list, max_length=32, description="Rules checked on every row's outputs."
    )

    @field_validator("steps")
    @classmethod
    def _unique_step_names(cls, steps: list[Step]) -> list[Step]:
        seen: set[str] = set()
        for i, step in enumerate(steps):
            if step.step_name in seen:
                raise ValueError(f"step {i} repeats the step name {step.step_name!r}")
            seen.add(step.step_name)
            if i > 0 and step.preprocess is not None:
                raise ValueError(
                    f"step {i} has 'preprocess'; only the first step reads the request"
                )
        return steps

    @field_validator("validations")
    @classmethod
    def _unique_validation_names(cls, validations: list[Validation]) -> list[Validation]:
        names = [v.name for v in validations]
        for i, name in enumerate(names):
            if name in names[:i]:
                raise ValueError(f"validation {i} repeats the name {name!r}")
        return validations

    def models(self) -> list[tuple[str, ModelRef]]:
        """(field path, model) of every model the pipeline loads, in order."""
        return [m for i, step in enumerate(self.steps) for m in step.models(f"steps[{i}]")]

    def map_models(self, fn) -> PipelineConfig:
        """This config with every model ``fn(field path, model)``."""
        new = {where: fn(where, ref) for where, ref in self.models()}
        steps = [step.with_models(f"steps[{i}]", new) for i, step in enumerate(self.steps)]
        return self.model_copy(update={"steps": steps})

    # -- documents --------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        doc = self.model_dump(by_alias=True, exclude_none=True, mode="json")
        # Empty lists of later fields are left out, so that documents (and versions) of
        # pipelines that do not use them stay what they were.
        if not doc.get("validations"):
            doc.pop("validations", None)
        for step in doc["steps"]:
            if not step.get("shadows"):
                step.pop("shadows", None)
        return doc

    def to_json(self) -> bytes:
        """Canonical bytes: sorted keys, no whitespace. What ConfigMaps and registries hold."""
        return orjson.dumps(self.to_dict(), option=orjson.OPT_SORT_KEYS)

    # -- versions ---------------------------------------------------------------------------

    def compute_version(self) -> str:
        """The stable version id: same steps, models and engine settings, same id."""
        # Locations left out (a copy skips the one-location check, and None is not dumped).
        doc = self.map_models(lambda _, ref: ref.model_copy(update={"path": None, "url": None}))
        doc = doc.to_dict()
        doc.pop("version", None)
        return digest_to_uuid(hashlib.sha256(orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)))

    def with_version(self) -> PipelineConfig:
        """This config with ``version`` set to its computed digest."""
        return self.model_copy(update={"version": self.compute_version()})

    def is_resolved(self) -> bool:
        return all(ref.sha256 for _, ref in self.models())


def digest_to_uuid(digest: Any) -> str:
    """Shape the first 128 bits of a hashlib digest (or a hex string) like a UUID."""
    h = digest if isinstance(digest, str) else digest.hexdigest()
    return f"{h[0:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def model_version(ref: ModelRef) -> str:
    """The model's version, or one derived from its sha256."""
    if ref.version:
        return ref.version
    if ref.sha256:
        return digest_to_uuid(ref.sha256)
    return "unversioned"


def sanitize_name(raw: str) -> str:
    """Turn a file stem such as ``best_fp16`` into a valid pipeline name (``best-fp16``)."""
    name = re.sub(r"[^a-z0-9-]+", "-", raw.lower()).strip("-")
    if not name or not name[0].isalpha():
        name = f"p-{name}".rstrip("-")
    return name[:NAME_MAX].rstrip("-")


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def error_field(loc: tuple[Any, ...]) -> str:
    parts: list[str] = []
    for part in loc:
        if isinstance(part, int):
            parts.append(f"[{part}]")
        else:
            parts.append(("." if parts else "") + str(part))
    return "".join(parts)


# A document with more bad fields than this names these and counts the rest.
MAX_ERRORS = 20
# pydantic's own words before the message of a validator's ValueError or assert.
_PYDANTIC_PREFIXES = ("Value error, ", "Assertion failed, ")


def _error_message(err: Any) -> str:
    """One pydantic error in the user's words: a validator's own message as it wrote it,
    a wrong type as what was expected and what was given."""
    msg = str(err["msg"])
    for prefix in _PYDANTIC_PREFIXES:
        msg = msg.removeprefix(prefix)
    if err["type"] in ("bool_parsing", "bool_type"):
        return f"expected true or false, got {err['input']!r}"
    return msg


def config_error(exc: ValidationError, source: str = "", prefix: str = "") -> ConfigError:
    """Every bad field of a document, ``field: what is wrong``, joined by "; " (up to
    MAX_ERRORS, then how many more); ``prefix`` goes before each field (``spec``)."""
    problems: dict[str, str] = {}  # a field once: a union's other members fail it too
    for err in exc.errors():
        field = ".".join(p for p in (prefix, error_field(err["loc"])) if p) or "document"
        problems.setdefault(field, _error_message(err))
    lines = [f"{field}: {msg}" for field, msg in problems.items()]
    if len(lines) > MAX_ERRORS:
        lines = [*lines[:MAX_ERRORS], f"and {len(lines) - MAX_ERRORS} more"]
    text = "; ".join(lines)
    first = next(iter(problems), None)
    return ConfigError(f"{source}: {text}" if source else text, first)


def parse_config(data: Any, *, source: str = "pipeline config") -> PipelineConfig:
    """Validate a mapping into a PipelineConfig, or raise ConfigError naming every bad field."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping, got {type(data).__name__}")
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as exc:
        raise config_error(exc, source) from None


def read_documents(path: str | Path, what: str = "file") -> list[Any]:
    """The YAML (or JSON) documents in a file, or one ConfigError naming the file and the
    line and column of a syntax error."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as f:
            return [d for d in yaml.safe_load_all(f) if d is not None]
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file; expected YAML or JSON") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{path}: not valid YAML or JSON{where}: {problem}") from None


def from_pipeline_manifest(doc: dict[str, Any]) -> dict[str, Any]:
    """A ``kind: Pipeline`` manifest as the pipeline config document it stands for."""
    spec = doc.get("spec") or {}
    deployment = spec.get("deployment") or {}
    return {
        "name": (doc.get("metadata") or {}).get("name"),
        "steps": spec.get("steps"),
        **({"validations": spec["validations"]} if spec.get("validations") else {}),
        "engine": {k: deployment[k] for k in ("cpus", "memory", "gpus") if k in deployment},
    }


def load_config(path: str | Path) -> PipelineConfig:
    """Read a YAML or JSON pipeline config (``kind: PipelineConfig``, or a ``kind:
    Pipeline`` manifest, whose spec means the same); relative model paths are made
    absolute."""
    path = Path(path)
    docs = read_documents(path, "pipeline config")
    if len(docs) != 1:
        raise ConfigError(f"{path}: expected one pipeline config document, found {len(docs)}")
    data = docs[0]
    if isinstance(data, dict) and data.get("kind") == "Pipeline":
        data = from_pipeline_manifest(data)
    elif isinstance(data, dict) and data.get("kind") not in (None, "PipelineConfig"):
        raise ConfigError(
            f"{path}: kind {data.get('kind')!r} is not a pipeline; expected kind "
            "PipelineConfig (or a Pipeline manifest)",
            "kind",
        )
    config = parse_config(data, source=str(path))
    return absolutize_paths(config, path.parent)


def absolutize_paths(config: PipelineConfig, base: Path) -> PipelineConfig:
    def absolute(_: str, model: ModelRef) -> ModelRef:
        if model.path and not Path(model.path).is_absolute():
            return model.model_copy(update={"path": str((base / model.path).resolve())})
        return model

    return config.map_models(absolute)


def config_for_model_file(path: str | Path, *, name: str | None = None) -> PipelineConfig:
    """A one-step pipeline named after the file: ``yolov8n.onnx`` gives ``yolov8n``."""
    path = Path(path).resolve()
    pipeline = name or sanitize_name(path.stem)
    return PipelineConfig(
        name=pipeline,
        steps=[Step(model=ModelRef(name=sanitize_name(path.stem), path=str(path)))],
    )


def resolve_local(config: PipelineConfig) -> PipelineConfig:
    """Fill in the sha256 of every local model file, and the version.

    A given sha256 that does not match the file is a ConfigError: the file is not the model
    the config names.
    """

    def with_sha(where: str, model: ModelRef) -> ModelRef:
        if not model.path:
            return model
        try:
            actual = file_sha256(model.path)
        except OSError as exc:
            raise ConfigError(
                f"{where}.path: cannot read {model.path}: {exc.strerror}", f"{where}.path"
            ) from None
        if model.sha256 and model.sha256 != actual:
            raise ConfigError(
                f"{where}.sha256: {model.path} has sha256 {actual}, expected {model.sha256}",
                f"{where}.sha256",
            )
        return model.model_copy(update={"sha256": actual})

    return config.map_models(with_sha).with_version()
