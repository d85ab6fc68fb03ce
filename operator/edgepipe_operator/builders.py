"""Pure functions from a Pipeline to the manifests and status the operator writes.

Nothing here talks to the cluster: handlers call these and send the results, and unit
tests call them directly.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from edgepipe.config import ModelRef, PipelineConfig
from edgepipe.enginepod import (
    CACHE_DIR,
    ENGINE_PORT,
    TERMINATION_GRACE_SECONDS,
    container_ports,
    container_security_context,
    cpu_quantity,
    engine_env,
    probes,
    rollout,
    service_ports,
    token_from_secret,
)
from edgepipe.manifests import parse_pipeline_spec, pipeline_config
from edgepipe.outputs import OutputsOf, check_validations
from edgepipe.resources import PipelineSpec

from .registry import Login, pod_registry

CONFIG_KEY = "pipeline.json"
CONFIG_DIR = "/etc/edgepipe"
MANAGED_BY = "edgepipe-operator"
PIPELINE_LABEL = "edgepipe.io/pipeline"
DIGEST_ANNOTATION = "edgepipe.io/config-digest"
MAX_HISTORY = 20

ModelResolver = Callable[[str, ModelRef], ModelRef]


def engine_name(pipeline: str) -> str:
    return f"{pipeline}-engine"


def configmap_name(pipeline: str) -> str:
    return f"{pipeline}-pipeline"


def inference_url(pipeline: str, namespace: str) -> str:
    return f"http://{engine_name(pipeline)}.{namespace}.svc:{ENGINE_PORT}/pipelines/{pipeline}"


def selector_labels(pipeline: str) -> dict[str, str]:
    """The labels that select a pipeline's engine pods (never changes for a Deployment)."""
    return {
        "app.kubernetes.io/name": "edgepipe-engine",
        "app.kubernetes.io/instance": pipeline,
    }


def labels(pipeline: str, version: str | None) -> dict[str, str]:
    out = {
        **selector_labels(pipeline),
        "app.kubernetes.io/component": "engine",
        "app.kubernetes.io/part-of": "edgepipe",
        "app.kubernetes.io/managed-by": MANAGED_BY,
        PIPELINE_LABEL: pipeline,
    }
    if version:
        out["app.kubernetes.io/version"] = version
    return out


# -- spec -> pipeline config ------------------------------------------------------------


def parse_spec(spec: dict[str, Any]) -> PipelineSpec:
    """Validate a Pipeline's spec, or raise ConfigError naming every bad field (``spec.…``)."""
    return parse_pipeline_spec(spec)


def resolve_pipeline(
    name: str,
    spec: PipelineSpec,
    resolve_model: ModelResolver | None = None,
    outputs_of: OutputsOf | None = None,
) -> PipelineConfig:
    """The pipeline config a Pipeline stands for, with its version computed.

    ``resolve_model(field, ref)`` may fill in a model's sha256 (or raise ConfigError when a
    reference cannot be reached); ``field`` is the ref's path, e.g. ``spec.steps[0].model``.
    Validations are checked against the outputs known here: a postprocess's, and those
    ``outputs_of`` knows once the models are resolved (see ``edgepipe.outputs``).
    """
    config = pipeline_config(name, spec)
    if resolve_model is not None:
        config = config.map_models(lambda where, ref: resolve_model(f"spec.{where}", ref))
    if outputs_of is not None:
        check_validations(config, outputs_of, prefix="spec.")
    return config.with_version()


def config_digest(config: PipelineConfig) -> str:
    return hashlib.sha256(config.to_json()).hexdigest()


# -- manifests --------------------------------------------------------------------------


def build_configmap(config: PipelineConfig, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": configmap_name(config.name),
            "namespace": namespace,
            "labels": labels(config.name, config.version),
        },
        "data": {CONFIG_KEY: config.to_json().decode()},
    }


def engine_token(spec: PipelineSpec) -> tuple[list[dict], list[dict], list[dict]]:
    """(env, volumes, mounts) for ``spec.auth.tokenSecretRef``: the engine reads its API
    tokens from the Secret mounted as a file; nothing without a reference."""
    ref = spec.auth.token_secret_ref if spec.auth else None
    if ref is None:
        return [], [], []
    env, volumes, mounts = token_from_secret(ref.name, ref.key)
    if not spec.auth.metrics_auth:
        env.append({"name": "EDGEPIPE_ENGINE_METRICS_AUTH", "value": "false"})
    return env, volumes, mounts


def build_deployment(
    config: PipelineConfig,
    spec: PipelineSpec,
    namespace: str,
    *,
    image: str,
    pull_policy: str = "IfNotPresent",
    login: Login | None = None,
) -> dict[str, Any]:
    """The engine Deployment: the config mounted read-only, probes on the health endpoints,
    the model registry's login by reference, and a rollout that never drops below the
    wanted number of ready engines."""
    name = config.name
    deploy = spec.deployment
    resources: dict[str, dict[str, str]] = {
        "requests": {"cpu": cpu_quantity(deploy.cpus), "memory": deploy.memory},
        "limits": {"cpu": cpu_quantity(deploy.cpus), "memory": deploy.memory},
    }
    if deploy.gpus:
        resources["limits"]["nvidia.com/gpu"] = str(deploy.gpus)
    login_env, login_volumes, login_mounts = pod_registry(spec.registry, login)
    token_env, token_volumes, token_mounts = engine_token(spec)
    container = {
        "name": "engine",
        "image": image,
        "imagePullPolicy": pull_policy,
        "command": ["edgepipe-engine"],
        "args": ["--config", f"{CONFIG_DIR}/{CONFIG_KEY}"],
        "env": [*engine_env(deploy.cpus), *login_env, *token_env],
        "ports": container_ports(),
        "resources": resources,
        **probes(),
        "volumeMounts": [
            {"name": "pipeline-config", "mountPath": CONFIG_DIR, "readOnly": True},
            {"name": "model-cache", "mountPath": CACHE_DIR},
            *login_mounts,
            *token_mounts,
        ],
        "securityContext": container_security_context(),
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": engine_name(name),
            "namespace": namespace,
            "labels": labels(name, config.version),
        },
        "spec": {
            # With an autoscaler the HPA owns the replicas: leaving them out of the apply
            # keeps the operator from fighting it (see hpa.py for the hand-over).
            **({} if deploy.autoscaling else {"replicas": deploy.replicas}),
            "selector": {"matchLabels": selector_labels(name)},
            "strategy": rollout(),
            "template": {
                "metadata": {
                    "labels": labels(name, config.version),
                    # A new config digest rolls the pods, since a ConfigMap edit alone won't.
                    "annotations": {DIGEST_ANNOTATION: config_digest(config)},
                },
                "spec": {
                    "containers": [container],
                    "terminationGracePeriodSeconds": TERMINATION_GRACE_SECONDS,
                    "volumes": [
                        {"name": "pipeline-config", "configMap": {"name": configmap_name(name)}},
                        {"name": "model-cache", "emptyDir": {}},
                        *login_volumes,
                        *token_volumes,
                    ],
                },
            },
        },
    }


def build_service(pipeline: str, namespace: str, version: str | None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": engine_name(pipeline),
            "namespace": namespace,
            "labels": labels(pipeline, version),
        },
        "spec": {
            "selector": selector_labels(pipeline),
            "ports": service_ports(),
        },
    }


# -- status -----------------------------------------------------------------------------


def condition(
    type_: str, status: bool | str, reason: str, message: str, now: str, generation: int | None
) -> dict[str, Any]:
    value = status if isinstance(status, str) else ("True" if status else "False")
    cond = {
        "type": type_,
        "status": value,
        "reason": reason,
        "message": message,
        "lastTransitionTime": now,
    }
    if generation is not None:
        cond["observedGeneration"] = generation
    return cond


def merge_conditions(old: list[dict] | None, new: list[dict]) -> list[dict]:
    """New conditions replace old ones of the same type, keeping the transition time when
    the status did not change."""
    by_type = {c["type"]: c for c in old or []}
    for cond in new:
        prev = by_type.get(cond["type"])
        if prev and prev.get("status") == cond["status"]:
            cond = {
                **cond,
                "lastTransitionTime": prev.get("lastTransitionTime", cond["lastTransitionTime"]),
            }
        by_type[cond["type"]] = cond
    return list(by_type.values())


# -- kept versions (ControllerRevisions) ------------------------------------------------

VERSION_LABEL = "edgepipe.io/version"


def revision_name(pipeline: str, version: str) -> str:
    return f"{pipeline}-{version}"


def build_revision(config: PipelineConfig, namespace: str, revision: int) -> dict[str, Any]:
    """A ControllerRevision holding one version's whole config."""
    assert config.version
    return {
        "apiVersion": "apps/v1",
        "kind": "ControllerRevision",
        "metadata": {
            "name": revision_name(config.name, config.version),
            "namespace": namespace,
            "labels": {**selector_labels(config.name), VERSION_LABEL: config.version},
        },
        "data": config.to_dict(),
        "revision": revision,
    }


def _by_revision(revisions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(revisions, key=lambda r: r.get("revision", 0))


def next_revision(revisions: list[dict[str, Any]], version: str) -> int:
    """This version's revision number: its own when it is already the newest, else one
    more than the newest (a version deployed again becomes the newest, as in Deployments)."""
    ordered = _by_revision(revisions)
    if not ordered:
        return 1
    newest = ordered[-1]
    if (newest["metadata"].get("labels") or {}).get(VERSION_LABEL) == version:
        return newest.get("revision", 1)
    return newest.get("revision", 0) + 1


def revisions_to_prune(revisions: list[dict[str, Any]], keep: int) -> list[str]:
    """Names of the oldest revisions beyond the newest ``keep``."""
    ordered = _by_revision(revisions)
    return [r["metadata"]["name"] for r in ordered[: max(0, len(ordered) - keep)]]


def revision_versions(revisions: list[dict[str, Any]]) -> list[str]:
    """The kept versions, oldest first."""
    return [
        (r["metadata"].get("labels") or {}).get(VERSION_LABEL, "?") for r in _by_revision(revisions)
    ]


def record_version(history: list[dict] | None, version: str, digest: str, now: str) -> list[dict]:
    """The version history with this version in it (first-seen time kept), newest last."""
    history = list(history or [])
    if not any(h.get("version") == version for h in history):
        history.append({"version": version, "createdAt": now, "specDigest": digest})
    return history[-MAX_HISTORY:]


def deployment_phase(
    deployment: dict[str, Any] | None, autoscaled: bool = False
) -> tuple[str, dict[str, Any]]:
    """(phase, status fields) of a deployed pipeline, read from its Deployment. While an
    autoscaler adds replicas to a finished rollout, serving ones keep it Running."""
    if not deployment:
        return "Deploying", {"replicas": 0, "readyReplicas": 0}
    spec = deployment.get("spec") or {}
    st = deployment.get("status") or {}
    meta = deployment.get("metadata") or {}
    want = spec.get("replicas", 1)
    ready = st.get("readyReplicas", 0) or 0
    available = st.get("availableReplicas", 0) or 0
    updated = st.get("updatedReplicas", 0) or 0
    current = st.get("observedGeneration", 0) >= meta.get("generation", 0)
    fields = {"replicas": want, "readyReplicas": ready}
    if current and available >= want and updated >= want and st.get("replicas", 0) == want:
        return "Running", fields
    if autoscaled and current and available >= 1 and updated >= st.get("replicas", 0):
        return "Running", fields  # a scale, not a rollout: every pod has the template
    return "Deploying", fields


def deployment_conditions(
    deployment: dict[str, Any] | None,
    phase: str,
    now: str,
    generation: int | None,
    problem: str | None = None,
) -> list[dict[str, Any]]:
    """Ready and Progressing, with the Deployment's own reason and message when it has one,
    and what keeps the engine from being ready (``problem``) when something does."""
    progressing = next(
        (
            c
            for c in ((deployment or {}).get("status") or {}).get("conditions") or []
            if c.get("type") == "Progressing"
        ),
        None,
    )
    running = phase == "Running"
    if running:
        reason, message = "EngineAvailable", "all engine replicas are available"
    elif problem:
        reason, message = "EngineNotReady", problem
    else:
        reason, message = "EngineNotAvailable", "waiting for engine replicas"
    ready = condition("Ready", running, reason, message, now, generation)
    if progressing:
        prog = condition(
            "Progressing",
            progressing.get("status", "Unknown"),
            progressing.get("reason", "Progressing"),
            progressing.get("message", ""),
            now,
            generation,
        )
    else:
        prog = condition(
            "Progressing",
            not running,
            "Deploying" if not running else "Deployed",
            "engine Deployment created" if not running else "rollout complete",
            now,
            generation,
        )
    return [ready, prog]
