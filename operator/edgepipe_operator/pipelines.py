"""The Pipeline reconciler: thin kopf handlers over the pure builders.

- create/update/resume: validate and resolve the spec, write the ConfigMap, Deployment and
  Service (owned by the Pipeline, so deleting it garbage-collects them), or remove them
  when ``deployed: false``; record the version.
- Deployment and pod events: see readiness.py.
"""

from __future__ import annotations

import functools
from typing import Any

import kopf
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError as Urllib3Error

from edgepipe.config import ConfigError, PipelineConfig
from edgepipe.resources import GROUP, VERSION, PipelineSpec
from edgepipe.timestamps import now

from . import cache, history
from .builders import (
    build_configmap,
    build_deployment,
    build_service,
    condition,
    config_digest,
    configmap_name,
    engine_name,
    inference_url,
    merge_conditions,
    parse_spec,
    record_version,
    resolve_pipeline,
)
from .readiness import sync_from_deployment
from .registry import Login, SecretProblem
from .resolve import ModelUnreachable, make_resolver, pipeline_login
from .settings import OperatorSettings

# A model URL that does not answer is retried this many times (with back-off) before the
# Pipeline is put in Error; a spec edit starts over.
MODEL_RETRIES = 3


def api_error(exc: Exception, what: str) -> kopf.TemporaryError | kopf.PermanentError:
    """Conflicts, throttling, server and network errors are retried; the rest are final."""
    if isinstance(exc, ApiException) and exc.status in (400, 403, 422):
        return kopf.PermanentError(f"{what}: HTTP {exc.status}: {exc.reason}")
    return kopf.TemporaryError(f"{what}: {exc}", delay=5)


def _error_status(message: str, status: dict, generation: int | None) -> dict[str, Any]:
    t = now()
    return {
        "phase": "Error",
        "message": message,
        "observedGeneration": generation,
        "conditions": merge_conditions(
            status.get("conditions"),
            [
                condition("Ready", False, "InvalidSpec", message, t, generation),
                condition("Progressing", False, "InvalidSpec", message, t, generation),
            ],
        ),
    }


def _unreachable(
    why: str, body: kopf.Body, status: kopf.Status, patch: kopf.Patch, generation, retry: int
) -> None:
    """Pending and retried with back-off; Error after MODEL_RETRIES attempts."""
    if retry + 1 >= MODEL_RETRIES:
        message = f"{why} (gave up after {MODEL_RETRIES} attempts; edit the spec to retry)"
        patch.status.update(_error_status(message, dict(status), generation))
        kopf.warn(body, reason="ModelUnreachable", message=message)
        raise kopf.PermanentError(message) from None
    patch.status.update({"phase": "Pending", "message": why, "observedGeneration": generation})
    raise kopf.TemporaryError(why, delay=5 * 2**retry) from None


@kopf.on.create(GROUP, VERSION, "pipelines")
@kopf.on.update(GROUP, VERSION, "pipelines")
@kopf.on.resume(GROUP, VERSION, "pipelines")
def reconcile_pipeline(
    body: kopf.Body,
    spec: kopf.Spec,
    name: str,
    namespace: str,
    status: kopf.Status,
    meta: kopf.Meta,
    patch: kopf.Patch,
    memo: kopf.Memo,
    retry: int,
    applied_index: kopf.Index,
    revision_index: kopf.Index,
    pod_index: kopf.Index,
    **_: Any,
) -> None:
    generation = meta.get("generation")
    try:
        parsed = parse_spec(dict(spec))
        login = pipeline_login(memo.kube, parsed, namespace)
        if parsed.version:  # a rollback: a kept version, not the steps
            config = history.pinned_config(memo.kube, name, namespace, parsed.version)
        else:
            resolve = make_resolver(memo.settings, login, parsed.registry)
            config = resolve_pipeline(name, parsed, resolve)
    except SecretProblem as exc:
        # A Secret may yet be created: retried like a model that does not answer.
        message = f"spec.registry.secretRef: {exc.message}"
        return _unreachable(message, body, status, patch, generation, retry)
    except ConfigError as exc:
        patch.status.update(_error_status(exc.message, dict(status), generation))
        kopf.warn(body, reason="InvalidSpec", message=exc.message)
        raise kopf.PermanentError(exc.message) from None
    except ModelUnreachable as exc:
        return _unreachable(str(exc), body, status, patch, generation, retry)

    try:
        history.remember(
            memo.kube,
            body,
            config,
            namespace,
            parsed.revision_history_limit,
            cache.listed(revision_index, namespace, name),
            lambda manifest: current(memo, applied_index, manifest),
        )
    except (ApiException, Urllib3Error) as exc:
        raise api_error(exc, "keeping the version's config") from None
    version_fields = {
        "pinned": bool(parsed.version),
        "version": config.version,
        "versions": record_version(
            status.get("versions"), config.version, config_digest(config), now()
        ),
        "observedGeneration": generation,
        "message": None,
    }
    if parsed.deployed:
        pods = cache.listed(pod_index, namespace, name)
        deploy(
            body,
            config,
            parsed,
            login,
            namespace,
            status,
            memo,
            version_fields,
            applied_index,
            pods,
        )
    else:
        undeploy(body, name, namespace, status, patch, memo, version_fields)


def undeploy(
    body: kopf.Body,
    name: str,
    namespace: str,
    status: kopf.Status,
    patch: kopf.Patch,
    memo: kopf.Memo,
    version_fields: dict[str, Any],
) -> None:
    """``deployed: false``: remove the engine's objects, keep the Pipeline and its history."""
    for kind in ("Deployment", "Service", "ConfigMap"):
        try:
            memo.kube.delete(
                kind,
                engine_name(name) if kind != "ConfigMap" else configmap_name(name),
                namespace,
            )
        except (ApiException, Urllib3Error) as exc:
            raise api_error(exc, f"deleting {kind}") from None
    t = now()
    generation = version_fields["observedGeneration"]
    fields = {
        **version_fields,
        "phase": "Undeployed",
        "deployed": False,
        "url": None,
        "replicas": 0,
        "readyReplicas": 0,
        "conditions": merge_conditions(
            status.get("conditions"),
            [
                condition("Ready", False, "Undeployed", "spec.deployed is false", t, generation),
                condition("Progressing", False, "Undeployed", "nothing to deploy", t, generation),
            ],
        ),
    }
    patch.status.update(fields)
    if status.get("phase") not in (None, "Undeployed"):
        kopf.info(body, reason="Undeployed", message="engine Deployment and Service removed")


def deploy(
    body: kopf.Body,
    config: PipelineConfig,
    parsed: PipelineSpec,
    login: Login | None,
    namespace: str,
    status: kopf.Status,
    memo: kopf.Memo,
    version_fields: dict[str, Any],
    applied_index: kopf.Index | None = None,
    pods: list[dict[str, Any]] | None = None,
) -> None:
    """Apply the ConfigMap, Service and Deployment (those not already current), then copy
    the Deployment's readiness. The Deployment goes last: its digest marks the whole set
    applied, so an operator killed half-way finishes the set on resume."""
    name = config.name
    settings: OperatorSettings = memo.settings
    manifests = [
        build_configmap(config, namespace),
        build_service(name, namespace, config.version),
        build_deployment(
            config,
            parsed,
            namespace,
            image=parsed.image or settings.engine_image,
            pull_policy=settings.image_pull_policy,
            login=login,
        ),
    ]
    deployment = None  # as the apply answered it: no need to read it back
    for manifest in manifests:
        kopf.adopt(manifest, owner=body)
        if current(memo, applied_index, manifest):
            continue
        try:
            answer = memo.kube.apply(manifest)
        except (ApiException, Urllib3Error) as exc:
            raise api_error(exc, f"applying {manifest['kind']}") from None
        memo.applied.wrote(manifest)
        if manifest["kind"] == "Deployment":
            deployment = answer
    extra = {**version_fields, "deployed": True, "url": inference_url(name, namespace)}
    sync = functools.partial(sync_from_deployment, memo.kube, name, namespace, probe=memo.probe)
    try:
        written = sync(extra=extra, pods=pods, deployment=deployment, pipeline=dict(body))
        # Deployment events that came before that write were skipped (the status was not
        # this spec's yet): read the Deployment once more. Later events find it current.
        sync(pods=pods, pipeline=written)
    except (ApiException, Urllib3Error) as exc:
        raise api_error(exc, "writing the status") from None
    if status.get("version") != config.version:
        kopf.info(body, reason="Deploying", message=f"deploying version {config.version}")


def current(memo: kopf.Memo, index: kopf.Index | None, manifest: dict[str, Any]) -> bool:
    """Stamps the manifest with its digest; True when the cluster already has it."""
    cache.stamp(manifest)
    return index is not None and memo.applied.current(index, manifest)
