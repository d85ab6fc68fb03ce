"""The Pipeline reconciler: thin kopf handlers over the pure builders.

- create/update/resume: validate and resolve the spec, write the ConfigMap, Deployment and
  Service (owned by the Pipeline, so deleting it garbage-collects them), or remove them
  when ``deployed: false``; record the version.
- Deployment events: copy the engine's readiness into the Pipeline's phase and conditions.
  (No kopf timer: timers make kopf put a finalizer on every Pipeline, and then a Pipeline
  could not be deleted while the operator is down. A restarted operator re-reads every
  Deployment on resume instead.)
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import kopf
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError as Urllib3Error

from edgepipe.config import ConfigError, ModelRef, PipelineConfig
from edgepipe.enginepod import ENGINE_PORT, now
from edgepipe.resources import GROUP, VERSION, ModelRegistry, PipelineSpec

from . import builders as b
from . import health, history
from .kube import Kube
from .registry import Login, SecretProblem, login_from_secret
from .settings import OperatorSettings

# A model URL that does not answer is retried this many times (with back-off) before the
# Pipeline is put in Error; a spec edit starts over.
MODEL_RETRIES = 3


class ModelUnreachable(Exception):
    """A model reference that did not answer; maybe transient."""


def api_error(exc: Exception, what: str) -> kopf.TemporaryError | kopf.PermanentError:
    """Conflicts, throttling, server and network errors are retried; the rest are final."""
    if isinstance(exc, ApiException) and exc.status in (400, 403, 422):
        return kopf.PermanentError(f"{what}: HTTP {exc.status}: {exc.reason}")
    return kopf.TemporaryError(f"{what}: {exc}", delay=5)


def make_resolver(
    settings: OperatorSettings, login: Login | None = None, registry: ModelRegistry | None = None
):
    """Checks each model reference the engine will have to fetch.

    ``path`` models live in the engine's image or a volume and cannot be checked from here.
    ``http(s)`` URLs must answer a HEAD request. ``oci://`` references are resolved to the
    model file's sha256 through the registry, with the Pipeline's registry login.
    """
    credentials = login.credentials if login else None
    plain_http = True if registry is not None and registry.plain_http else None

    def resolve(field: str, ref: ModelRef) -> ModelRef:
        if ref.url is None:
            return ref
        if ref.url.startswith(("http://", "https://")):
            req = urllib.request.Request(ref.url, method="HEAD")
            try:
                with urllib.request.urlopen(req, timeout=settings.model_check_timeout):
                    return ref
            except urllib.error.HTTPError as exc:
                if exc.code in (404, 410):
                    raise ConfigError(
                        f"{field}.url: {ref.url} answered {exc.code}", f"{field}.url"
                    ) from None
                raise ModelUnreachable(f"{field}.url: {ref.url}: HTTP {exc.code}") from None
            except (urllib.error.URLError, OSError) as exc:
                reason = getattr(exc, "reason", exc)
                raise ModelUnreachable(f"{field}.url: {ref.url} is unreachable: {reason}") from None
        if ref.url.startswith("oci://") and not ref.sha256:
            from edgepipe import oci

            try:
                sha = oci.model_sha256(ref.url, credentials, plain_http)
                return ref.model_copy(update={"sha256": sha})
            except oci.RegistryUnavailable as exc:
                raise ModelUnreachable(f"{field}.url: {exc}") from None
            except oci.OciError as exc:
                raise ConfigError(f"{field}.url: {exc}", f"{field}.url") from None
        return ref

    return resolve


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # Handler progress lives in annotations under our own prefix, not in status.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.posting.level = 20  # logging.INFO: events for transitions, not debug chatter
    memo.settings = OperatorSettings.from_env()
    memo.kube = Kube()
    # Asking unready engines why needs pod IPs this process can reach.
    memo.probe = probe_ready if memo.settings.probe_engines else None


def _error_status(message: str, status: dict, generation: int | None) -> dict[str, Any]:
    t = now()
    return {
        "phase": "Error",
        "message": message,
        "observedGeneration": generation,
        "conditions": b.merge_conditions(
            status.get("conditions"),
            [
                b.condition("Ready", False, "InvalidSpec", message, t, generation),
                b.condition("Progressing", False, "InvalidSpec", message, t, generation),
            ],
        ),
    }


def pipeline_login(kube: Kube, spec: PipelineSpec, namespace: str) -> Login | None:
    """The login of the Pipeline's model registry, from its Secret (None without one)."""
    if spec.registry is None or spec.registry.secret_ref is None:
        return None
    name = spec.registry.secret_ref.name
    return login_from_secret(kube.read_secret(name, namespace), name)


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
    **_: Any,
) -> None:
    generation = meta.get("generation")
    try:
        parsed = b.parse_spec(dict(spec))
        login = pipeline_login(memo.kube, parsed, namespace)
        if parsed.version:  # a rollback: a kept version, not the steps
            config = history.pinned_config(memo.kube, name, namespace, parsed.version)
        else:
            resolve = make_resolver(memo.settings, login, parsed.registry)
            config = b.resolve_pipeline(name, parsed, resolve)
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
        history.remember(memo.kube, body, config, namespace, parsed.revision_history_limit)
    except (ApiException, Urllib3Error) as exc:
        raise api_error(exc, "keeping the version's config") from None
    version_fields = {
        "pinned": bool(parsed.version),
        "version": config.version,
        "versions": b.record_version(
            status.get("versions"), config.version, b.config_digest(config), now()
        ),
        "observedGeneration": generation,
        "message": None,
    }
    if parsed.deployed:
        deploy(body, config, parsed, login, namespace, status, memo, version_fields)
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
                b.engine_name(name) if kind != "ConfigMap" else b.configmap_name(name),
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
        "conditions": b.merge_conditions(
            status.get("conditions"),
            [
                b.condition("Ready", False, "Undeployed", "spec.deployed is false", t, generation),
                b.condition("Progressing", False, "Undeployed", "nothing to deploy", t, generation),
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
) -> None:
    """Apply the ConfigMap, Deployment and Service, then copy the Deployment's readiness."""
    name = config.name
    settings: OperatorSettings = memo.settings
    manifests = [
        b.build_configmap(config, namespace),
        b.build_deployment(
            config,
            parsed,
            namespace,
            image=parsed.image or settings.engine_image,
            pull_policy=settings.image_pull_policy,
            login=login,
        ),
        b.build_service(name, namespace, config.version),
    ]
    for manifest in manifests:
        kopf.adopt(manifest, owner=body)
        try:
            memo.kube.apply(manifest)
        except (ApiException, Urllib3Error) as exc:
            raise api_error(exc, f"applying {manifest['kind']}") from None
    extra = {**version_fields, "deployed": True, "url": b.inference_url(name, namespace)}
    try:
        sync_from_deployment(memo.kube, name, namespace, extra=extra, probe=memo.probe)
        # Deployment events that came before that write were skipped (the status was not
        # this spec's yet): read the Deployment once more. Later events find it current.
        sync_from_deployment(memo.kube, name, namespace, probe=memo.probe)
    except (ApiException, Urllib3Error) as exc:
        raise api_error(exc, "writing the status") from None
    if status.get("version") != config.version:
        kopf.info(body, reason="Deploying", message=f"deploying version {config.version}")


def sync_from_deployment(
    kube: Kube,
    name: str,
    namespace: str,
    extra: dict[str, Any] | None = None,
    attempts: int = 5,
    probe=None,
) -> dict[str, Any] | None:
    """Copy a deployed pipeline's readiness from its Deployment; the patch, if any.

    Two writers meet here: the reconciler (after applying, with ``extra`` fields, then once
    more without) and the Deployment watch, which waits until the status is this spec's.
    Each reads the Pipeline, then the Deployment, then writes only if the Pipeline is
    unchanged since it read it (resourceVersion precondition), else starts over. So the
    last successful write always saw a Deployment at least as new as any write before it,
    and no race leaves a stale phase behind, nor a phase without its version.
    """
    for _ in range(attempts):
        pipeline = kube.get_custom("pipelines", name, namespace)
        if not pipeline or not (pipeline.get("spec") or {}).get("deployed"):
            return None
        status = pipeline.get("status") or {}
        current = status.get("observedGeneration") == pipeline["metadata"].get("generation")
        if extra is None and (not current or status.get("phase") in ("Error", "Pending")):
            # Either the reconciler has not written this spec's status yet (it reads the
            # Deployment again after its own write, so nothing is missed), or this very
            # spec cannot be deployed and its message stays.
            return None
        deployment = kube.read_deployment(b.engine_name(name), namespace)
        phase, fields = b.deployment_phase(deployment)
        problem = None
        if phase != "Running":
            pods = kube.list_pods(namespace, b.selector_labels(name))
            problem = health.pods_problem(pods, probe=probe)
        fields["message"] = problem
        generation = (extra or {}).get("observedGeneration", status.get("observedGeneration"))
        conditions = b.merge_conditions(
            status.get("conditions"),
            b.deployment_conditions(deployment, phase, now(), generation, problem),
        )
        changed = (
            extra
            or status.get("phase") != phase
            or any(status.get(k) != v for k, v in fields.items())
            or [(c["type"], c["status"]) for c in conditions]
            != [(c.get("type"), c.get("status")) for c in status.get("conditions") or []]
        )
        if not changed:
            return None
        new = {**(extra or {}), "phase": phase, **fields, "conditions": conditions}
        try:
            kube.patch_status(
                "pipelines",
                name,
                namespace,
                new,
                resource_version=pipeline["metadata"]["resourceVersion"],
            )
        except ApiException as exc:
            if exc.status == 409:
                continue  # someone wrote in between: read both again
            raise
        ready = f"{fields['readyReplicas']}/{fields['replicas']}"
        if phase == "Running" and status.get("phase") != "Running":
            kopf.info(pipeline, reason="Running", message=f"{ready} engine replicas ready")
        elif phase != "Running" and status.get("phase") == "Running":
            why = problem or "waiting for engine replicas"
            kopf.warn(pipeline, reason="EngineNotReady", message=f"{ready} ready: {why}")
        elif problem and problem != status.get("message"):
            kopf.warn(pipeline, reason="EngineNotReady", message=problem)
        return new
    raise kopf.TemporaryError("the Pipeline's status kept changing while being written", delay=2)


def probe_ready(pod: dict[str, Any]) -> str | None:
    """Ask a running but unready engine why: its ``/health/ready`` answer (1 s at most)."""
    ip = (pod.get("status") or {}).get("podIP")
    try:
        with urllib.request.urlopen(f"http://{ip}:{ENGINE_PORT}/health/ready", timeout=1) as r:
            return health.ready_reason(json.loads(r.read()))
    except urllib.error.HTTPError as exc:
        try:
            return health.ready_reason(json.loads(exc.read()))
        except ValueError:
            return f"/health/ready answered {exc.code}"
    except (OSError, ValueError):
        return None  # not reachable from here (a fake node, another network)


ENGINE_LABELS = {"app.kubernetes.io/managed-by": b.MANAGED_BY, b.PIPELINE_LABEL: kopf.PRESENT}


@kopf.on.event("apps", "v1", "deployments", labels=ENGINE_LABELS)
@kopf.on.event("", "v1", "pods", labels=ENGINE_LABELS)
def engine_changed(
    type: str, body: kopf.Body, namespace: str, labels: kopf.Labels, memo: kopf.Memo, **_: Any
) -> None:
    """A Deployment rolls, or a pod's container waits, crashes, restarts or becomes ready:
    the Pipeline's status follows."""
    if type == "DELETED":
        return  # an undeploy, a delete or a replaced pod; other events carry the news
    try:
        sync_from_deployment(memo.kube, labels[b.PIPELINE_LABEL], namespace, probe=memo.probe)
    except (ApiException, Urllib3Error, kopf.TemporaryError) as exc:
        kopf.warn(body, reason="StatusSyncFailed", message=str(exc))
