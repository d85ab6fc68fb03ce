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
from typing import Annotated, Any, Literal

import orjson
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.alias_generators import to_camel

API_VERSION = "edgepipe.io/v1alpha1"
KIND = "PipelineConfig"

# A pipeline name becomes `<name>-engine` (a Service, a DNS-1035 label of at most 63).
NAME_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
NAME_MAX = 56
SHA256_PATTERN = r"^[a-f0-9]{64}$"
QUANTITY_PATTERN = r"^[0-9]+(\.[0-9]+)?(m|k|Ki|M|Mi|G|Gi|T|Ti|E|Ei|P|Pi)?$"

Name = Annotated[str, Field(pattern=NAME_PATTERN, min_length=1, max_length=NAME_MAX)]


class ConfigError(ValueError):
    """A pipeline config that does not validate; ``field`` is the dotted path of the bad field."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class SpecModel(BaseModel):
    """The base of every spec document: camelCase aliases, no unknown fields, immutable."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
    )


class ModelRef(SpecModel):
    """One model: what it is (name, version, sha256) and where to find it.

    Exactly one of path (a file in the engine's image or a volume; in a config file, a
    relative path is taken from the file's folder) or url (oci://registry/repo@sha256:...
    or http(s)://...) says where the ONNX file is.
    """

    name: Name = Field(description="Model name, shown by the engine's /models.")
    version: str | None = Field(
        default=None,
        description="Model version. Defaults to a UUID-shaped id derived from the sha256.",
    )
    sha256: str | None = Field(
        default=None,
        pattern=SHA256_PATTERN,
        description="sha256 of the ONNX file (hex). Required once resolved; checked at load.",
    )
    path: str | None = Field(default=None, description="Local path of the ONNX file.")
    url: str | None = Field(
        default=None,
        pattern=r"^(oci|https?)://.+",
        description="oci://registry/repo@sha256:<digest> or http(s):// URL of the ONNX file.",
    )
    runtime: Literal["onnx"] = Field(default="onnx", description="Model runtime.")

    @model_validator(mode="after")
    def _one_location(self) -> ModelRef:
        if (self.path is None) == (self.url is None):
            raise ValueError("give exactly one of 'path' or 'url' for the model file")
        return self


class YoloPostprocess(SpecModel):
    """Optional YOLOv8 decode after the step: boxes instead of raw [1, 4+C, N] floats."""

    kind: Literal["yolov8"] = "yolov8"
    confidence_thres: float = Field(default=0.5, ge=0.0, le=1.0)
    iou_thres: float = Field(default=0.25, ge=0.0, le=1.0)
    classes: list[str] = Field(default_factory=list, description="Class names by index.")


class ImagePreprocess(SpecModel):
    """Optional image decoding before the step: the request sends encoded images (a JPEG,
    PNG or WebP body, an Arrow binary column, or base64 strings in JSON) and the engine
    fills the model's one image input. Only the first step may have it."""

    kind: Literal["image"] = "image"
    resize: Literal["letterbox", "stretch"] = Field(
        default="letterbox",
        description="letterbox: keep the aspect ratio and pad; stretch: plain resize.",
    )
    width: int | None = Field(
        default=None, gt=0, le=8192, description="Input width; defaults to the model's."
    )
    height: int | None = Field(
        default=None, gt=0, le=8192, description="Input height; defaults to the model's."
    )
    layout: Literal["NCHW", "NHWC"] = Field(default="NCHW", description="Model input layout.")
    dtype: Literal["float32", "float16", "uint8"] | None = Field(
        default=None, description="Input dtype; defaults to the model's (which it must match)."
    )
    scale: float = Field(
        default=1 / 255, gt=0, description="Pixel values (0-255) are multiplied by this."
    )
    color: Literal["RGB", "BGR"] = Field(default="RGB", description="Channel order.")
    pad_value: int = Field(default=114, ge=0, le=255, description="Letterbox padding (0-255).")


class Batching(SpecModel):
    """Dynamic batching: concurrent requests stacked into one model call. Needs a model
    whose inputs have a dynamic batch dimension."""

    max_batch_size: int = Field(
        default=8, ge=1, le=1024, description="Most rows (along the batch dim) in one call."
    )
    max_delay_ms: float = Field(
        default=5.0,
        ge=0,
        le=10000,
        description="Longest a request waits for company before its batch runs.",
    )


class Step(SpecModel):
    """One model step of a pipeline."""

    name: str | None = Field(default=None, description="Step name; defaults to the model's name.")
    model: ModelRef
    tensor_fields: list[str] = Field(
        default_factory=list,
        description=(
            "Input columns (first step) or previous outputs (later steps) fed to the model's "
            "inputs, in the model's input order. Empty: by name where they match, else by "
            "position."
        ),
    )
    batch_config: Literal["single", "batch"] = Field(
        default="single",
        description="single: one model call per row; batch: rows stacked into one call.",
    )
    preprocess: ImagePreprocess | None = Field(
        default=None, description="Decode encoded images into the model input (first step)."
    )
    postprocess: YoloPostprocess | None = None
    batching: Batching | None = Field(
        default=None, description="Dynamic batching across requests; off when absent."
    )

    @property
    def step_name(self) -> str:
        return self.name or self.model.name


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

    # -- documents --------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")

    def to_json(self) -> bytes:
        """Canonical bytes: sorted keys, no whitespace. What ConfigMaps and registries hold."""
        return orjson.dumps(self.to_dict(), option=orjson.OPT_SORT_KEYS)

    # -- versions ---------------------------------------------------------------------------

    def compute_version(self) -> str:
        """The stable version id: same steps, models and engine settings, same id."""
        doc = self.to_dict()
        doc.pop("version", None)
        for step in doc["steps"]:
            step["model"].pop("path", None)
            step["model"].pop("url", None)
        return digest_to_uuid(hashlib.sha256(orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)))

    def with_version(self) -> PipelineConfig:
        """This config with ``version`` set to its computed digest."""
        return self.model_copy(update={"version": self.compute_version()})

    def is_resolved(self) -> bool:
        return all(step.model.sha256 for step in self.steps)


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


def parse_config(data: Any, *, source: str = "pipeline config") -> PipelineConfig:
    """Validate a mapping into a PipelineConfig, or raise ConfigError naming the bad field."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping, got {type(data).__name__}")
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = error_field(err["loc"])
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise ConfigError(f"{source}: {field or 'document'}: {err['msg']}{more}", field) from None


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
    steps = []
    for step in config.steps:
        model = step.model
        if model.path and not Path(model.path).is_absolute():
            model = model.model_copy(update={"path": str((base / model.path).resolve())})
        steps.append(step.model_copy(update={"model": model}))
    return config.model_copy(update={"steps": steps})


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
    steps = []
    for i, step in enumerate(config.steps):
        model = step.model
        if model.path:
            try:
                actual = file_sha256(model.path)
            except OSError as exc:
                raise ConfigError(
                    f"steps[{i}].model.path: cannot read {model.path}: {exc.strerror}",
                    f"steps[{i}].model.path",
                ) from None
            if model.sha256 and model.sha256 != actual:
                raise ConfigError(
                    f"steps[{i}].model.sha256: {model.path} has sha256 {actual}, "
                    f"expected {model.sha256}",
                    f"steps[{i}].model.sha256",
                )
            model = model.model_copy(update={"sha256": actual})
        steps.append(step.model_copy(update={"model": model}))
    return config.model_copy(update={"steps": steps}).with_version()
