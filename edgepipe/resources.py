"""The custom resources' specs and statuses: `Pipeline` and `Publish` (edgepipe.io/v1alpha1).

These models are the one source of truth for the CRDs (``edgepipe.crds`` turns them into
structural OpenAPI schemas) and the operator validates specs with them. A Pipeline's steps
are the pipeline config's steps, so a resolved Pipeline *is* a pipeline config.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from .config import (
    NAME_MAX,
    NAME_PATTERN,
    QUANTITY_PATTERN,
    EngineConfig,
    SpecModel,
    Step,
    Validation,
)
from .rolloutspec import RolloutSpec, RolloutStatus, check_rollout
from .secretrefs import EngineAuth, SecretRef

# Defined once, in spec (the base of every document), and re-exported here.
from .spec import API_VERSION as API_VERSION
from .spec import GROUP as GROUP
from .spec import VERSION as VERSION

PipelinePhase = Literal["Pending", "Deploying", "Running", "Undeployed", "Error"]
PublishPhase = Literal["PendingPublish", "Published", "Failed"]


# A cpu target is a percentage of the CPU request, which is also the limit: above 100 the
# autoscaler could never reach it. An inflight target is requests in flight per pod.
CPU_TARGET_MAX = 100


class Autoscaling(SpecModel):
    """A HorizontalPodAutoscaler for the engine: replicas follow the load between min and
    max. ``cpu`` needs metrics-server in the cluster; ``inflight`` needs Prometheus and
    prometheus-adapter (see the docs' autoscaling page)."""

    min_replicas: int = Field(default=1, ge=1, description="Fewest engine replicas.")
    max_replicas: int = Field(ge=1, description="Most engine replicas.")
    metric: Literal["cpu", "inflight"] = Field(
        default="cpu",
        description="cpu: average CPU use as a percentage of the request (metrics-server); "
        "inflight: average requests in flight per pod (edgepipe_inflight_requests, through "
        "prometheus-adapter).",
    )
    target: float = Field(
        default=70,
        gt=0,
        description="cpu: percent of the CPU request, 1-100; inflight: requests in flight "
        "per pod, above 0.",
    )
    behavior: dict[str, Any] | None = Field(
        default=None,
        description="Passed through to the HorizontalPodAutoscaler's spec.behavior "
        "(scaleUp/scaleDown policies and stabilization windows).",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )

    # Field validators (not a model validator), so that the error names the field.
    @field_validator("max_replicas")
    @classmethod
    def _max_not_below_min(cls, value: int, info: ValidationInfo) -> int:
        low = info.data.get("min_replicas")
        if low is not None and value < low:
            raise ValueError(f"{value} is below minReplicas ({low})")
        return value

    @field_validator("target")
    @classmethod
    def _target_in_range(cls, value: float, info: ValidationInfo) -> float:
        if info.data.get("metric", "cpu") == "cpu" and (
            value != int(value) or not 1 <= value <= CPU_TARGET_MAX
        ):
            raise ValueError(
                f"{value:g} is not a CPU percentage: expected a whole number from 1 to "
                f"{CPU_TARGET_MAX} (percent of the CPU request)"
            )
        return value


class DeploymentConfig(SpecModel):
    """How many engine replicas run, and the resources of each."""

    replicas: int = Field(
        default=1, ge=0, description="Engine replicas (ignored while autoscaling is set)."
    )
    cpus: float = Field(default=1.0, gt=0, description="CPU cores per replica (CONFIG_CPUS).")
    memory: str = Field(
        default="1Gi", pattern=QUANTITY_PATTERN, description="Memory per replica, e.g. 1Gi."
    )
    gpus: int = Field(default=0, ge=0, description="GPUs per replica (nvidia.com/gpu).")
    autoscaling: Autoscaling | None = Field(
        default=None,
        description="Scale the replicas with the load (a HorizontalPodAutoscaler) instead "
        "of a fixed 'replicas'; remove it to go back to 'replicas'.",
    )

    def engine(self) -> EngineConfig:
        return EngineConfig(cpus=self.cpus, memory=self.memory, gpus=self.gpus)


class ModelRegistry(SpecModel):
    """The registry that holds a Pipeline's ``oci://`` models."""

    secret_ref: SecretRef | None = Field(
        default=None,
        description="Secret with 'username' and 'password' keys, or a "
        "kubernetes.io/dockerconfigjson Secret; handed to the engine pods as a reference, "
        "never as a value.",
    )
    plain_http: bool | None = Field(
        default=None,
        description="The registry speaks plain HTTP, not TLS. Default: true for a loopback "
        "registry (localhost, 127.0.0.1, [::1]), else false.",
    )


class PipelineSpec(SpecModel):
    """A pipeline of ONNX model steps, and whether and how it is deployed."""

    deployed: bool = Field(
        default=False, description="true: run the engine; false: remove it, keep the Pipeline."
    )
    steps: list[Step] = Field(min_length=1, description="Ordered model steps.")
    validations: list[Validation] = Field(
        default_factory=list,
        max_length=32,
        description="Rules checked on every row's outputs; failing rows name them in "
        "check_failures.",
    )
    version: str | None = Field(
        default=None,
        pattern=r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$",
        description="Pin a past version from status.versions (a rollback): its kept config "
        "is deployed instead of steps. Remove it to deploy steps again.",
    )
    revision_history_limit: int = Field(
        default=10,
        ge=1,
        le=100,
        description="How many past versions keep their whole config (ControllerRevisions), "
        "for pinning and publishing.",
    )
    deployment: DeploymentConfig = Field(
        default_factory=DeploymentConfig, description="Engine replicas and resources."
    )
    image: str | None = Field(
        default=None,
        description="Engine image; defaults to the operator's EDGEPIPE_OPERATOR_ENGINE_IMAGE.",
    )
    registry: ModelRegistry | None = Field(
        default=None,
        description="How to reach the registry of the steps' oci:// models: credentials and "
        "plain HTTP. Both the operator and the engine pods use them.",
    )
    auth: EngineAuth | None = Field(
        default=None, description="Who may call the engine: its API token, from a Secret."
    )


class Condition(SpecModel):
    """A standard Kubernetes condition."""

    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str | None = None
    message: str | None = None
    last_transition_time: str | None = None
    observed_generation: int | None = None


class VersionRecord(SpecModel):
    """One version the pipeline has had."""

    version: str = Field(description="The pipeline version (a digest of its resolved config).")
    created_at: str = Field(description="When the operator first saw this version (RFC 3339).")
    spec_digest: str = Field(description="sha256 of the resolved pipeline config document.")


class PublishRecord(SpecModel):
    """A Publish of this pipeline, as the Pipeline's status lists it."""

    name: str
    version: str | None = None
    phase: str | None = None
    helm_chart_reference: str | None = None


class AutoscalingStatus(SpecModel):
    """What the engine's HorizontalPodAutoscaler reports."""

    current_replicas: int | None = Field(default=None, description="Replicas running now.")
    desired_replicas: int | None = Field(
        default=None, description="Replicas the autoscaler last asked for."
    )
    current: str | None = Field(
        default=None, description="The metric's current value (e.g. 85% or 3.5 in flight)."
    )
    reason: str | None = Field(
        default=None,
        description="Why it cannot scale, from the HPA's ScalingActive or AbleToScale "
        "condition (e.g. FailedGetResourceMetric); empty while it scales.",
    )
    message: str | None = None


class PipelineStatus(SpecModel):
    phase: PipelinePhase | None = None
    message: str | None = None
    deployed: bool | None = None
    url: str | None = Field(default=None, description="In-cluster inference URL.")
    version: str | None = Field(default=None, description="The current version.")
    pinned: bool | None = Field(
        default=None, description="true while spec.version pins a past version."
    )
    versions: list[VersionRecord] | None = Field(default=None, description="Version history.")
    replicas: int | None = None
    ready_replicas: int | None = None
    autoscaling: AutoscalingStatus | None = Field(
        default=None, description="The autoscaler's view, while spec.deployment.autoscaling is set."
    )
    observed_generation: int | None = None
    conditions: list[Condition] | None = None
    published: bool | None = None
    publishes: list[PublishRecord] | None = None


class RegistryRef(SpecModel):
    """Where a Publish pushes, and the credentials to push with."""

    url: str = Field(
        min_length=1,
        description="Registry host and optional path prefix, e.g. registry.example.com/edge.",
    )
    secret_ref: SecretRef | None = Field(
        default=None,
        description="Secret with 'username' and 'password' keys (or a dockerconfigjson).",
    )
    plain_http: bool | None = Field(
        default=None,
        description="Speak plain HTTP, not TLS. Default: true for a loopback registry "
        "(localhost, 127.0.0.1, [::1]), else false, as the CLI decides.",
    )


# An edge location's name: a DNS label (it names a repository path and a Helm value).
EDGE_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
EdgeName = Annotated[str, Field(pattern=EDGE_PATTERN, max_length=63)]


def check_edges(edges: list[str]) -> list[str]:
    """The edge names as given, or ValueError naming the first bad or repeated one."""
    import re

    seen: set[str] = set()
    for i, edge in enumerate(edges):
        if not re.match(EDGE_PATTERN, edge) or len(edge) > 63:
            raise ValueError(
                f"edges[{i}]: {edge!r} is not an edge name (lower-case letters, digits and "
                "'-', at most 63, starting and ending with a letter or digit)"
            )
        if edge in seen:
            raise ValueError(f"edges[{i}]: {edge!r} is listed twice")
        seen.add(edge)
    return edges


class SigningRef(SpecModel):
    """The key a Publish signs its artifacts with."""

    secret_ref: SecretRef = Field(
        description="Secret with 'key' (a PEM EC P-256 private key) and, when the key is "
        "encrypted, 'password'."
    )


class EdgeStatus(SpecModel):
    """One edge location: its name, its docker run line, and its last inference-log upload."""

    name: str
    docker_run_command: str | None = None
    last_upload: str | None = Field(default=None, description="Time of its newest log upload.")
    last_upload_records: int | None = None
    uploaded_segments: int | None = None
    version: str | None = Field(default=None, description="The version it runs.")
    digest: str | None = None
    state: str | None = Field(default=None, description="Its update state, Offline or Unknown.")
    last_seen: str | None = None
    reason: str | None = None
    wave: int | None = Field(default=None, description="Its rollout wave, from 1.")


class PublishSpec(SpecModel):
    """Publish one version of a pipeline to an OCI registry, with a Helm chart for the edge."""

    pipeline: str = Field(
        pattern=NAME_PATTERN, max_length=NAME_MAX, description="Pipeline in this namespace."
    )
    version: str | None = Field(default=None, description="Pipeline version; default: current.")
    registry: RegistryRef
    engine_config: DeploymentConfig | None = Field(
        default=None, description="Replaces the pipeline's deployment config in the chart."
    )
    chart_name: str | None = Field(
        default=None,
        pattern=NAME_PATTERN,
        max_length=NAME_MAX,
        description="Chart name; default: the pipeline's name.",
    )
    edges: list[EdgeName] = Field(
        default_factory=list,
        description="Named edge locations (EDGE_NAME) that run this publish; each uploads "
        "its inference logs under <prefix>/logs/<pipeline>/<edge>.",
    )
    signing: SigningRef | None = Field(
        default=None,
        description="Sign the pipeline artifact and the chart (cosign's format) with this key.",
    )
    rollout: RolloutSpec | None = Field(
        default=None, description="Move the edges in waves; default: every edge at once."
    )

    @field_validator("edges")
    @classmethod
    def _unique_edges(cls, edges: list[str]) -> list[str]:
        return check_edges(edges)

    @model_validator(mode="after")
    def _rollout_fits_edges(self) -> PublishSpec:
        check_rollout(self.rollout, self.edges)  # errors name spec.rollout's field
        return self


class PublishStatus(SpecModel):
    phase: PublishPhase | None = None
    reason: str | None = None
    message: str | None = None
    pipeline_version: str | None = None
    engine_url: str | None = Field(default=None, description="The engine image.")
    pipeline_url: str | None = Field(default=None, description="The pipeline artifact.")
    helm_chart_url: str | None = None
    helm_chart_reference: str | None = Field(default=None, description="The chart by digest.")
    helm_chart_version: str | None = Field(default=None, description="0.0.1-<version>.")
    engine_config: DeploymentConfig | None = None
    docker_run_command: str | None = None
    signatures: dict[str, str] | None = Field(
        default=None, description="Each signed artifact's signature (sha256-<hex>.sig)."
    )
    public_key: str | None = Field(
        default=None, description="The signing key's public half (PEM), for OCI_VERIFY_KEY."
    )
    edges: list[EdgeStatus] | None = None
    rollout: RolloutStatus | None = None
    created_at: str | None = None
    updated_at: str | None = None
    observed_generation: int | None = None
    conditions: list[Condition] | None = None
