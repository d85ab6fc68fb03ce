"""The Publish reconciler: a pipeline version becomes OCI artifacts and a Helm chart.

Status goes PendingPublish -> Published, or Failed with a reason. A registry that refuses
the credentials fails at once (retrying cannot help); a registry that is down is retried
with back-off, and the Publish completes once it is back. The Pipeline's status lists
its publishes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import kopf
from pydantic import ValidationError

from edgepipe import fleet, oci, rollout
from edgepipe.config import ConfigError, PipelineConfig, config_error
from edgepipe.publish import PublishError
from edgepipe.resources import GROUP, VERSION, PipelineSpec, PublishSpec
from edgepipe.secretrefs import check_own_namespace
from edgepipe.timestamps import now

from . import history, rollouts
from .builders import condition, parse_spec, resolve_pipeline
from .kube import ApiError, Kube, Unreachable
from .publish_records import record_on_pipeline
from .registry import SecretProblem, publish_target, signer_from_secret
from .resolve import ModelUnreachable, make_resolver, pipeline_login

if TYPE_CHECKING:
    from edgepipe.publish import PublishResult

# Waiting for a Pipeline that does not exist yet (a GitOps apply of both at once).
PIPELINE_RETRIES = 6
PIPELINE_RETRY_DELAY = 5


class PublishFailed(Exception):
    """A publish that cannot succeed as specified: (reason, message)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class PublishWaiting(Exception):
    """A publish that may yet succeed: the status says why it waits (reason, message) at
    once, and it is retried after ``delay`` seconds."""

    def __init__(self, reason: str, message: str, delay: float) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.delay = delay


# Why a publish failed, for each error no retry can fix: the first type that matches.
# (PublishFailed, a SecretProblem and history.VersionNotKept carry their own reason. A
# registry that is down, or a model that does not answer, is retried instead.)
REASONS: tuple[tuple[type[Exception], str], ...] = (
    (ValidationError, "InvalidSpec"),  # the Publish's own spec
    (ConfigError, "InvalidPipeline"),  # the Pipeline's spec, or a model it names
    (oci.CredentialsRequired, "CredentialsRequired"),
    (oci.AuthError, "Unauthorized"),
    (PublishError, "PublishError"),
    (oci.OciError, "PublishError"),  # no such artifact, a digest mismatch, ...
)
FINAL = (SecretProblem, *(t for t, _ in REASONS))
RETRIED = (oci.RegistryUnavailable, ModelUnreachable)


@contextlib.contextmanager
def failing(about: str = "", unauthorized: str = "") -> Iterator[None]:
    """Errors no retry can fix become PublishFailed, with their reason (REASONS) and
    ``about`` before the message (``unauthorized`` instead, for refused credentials)."""
    try:
        yield
    except RETRIED:
        raise
    except FINAL as exc:
        reason = getattr(exc, "reason", None) or next(r for t, r in REASONS if isinstance(exc, t))
        if isinstance(exc, ValidationError):  # every bad field, in the user's words
            message = config_error(exc, prefix="spec").message
        else:
            message = getattr(exc, "detail", None) or str(exc)
        prefix = unauthorized if reason == "Unauthorized" and unauthorized else about
        raise PublishFailed(reason, prefix + message) from None


def _failed(reason: str, message: str, generation: int | None) -> dict[str, Any]:
    t = now()
    return {
        "phase": "Failed",
        "reason": reason,
        "message": message,
        "updatedAt": t,
        "observedGeneration": generation,
        "conditions": [condition("Ready", False, reason, message, t, generation)],
    }


@kopf.on.create(GROUP, VERSION, "publishes")
@kopf.on.update(GROUP, VERSION, "publishes")
@kopf.on.resume(GROUP, VERSION, "publishes")
def reconcile_publish(
    body: kopf.Body,
    spec: kopf.Spec,
    name: str,
    namespace: str,
    status: kopf.Status,
    meta: kopf.Meta,
    patch: kopf.Patch,
    memo: kopf.Memo,
    retry: int,
    logger,
    **_: Any,
) -> None:
    generation = meta.get("generation")
    if status.get("phase") == "Published" and status.get("observedGeneration") == generation:
        return  # resumed after a restart: this generation is already out
    kube: Kube = memo.kube
    created = status.get("createdAt") or now()
    try:
        kube.patch_status(
            "publishes",
            name,
            namespace,
            {"phase": "PendingPublish", "createdAt": created, "observedGeneration": generation},
        )
        prior = status.get("rollout")
        result, rollout_status, events = _publish(
            kube, memo, spec, namespace, retry, created, logger, prior,
            lambda rollout: kube.patch_status("publishes", name, namespace, {"rollout": rollout}),
        )  # fmt: skip
    except PublishFailed as exc:
        patch.status.update(_failed(exc.reason, exc.message, generation))
        kopf.warn(body, reason=exc.reason, message=exc.message)
        _record(kube, spec, namespace, name, None, "Failed", None)
        raise kopf.PermanentError(exc.message) from None
    except PublishWaiting as exc:
        patch.status.update(
            {"phase": "PendingPublish", "reason": exc.reason, "message": exc.message}
        )
        raise kopf.TemporaryError(exc.message, delay=exc.delay) from None
    except RETRIED as exc:
        delay = min(60, memo.settings.retry_seconds * 2**retry)
        patch.status.update(
            {
                "phase": "PendingPublish",
                "reason": "RegistryUnavailable",
                "message": f"{exc}; retrying in {delay:g}s",
            }
        )
        raise kopf.TemporaryError(str(exc), delay=delay) from None
    except (ApiError, Unreachable) as exc:
        raise kopf.TemporaryError(f"Kubernetes API: {exc}", delay=5) from None

    t = now()
    patch.status.update(
        {
            **result.status_fields(),
            "rollout": rollout_status,
            "phase": "Published",
            "reason": None,
            "message": None,
            "observedGeneration": generation,
            "conditions": [
                condition(
                    "Ready",
                    True,
                    "Published",
                    f"chart {result.helm_chart_reference}",
                    t,
                    generation,
                )
            ],
        }
    )
    _record(
        kube,
        spec,
        namespace,
        name,
        result.pipeline_version,
        "Published",
        result.helm_chart_reference,
    )
    kopf.event(
        body,
        type="Normal",
        reason="Published",
        message=f"{result.pipeline_url}; chart {result.helm_chart_version}",
    )
    for event in events:
        kopf.event(body, type=event.type, reason=event.reason, message=event.message)


def _record(
    kube: Kube,
    spec: kopf.Spec,
    namespace: str,
    name: str,
    version: str | None,
    phase: str,
    chart: str | None,
) -> None:
    pipeline = spec.get("pipeline")
    if not pipeline:
        return
    entry = {"name": name, "version": version, "phase": phase, "helmChartReference": chart}
    # The Publish's own status is the record; the Pipeline's list is a convenience.
    with contextlib.suppress(ApiError, Unreachable):
        record_on_pipeline(kube, pipeline, namespace, entry)


def _publish(
    kube: Kube,
    memo: kopf.Memo,
    spec: kopf.Spec,
    namespace: str,
    retry: int,
    created: str,
    logger,
    prior: dict[str, Any] | None,
    save: Callable[[dict[str, Any]], Any],
) -> tuple[PublishResult, dict[str, Any] | None, list[rollouts.Event]]:
    """Publish the spec's version; with edges, its rollout begun (wave 1's pointers moved:
    the edge poll moves the next waves as each is done): status.rollout, and its Events."""
    # Here, not at the top: the publish stack (jinja2, the oras SDK, requests, cryptography:
    # about 28 MB) loads with the first Publish, not with every operator.
    from edgepipe.publish import publish

    with failing():
        parsed = PublishSpec.model_validate(dict(spec))
        check_own_namespace(parsed, namespace, "Publish")
    config, pspec = _pipeline_config(kube, memo, parsed, namespace, retry)
    with failing():
        target = publish_target(kube, parsed.registry, namespace)
        signer = None
        if parsed.signing is not None:
            name = parsed.signing.secret_ref.name
            signer = signer_from_secret(kube.read_secret(name, namespace), name)
    secret = parsed.registry.secret_ref.name if parsed.registry.secret_ref else "(none)"
    with failing(
        unauthorized=f"registry {target.registry} refused the credentials of secret {secret}: "
    ):
        result = publish(
            config,
            target,
            engine_image=pspec.image or memo.settings.engine_image,
            deployment=parsed.engine_config or pspec.deployment,
            chart_name=parsed.chart_name,
            created_at=created,
            log=lambda m: logger.info(m),
            signer=signer,
            edges=parsed.edges,
            move_edges=[],  # the rollout moves their pointers, wave by wave
        )
        if not parsed.edges:
            return result, None, []
        return (result, *_begin_rollout(target, parsed, result, prior, save, logger))


def _begin_rollout(
    target: oci.Target, parsed: PublishSpec, result: PublishResult, prior, save, logger
) -> tuple[dict[str, Any], list[rollouts.Event]]:
    """The rollout of the published manifest to the Publish's edges: every edge's pointer
    read and saved in status.rollout as its rollback digest first (an operator killed
    after moving a pointer, before writing, would find it moved and never know where it
    was), then the first wave's pointers moved (so without waves an edge updates as soon
    as Published)."""
    clients = fleet.Clients(target.client)  # one per thread: pointers move concurrently
    ref = oci.Reference.parse(result.pipeline_url)
    digest = result.pipeline_digest
    t = rollouts.utcnow()
    state, events = rollouts.begin(
        parsed.rollout, parsed.edges, result.pipeline_version, digest, prior, t
    )
    rollouts.note_pointers(clients, ref.repository, state, parsed.edges)
    saved = state.to_status()
    save(rollouts.merge_patch(prior, saved))
    acted = rollouts.perform(
        clients, ref.repository, rollout.advance(state, {}, t, parsed.rollout), t
    )
    for edge in acted.moved:
        logger.info(
            f"edge {edge}: pointer {fleet.pointer_url(result.pipeline_url, edge)} -> {digest[:19]}"
        )
    return rollouts.merge_patch(saved, acted.state.to_status()), [*events, *acted.events]


def _pipeline_config(
    kube: Kube, memo: kopf.Memo, parsed: PublishSpec, namespace: str, retry: int
) -> tuple[PipelineConfig, PipelineSpec]:
    """The config of the version to publish (the Pipeline's current one, or a kept one),
    and the Pipeline's spec; retried a while when the Pipeline does not exist yet."""
    pipeline = kube.get_custom("pipelines", parsed.pipeline, namespace)
    if pipeline is None:
        missing = f"pipeline {parsed.pipeline!r} not found in namespace {namespace}"
        if retry + 1 < PIPELINE_RETRIES:  # said at once, while it may yet be created
            raise PublishWaiting(
                "PipelineNotFound",
                f"{missing}; retrying in {PIPELINE_RETRY_DELAY}s "
                f"(attempt {retry + 1} of {PIPELINE_RETRIES})",
                PIPELINE_RETRY_DELAY,
            )
        raise PublishFailed("PipelineNotFound", missing)
    with failing(about=f"pipeline {parsed.pipeline!r}: "):
        pspec = parse_spec(pipeline.get("spec") or {})
        login = pipeline_login(kube, pspec, namespace)
        current = (pipeline.get("status") or {}).get("version")
        if parsed.version and parsed.version != current:  # a past version: its kept config
            config = history.pinned_config(kube, parsed.pipeline, namespace, parsed.version)
        else:
            resolve = make_resolver(memo.settings, login, pspec.registry)
            config = resolve_pipeline(parsed.pipeline, pspec, resolve, resolve.outputs_of)
    if parsed.version and parsed.version != config.version:
        kept = ", ".join(history.kept_versions(kube, parsed.pipeline, namespace))
        raise PublishFailed(
            "VersionNotAvailable",
            f"pipeline {parsed.pipeline!r} is at version {config.version}; version "
            f"{parsed.version} is not among its kept versions ({kept})",
        )
    return config, pspec
