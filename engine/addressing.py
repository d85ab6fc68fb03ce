"""Which models a client can name alone: every model a pipeline loads (a step's own, a
split's variants, the shadows), listed with its role and served as a one-step pipeline."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from edgepipe.config import ModelRef, Step

from .pipeline import Pipeline
from .runtime import StepRuntime


def roles(model: Any, variants: Iterable[Any], shadows: Iterable[Any]) -> list[tuple[str, Any]]:
    """A step's models with their roles ("step", "variant", "shadow"), its own first."""
    return [("step", model), *(("variant", v) for v in variants), *(("shadow", s) for s in shadows)]


def _variant_refs(step: Step) -> list[ModelRef]:
    return [v.model for v in step.split.variants] if step.split is not None else []


def list_models(pipelines: Iterable[Pipeline]) -> list[dict[str, str]]:
    """``GET /models``: every model of every pipeline, with its role and step; a pipeline
    that failed to load lists its config's models as Error."""
    models = []
    for p in pipelines:
        if p.error:
            for step in p.config.steps:
                for role, ref in roles(step.model, _variant_refs(step), step.shadows):
                    version = ref.version or ""
                    models.append(_row(ref.name, ref.sha256 or "", "Error", version, role, step))
            continue
        for s in p.steps:
            for role, m in roles(s.model, s.variants[1:], s.shadows):
                models.append(_row(m.name, m.sha256, "Running", m.version, role, s.config))
    return models


def _row(name: str, sha: str, status: str, version: str, role: str, step: Step) -> dict:
    return {
        "name": name,
        "sha": sha,
        "status": status,
        "version": version,
        "role": role,
        "step": step.step_name,
    }


def model_views(pipelines: Iterable[Pipeline]) -> dict[str, Pipeline]:
    """Each loaded model as a one-step pipeline, so that v2 clients can address it alone
    (the first model of a name wins). A step's model and its variants answer as the step
    does (its postprocess applied); a shadow answers its raw outputs, as in
    ``shadow_data``. Each takes the model's own inputs: tensors, not an encoded image."""
    views: dict[str, Pipeline] = {}
    for p in pipelines:
        if p.error:
            continue
        for step in p.steps:
            for role, m in roles(step.model, step.variants[1:], step.shadows):
                if m.name not in views:
                    views[m.name] = _alone(p, step, m, role)
    return views


def _alone(p: Pipeline, step: StepRuntime, model: Any, role: str) -> Pipeline:
    update: dict[str, Any] = {"model": model.ref, "split": None, "shadows": []}
    if role == "shadow":
        update["postprocess"] = None
    config = step.config.model_copy(update=update)
    one = p.config.model_copy(update={"name": model.name, "steps": [config], "validations": []})
    inputs = [spec.name for spec in model.inputs]
    return Pipeline(one, [StepRuntime(config, model, inputs)])
