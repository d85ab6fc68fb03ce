"""Pipeline and Publish specs checked as the operator checks them, and before they reach the
cluster (``pipeline apply``, ``Client.apply``): one message naming every bad field
(``spec.…``) in the user's words, never the apiserver's Go-formatted schema errors."""

from __future__ import annotations

import json
import re
from typing import Any, Literal, TypeVar

from pydantic import ValidationError

from .config import NAME_MAX, NAME_PATTERN, ConfigError, PipelineConfig, SpecModel, config_error
from .outputs import OutputsOf, check_validations
from .resources import Autoscaling, PipelineSpec, PublishSpec

M = TypeVar("M", bound=SpecModel)


def _parse(model: type[M], spec: Any, strict: bool) -> M:
    if not isinstance(spec, dict):
        raise ConfigError(f"spec: expected a mapping, got {type(spec).__name__}", "spec")
    try:
        if strict:  # JSON's types, as the apiserver checks them: "yes" is not true
            return model.model_validate_json(json.dumps(spec, default=str), strict=True)
        return model.model_validate(spec)
    except ValidationError as exc:
        raise config_error(exc, prefix="spec") from None


def parse_pipeline_spec(spec: Any, *, strict: bool = False) -> PipelineSpec:
    """A Pipeline's spec, or ConfigError naming every bad field (``spec.…``)."""
    return _parse(PipelineSpec, spec, strict)


def parse_publish_spec(spec: Any, *, strict: bool = False) -> PublishSpec:
    """A Publish's spec, or ConfigError naming every bad field (``spec.…``)."""
    return _parse(PublishSpec, spec, strict)


def pipeline_config(
    name: Any, spec: PipelineSpec, outputs_of: OutputsOf | None = None
) -> PipelineConfig:
    """The pipeline config a Pipeline's steps stand for (no version yet), with its
    validations checked against the outputs known here (see ``edgepipe.outputs``)."""
    if not isinstance(name, str) or not re.match(NAME_PATTERN, name) or len(name) > NAME_MAX:
        raise ConfigError(
            f"metadata.name: {name!r} is not a pipeline name: lower-case letters, digits and "
            f"'-', starting with a letter, at most {NAME_MAX} characters",
            "metadata.name",
        )
    try:
        config = PipelineConfig(
            name=name,
            steps=spec.steps,
            engine=spec.deployment.engine(),
            validations=spec.validations,
        )
    except ValidationError as exc:
        raise config_error(exc, prefix="spec") from None
    check_validations(config, outputs_of, prefix="spec.")
    return config


def check_manifest(doc: dict[str, Any]) -> None:
    """Raise ConfigError unless a Pipeline or Publish manifest is what the CRD and the
    operator take. A Pipeline's rules are checked against the outputs known without its
    models (a postprocess's); the operator checks more once it reads them."""
    name = (doc.get("metadata") or {}).get("name")
    if doc.get("kind") == "Pipeline":
        spec = parse_pipeline_spec(doc.get("spec"), strict=True)
        if spec.version is None:  # a pinned version deploys a kept config, not these steps
            pipeline_config(name, spec)
    elif doc.get("kind") == "Publish":
        parse_publish_spec(doc.get("spec"), strict=True)


def autoscaling_patch(value: Autoscaling | dict[str, Any] | Literal[False]) -> dict | None:
    """spec.deployment.autoscaling for a merge patch: every field (None too, so that one
    left out, like behavior, is removed), or None for False (autoscaling removed); a bad
    field is a ConfigError naming it."""
    if value is False:
        return None
    try:
        parsed = value if isinstance(value, Autoscaling) else Autoscaling.model_validate(value)
    except ValidationError as exc:
        raise config_error(exc, prefix="spec.deployment.autoscaling") from None
    return parsed.model_dump(by_alias=True, mode="json")
