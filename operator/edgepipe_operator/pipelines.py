"""The Pipeline reconciler: thin kopf handlers over the pure builders.

- create/update/resume: validate and resolve the spec, write the ConfigMap, Deployment and
  Service (owned by the Pipeline, so deleting it garbage-collects them), or remove them
  when ``deployed: false``; record the version.
- Deployment and pod events: see readiness.py.
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass, replace
from typing import Any, NoReturn

import kopf

from edgepipe.config import ConfigError, PipelineConfig
from edgepipe.resources import GROUP, VERSION, Autoscaling, PipelineSpec
from edgepipe.secretrefs import check_own_namespace
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
from .hpa import HANDOVER_MANAGER, build_hpa, build_replicas_handover, handover_replicas
from .kube import ApiError, Unreachable
from .publish_records import drop_gone_publishes
from .readiness import Sync, sync_from_deployment
from .registry import Login, SecretProblem
from .resolve import ModelUnreachable, make_resolver, pipeline_login
from .settings import OperatorSettings

# A model URL that does not answer is retried this many times (with back-off) before the
# Pipeline is put in Error; a spec edit starts over.
MODEL_RETRIES = 3


def api_error(exc: Exception, what: str) -> kopf.TemporaryError | kopf.PermanentError:
    """Conflicts, throttling, server and network errors are retried; the rest are final."""
    if isinstance(exc, ApiError) and exc.status in (400, 403, 422):
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


@dataclass(frozen=True)
class PipelineEvent:
    """One Pipeline as kopf hands it to the reconciler, with what every handler shares."""

    body: kopf.Body
    name: str
    namespace: str
    status: kopf.Status
    patch: kopf.Patch
    memo: kopf.Memo
    generation: int | None
    retry: int
    applied_index: Any = None  # the informers' stores (engine_events.py): no API reads
    revision_index: Any = None
    pod_index: Any = None
    publish_index: kopf.Index | None = None  # publish_records.py's: Publishes by pipeline

    @classmethod
    def from_kopf(cls, kwargs: dict[str, Any]) -> PipelineEvent:
        fields = {f.name for f in dataclasses.fields(cls)} - {"generation"}
        engine = kwargs["memo"].get("engine")
        if engine is not None:
            kwargs = {**engine.indices(), **kwargs}
        return cls(
            generation=kwargs["meta"].get("generation"),
            **{k: v for k, v in kwargs.items() if k in fields},
        )

    def current(self, manifest: dict[str, Any]) -> bool:
        """Stamps the manifest with its digest; True when the cluster already has it."""
        cache.stamp(manifest)
        return self.applied_index is not None and self.memo.applied.current(
            self.applied_index, manifest
        )


@dataclass(frozen=True)
class Rollout:
    """A Pipeline's spec resolved: the config to run, the spec, its registry login, and
    the status fields that record the version."""

    event: PipelineEvent
    config: PipelineConfig
    spec: PipelineSpec
    login: Login | None
    version_fields: dict[str, Any]


def _unreachable(why: str, event: PipelineEvent) -> NoReturn:
    """Pending and retried with back-off; Error after MODEL_RETRIES attempts."""
    generation, retry = event.generation, event.retry
    if retry + 1 >= MODEL_RETRIES:
        message = f"{why} (gave up after {MODEL_RETRIES} attempts; edit the spec to retry)"
        event.patch.status.update(_error_status(message, dict(event.status), generation))
        kopf.warn(event.body, reason="ModelUnreachable", message=message)
        raise kopf.PermanentError(message) from None
    event.patch.status.update(
        {"phase": "Pending", "message": why, "observedGeneration": generation}
    )
    raise kopf.TemporaryError(why, delay=event.memo.settings.retry_seconds * 2**retry) from None


@kopf.on.create(GROUP, VERSION, "pipelines")
@kopf.on.update(GROUP, VERSION, "pipelines")
@kopf.on.resume(GROUP, VERSION, "pipelines")
def reconcile_pipeline(**kwargs: Any) -> None:
    """Resolve the spec, keep its version, then deploy or undeploy it."""
    event = PipelineEvent.from_kopf(kwargs)
    # Publishes deleted while no operator watched leave the list (whatever the spec says).
    with contextlib.suppress(ApiError, Unreachable):
        drop_gone_publishes(
            event.memo.kube, event.name, event.namespace, event.status, event.publish_index
        )
    config, parsed, login = _resolve(event, kwargs["spec"])
    _remember(event, config, parsed)
    version_fields = {
        "pinned": bool(parsed.version),
        "version": config.version,
        "versions": record_version(
            event.status.get("versions"), config.version, config_digest(config), now()
        ),
        "observedGeneration": event.generation,
        "message": None,
    }
    rollout = Rollout(event, config, parsed, login, version_fields)
    if parsed.deployed:
        deploy(rollout)
    else:
        undeploy(rollout)


def _resolve(
    event: PipelineEvent, spec: kopf.Spec
) -> tuple[PipelineConfig, PipelineSpec, Login | None]:
    """The spec validated and its models resolved (or a kept version's config); an invalid
    spec puts the Pipeline in Error, a model or Secret not there yet in Pending."""
    kube = event.memo.kube
    try:
        parsed = parse_spec(dict(spec))
        check_own_namespace(parsed, event.namespace, "Pipeline")
        login = pipeline_login(kube, parsed, event.namespace)
        if parsed.version:  # a rollback: a kept version, not the steps
            config = history.pinned_config(kube, event.name, event.namespace, parsed.version)
        else:
            resolve = make_resolver(event.memo.settings, login, parsed.registry)
            config = resolve_pipeline(event.name, parsed, resolve, resolve.outputs_of)
    except SecretProblem as exc:
        # A Secret may yet be created: retried like a model that does not answer.
        _unreachable(f"spec.registry.secretRef: {exc.message}", event)
    except ConfigError as exc:
        event.patch.status.update(_error_status(exc.message, dict(event.status), event.generation))
        kopf.warn(event.body, reason="InvalidSpec", message=exc.message)
        raise kopf.PermanentError(exc.message) from None
    except ModelUnreachable as exc:
        _unreachable(str(exc), event)
    return config, parsed, login


def _remember(event: PipelineEvent, config: PipelineConfig, parsed: PipelineSpec) -> None:
    """Keep this version's config among the Pipeline's kept versions."""
    try:
        history.remember(
            event.memo.kube,
            event.body,
            config,
            event.namespace,
            parsed.revision_history_limit,
            cache.listed(event.revision_index, event.namespace, event.name),
            event.current,
        )
    except (ApiError, Unreachable) as exc:
        raise api_error(exc, "keeping the version's config") from None


def undeploy(rollout: Rollout) -> None:
    """``deployed: false``: remove the engine's objects, keep the Pipeline and its history."""
    event = rollout.event
    name, status = event.name, event.status
    _drop_hpa(event)
    for kind in ("Deployment", "Service", "ConfigMap"):
        try:
            event.memo.kube.delete(
                kind,
                engine_name(name) if kind != "ConfigMap" else configmap_name(name),
                event.namespace,
            )
        except (ApiError, Unreachable) as exc:
            raise api_error(exc, f"deleting {kind}") from None
    t = now()
    generation = rollout.version_fields["observedGeneration"]
    fields = {
        **rollout.version_fields,
        "phase": "Undeployed",
        "deployed": False,
        "url": None,
        "replicas": 0,
        "readyReplicas": 0,
        "autoscaling": None,
        "conditions": merge_conditions(
            status.get("conditions"),
            [
                condition("Ready", False, "Undeployed", "spec.deployed is false", t, generation),
                condition("Progressing", False, "Undeployed", "nothing to deploy", t, generation),
            ],
        ),
    }
    event.patch.status.update(fields)
    if status.get("phase") not in (None, "Undeployed"):
        kopf.event(
            event.body,
            type="Normal",
            reason="Undeployed",
            message="engine Deployment and Service removed",
        )


def deploy(rollout: Rollout) -> None:
    """Apply the ConfigMap, Service and Deployment (those not already current), then copy
    the Deployment's readiness. The Deployment goes last: its digest marks the whole set
    applied, so an operator killed half-way finishes the set on resume."""
    event, config = rollout.event, rollout.config
    name, namespace, memo = config.name, event.namespace, event.memo
    pods = cache.listed(event.pod_index, namespace, name)
    deployment = _apply(rollout)
    first = Sync(
        memo.kube,
        name,
        namespace,
        probe=memo.probe,
        extra={**rollout.version_fields, "deployed": True, "url": inference_url(name, namespace)},
        pipeline=dict(event.body),
        deployment=deployment,
        pods=pods,
    )
    try:
        written = sync_from_deployment(first)
        memo.pipelines.wrote(written)  # the Deployment's events read it before the watch does
        # Deployment events that came before that write were skipped (the status was not
        # this spec's yet): read the Deployment once more. Later events find it current.
        again = replace(first, extra=None, pipeline=written, deployment=None)
        memo.pipelines.wrote(sync_from_deployment(again))
    except (ApiError, Unreachable) as exc:
        raise api_error(exc, "writing the status") from None
    if event.status.get("version") != config.version:
        kopf.event(
            event.body,
            type="Normal",
            reason="Deploying",
            message=f"deploying version {config.version}",
        )


def _apply(rollout: Rollout) -> dict[str, Any] | None:
    """Apply the engine's objects not already current; the Deployment as the apply
    answered it (None when it was current): no need to read it back."""
    event, config, parsed = rollout.event, rollout.config, rollout.spec
    settings: OperatorSettings = event.memo.settings
    manifests = [
        build_configmap(config, event.namespace),
        build_service(config.name, event.namespace, config.version),
        build_deployment(
            config,
            parsed,
            event.namespace,
            image=parsed.image or settings.engine_image,
            pull_policy=settings.image_pull_policy,
            login=rollout.login,
        ),
    ]
    auto = parsed.deployment.autoscaling
    if auto:  # after the Deployment it scales
        manifests.append(build_hpa(config.name, event.namespace, config.version, auto))
    deployment = None
    for manifest in manifests:
        kopf.adopt(manifest, owner=event.body)
        if event.current(manifest):
            continue
        try:
            if auto and manifest["kind"] == "Deployment":
                answer = _apply_autoscaled(event, manifest, auto)
            else:
                answer = event.memo.kube.apply(manifest)
        except (ApiError, Unreachable) as exc:
            raise api_error(exc, f"applying {manifest['kind']}") from None
        event.memo.applied.wrote(manifest)
        if manifest["kind"] == "Deployment":
            deployment = answer
    if not auto:
        _drop_hpa(event)
    return deployment


def _apply_autoscaled(event: PipelineEvent, manifest: dict, auto: Autoscaling) -> dict:
    """Apply a Deployment without replicas, the hand-over manager holding them first while
    the operator still owns them (or, for a new one, raising it to minReplicas after)."""
    kube, name = event.memo.kube, event.name
    live = kube.read_deployment(engine_name(name), event.namespace)
    hold = handover_replicas(live, auto)
    handover = build_replicas_handover(name, event.namespace, hold or 1)
    if live is not None and hold is not None:
        kube.apply(handover, manager=HANDOVER_MANAGER)
    answer = kube.apply(manifest)
    if live is None and hold is not None:
        answer = kube.apply(handover, manager=HANDOVER_MANAGER)
    return answer


def _drop_hpa(event: PipelineEvent) -> None:
    """No autoscaling (any more): its HPA goes, and the Deployment's replicas are the
    spec's again (the apply above took them back)."""
    key = ("horizontalpodautoscalers", event.namespace, engine_name(event.name))
    known = event.applied_index is None or key in event.applied_index
    if not known and not event.status.get("autoscaling"):
        return  # never had one: no call
    try:
        event.memo.kube.delete("HorizontalPodAutoscaler", engine_name(event.name), event.namespace)
    except (ApiError, Unreachable) as exc:
        raise api_error(exc, "deleting the HorizontalPodAutoscaler") from None
