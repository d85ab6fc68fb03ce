"""The parts of a pipeline step: its model, image preprocess, YOLOv8 postprocess, dynamic
batching, shadow models and A/B split. ``edgepipe.config`` re-exports them."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from .spec import SHA256_PATTERN, Name, SpecModel


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


class Validation(SpecModel):
    """A named rule over a row's outputs (see ``edgepipe.expressions``); a row where it does
    not hold lists its name in ``check_failures``, and the answer is still returned."""

    name: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_-]{0,62}$", description="Rule name.")
    expr: str = Field(
        min_length=1,
        max_length=500,
        description="Boolean expression over the last step's outputs, e.g. "
        "any(detections[:, 4] > 0.9); functions: any, all, max, min, mean, sum, count, abs, "
        "isnan, isfinite.",
    )

    @field_validator("expr")
    @classmethod
    def _in_the_language(cls, expr: str) -> str:
        from .expressions import ExpressionError, parse

        try:
            parse(expr)
        except ExpressionError as exc:
            raise ValueError(str(exc)) from None
        return expr


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


class Variant(SpecModel):
    """Another model for a split step, with its share of the requests."""

    model: ModelRef
    weight: float = Field(default=1.0, ge=0, description="Relative share of requests.")


class Split(SpecModel):
    """An A/B split: each request goes to the step's own model or one of ``variants``, by
    weight, or by the hash of a request header so that one key always gets one variant.
    The answer's model_name and model_version say which answered."""

    weight: float = Field(default=1.0, ge=0, description="The step's own model's share.")
    header: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9-]{1,64}$",
        description="Request header whose value picks the variant (sticky); else random.",
    )
    variants: list[Variant] = Field(
        min_length=1, max_length=8, description="The other models, same inputs and outputs."
    )

    @model_validator(mode="after")
    def _some_weight(self) -> Split:
        if self.weight + sum(v.weight for v in self.variants) <= 0:
            raise ValueError("the weights add up to 0; give at least one a positive weight")
        return self


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
    shadows: list[ModelRef] = Field(
        default_factory=list,
        max_length=4,
        description="Models that run on the step's input beside its model; their outputs "
        "go in the answer's shadow_data and never change or fail it.",
    )
    split: Split | None = Field(default=None, description="A/B split across models.")

    @model_validator(mode="after")
    def _batching_alone(self) -> Step:
        if self.batching is not None and (self.shadows or self.split is not None):
            raise ValueError("batching cannot be combined with shadows or split in one step")
        return self

    def models(self, where: str) -> list[tuple[str, ModelRef]]:
        """(field path, model) of every model this step loads."""
        found = [(f"{where}.model", self.model)]
        found += [(f"{where}.shadows[{i}]", m) for i, m in enumerate(self.shadows)]
        if self.split is not None:
            found += [
                (f"{where}.split.variants[{i}].model", v.model)
                for i, v in enumerate(self.split.variants)
            ]
        return found

    def with_models(self, where: str, new: dict[str, ModelRef]) -> Step:
        """This step with its models replaced from ``new`` (by field path)."""
        update: dict = {"model": new.get(f"{where}.model", self.model)}
        if self.shadows:
            update["shadows"] = [
                new.get(f"{where}.shadows[{i}]", m) for i, m in enumerate(self.shadows)
            ]
        if self.split is not None:
            variants = [
                v.model_copy(
                    update={"model": new.get(f"{where}.split.variants[{i}].model", v.model)}
                )
                for i, v in enumerate(self.split.variants)
            ]
            update["split"] = self.split.model_copy(update={"variants": variants})
        return self.model_copy(update=update)

    @property
    def step_name(self) -> str:
        return self.name or self.model.name
