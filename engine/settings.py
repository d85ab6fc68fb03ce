"""Engine settings, read from ``EDGEPIPE_ENGINE_*`` env vars and the tutorial's own names.

Every variable, its default and its meaning are the fields of :class:`Settings`; the docs'
settings reference is generated from them (``edgepipe.settingsbase.settings_rows``).

Latency and throughput: up to ``INFER_WORKERS`` model calls run at once (by default
``CONFIG_CPUS``). A call that starts while no other runs spreads over all ``CONFIG_CPUS``
threads, the lowest latency for a lone request; one that starts beside others gets
``CONFIG_CPUS / INFER_WORKERS`` threads: single-threaded calls side by side waste less time
in synchronisation, so a busy engine answers more requests per second (``bench/README.md``
has the figures). ``INFER_WORKERS=1`` runs one call at a time on all the threads. Decoding
runs in its own pool either way, so the next request is decoded while one is in the model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field
from pydantic_settings import SettingsConfigDict

from edgepipe.oci import Credentials, OciError
from edgepipe.settingsbase import Flag, SettingsError

from .accesssettings import AccessSettings

__all__ = [
    "EdgeSource", "RegistryLogin", "Settings", "SettingsError", "UpdatePolicy", "parse_size",
]  # fmt: skip

PREFIX = "EDGEPIPE_ENGINE_"
# 1x3x640x640 float32 as pandas-records JSON is about 13 MB; 64 MiB leaves room for batches.
DEFAULT_MAX_BODY = 64 * 1024 * 1024
# A 12-megapixel phone photo is 12 M pixels; an 8K frame 33 M.
DEFAULT_MAX_IMAGE_PIXELS = 40_000_000
# A shadow of the docs' trained YOLOv8s (the same model) on 2 cores finished 0.06-0.9 s
# after the model's own answer (bench/README.md); at the old 100 ms every one was dropped.
DEFAULT_SHADOW_TIMEOUT_MS = 1000
SIZE_EXPECTED = "expected a size such as 512Mi, 2Gi or 100000000"


def parse_size(raw: str) -> int:
    """``1Gi``, ``512Mi``, ``10M``, ``2G``, ``1e9`` or plain bytes -> bytes."""
    units = {
        "": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12,
        "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40,
    }  # fmt: skip
    text = raw.strip()
    number = text.rstrip("KMGTkmgtiIbB")
    unit = text[len(number) :].lower().removesuffix("b")
    try:
        value = float(number)
    except ValueError:
        value = -1.0
    if unit not in units or value <= 0:
        raise ValueError(SIZE_EXPECTED)
    return int(value * units[unit])


def _size(value: Any) -> Any:
    return parse_size(value) if isinstance(value, str) else value


def _cpus(value: Any) -> int:
    try:
        cores = float(value)
    except (TypeError, ValueError):
        raise ValueError("expected a number of cores") from None
    if not cores > 0 or cores == float("inf"):  # NaN and inf too: no thread count
        raise ValueError("expected a positive number of cores")
    return max(1, int(cores))  # a fractional CPU limit (0.5) still needs one thread


def _edge_name(value: Any) -> Any:
    from edgepipe.resources import check_edges

    if isinstance(value, str):
        try:
            check_edges([value])
        except ValueError as exc:  # "edges[0]: 'X' is not an edge name (...)"
            raise ValueError("expected " + str(exc).split(" is not ", 1)[-1]) from None
    return value


Size = Annotated[int, BeforeValidator(_size)]
Cores = Annotated[int, BeforeValidator(_cpus)]
EdgeName = Annotated[str, BeforeValidator(_edge_name)]


@dataclass(frozen=True)
class RegistryLogin:
    """How the engine logs in to a registry: edge mode's pipeline, and, in the cluster,
    ``oci://`` model references (OCI_USERNAME/OCI_PASSWORD, else OCI_AUTH_FILE)."""

    username: str | None = None
    password: str | None = field(default=None, repr=False)
    plain_http: bool = False
    auth_file: Path | None = None

    def credentials(self, registry: str) -> Credentials:
        """The login for ``registry``: OCI_USERNAME/OCI_PASSWORD, else the auth file's."""
        if self.username or self.auth_file is None:
            return Credentials(self.username, self.password)
        try:
            text = self.auth_file.read_text()
        except OSError as exc:
            raise SettingsError(f"OCI_AUTH_FILE={self.auth_file}: {exc.strerror}") from None
        try:
            found = Credentials.from_docker_config(text, registry)
        except OciError as exc:
            raise SettingsError(f"OCI_AUTH_FILE={self.auth_file}: {exc}") from None
        return found or Credentials()


@dataclass(frozen=True)
class EdgeSource:
    """Edge mode's published pipeline: where it is, and the key its signature must match."""

    pipeline_url: str
    registry: str | None = None  # OCI_REGISTRY: the registry of a PIPELINE_URL naming none
    verify_key: str | None = field(default=None, repr=False)  # PEM text or a file


@dataclass(frozen=True)
class UpdatePolicy:
    """How an edge follows its pointer (``EDGEPIPE_ENGINE_UPDATE_*``; engine/updater.py)."""

    seconds: float = 60.0
    probation_seconds: float = 60.0
    max_error_rate: float = 0.2
    lock: Path | None = None
    min_requests: int = 5  # the error rate counts from this many requests on
    heartbeat_seconds: float = 300.0  # the registry status is rewritten at least this often


class Settings(AccessSettings):
    """The engine's settings; ``Settings.from_env()`` reads them, flags override some.
    Access (tokens, TLS) is in :class:`AccessSettings`."""

    model_config = SettingsConfigDict(env_prefix=PREFIX)

    host: str = Field("0.0.0.0", description="listen address")
    port: int = Field(8080, ge=0, description="listen port (REST)")
    grpc_port: int = Field(8081, ge=0, description="OIP v2 gRPC listen port; `0` turns gRPC off")
    config_path: Path | None = Field(
        None,
        validation_alias=PREFIX + "CONFIG",
        description="pipeline config file (YAML or JSON)",
    )
    model_path: Path | None = Field(
        None,
        validation_alias=PREFIX + "MODEL",
        description="one ONNX file, served as a one-step pipeline",
    )
    max_body_bytes: int = Field(
        DEFAULT_MAX_BODY, ge=1, description="request body limit (413 above); 64 MiB"
    )
    max_image_pixels: int = Field(
        DEFAULT_MAX_IMAGE_PIXELS,
        ge=1,
        description="an encoded image with more pixels is refused (413) before it is decoded",
    )
    shadow_timeout_ms: int = Field(
        DEFAULT_SHADOW_TIMEOUT_MS,
        ge=0,
        description="after a step's model answers, how long the answer waits for its shadows",
    )
    body_timeout_seconds: int = Field(
        30,
        ge=1,
        description="a request body still arriving after this is cut off (408), "
        "so a slow client holds nothing for long",
    )
    cache_versions: int = Field(
        5, ge=1, description="edge mode: pipeline versions kept in the cache (with their models)"
    )
    echo_limit_bytes: int = Field(
        65536, ge=0, description="bodies up to this size are echoed as `original_data`"
    )
    allow_nan: Flag = Field(False, description="accept NaN/Inf in float inputs")
    cpus: Cores = Field(
        1,
        validation_alias="CONFIG_CPUS",
        description="onnxruntime intra-op threads, and the decode pool's size "
        "(a fraction such as 0.5 gives 1)",
        json_schema_extra={"type_text": "number of cores"},
    )
    infer_workers: int | None = Field(
        None,
        ge=1,
        description="concurrent model calls: one that starts while no other runs gets "
        "`CONFIG_CPUS` intra-op threads, one that starts beside others `CONFIG_CPUS / "
        "workers` (from a second session of the model, made at the first such call)",
        json_schema_extra={"default_text": "CONFIG_CPUS"},
    )
    intra_op_spinning: Literal["on", "calls", "off"] = Field(
        "calls",
        description="whether onnxruntime's intra-op threads spin (busy-wait) for work instead "
        "of sleeping: `on` (onnxruntime's default: they also spin on after a call, on cores "
        "that decoding, encoding and other requests need), `calls` (only while a model call "
        "runs) or `off` (never; the least CPU per request, for many concurrent requests)",
    )
    debug: Flag = Field(False, validation_alias="DEBUG", description="debug logging")
    cache_dir: Path = Field(
        default_factory=lambda: Path.home() / ".cache/edgepipe/engine",
        description="edge mode: where pulled models go",
        json_schema_extra={"default_text": "~/.cache/edgepipe/engine"},
    )
    max_model_bytes: Size = Field(
        4 * 2**30,
        description="a model layer (an ONNX file, or a modelcar image's layer holding one) "
        "or a file in it larger than this is refused before it is downloaded (`2Gi`, bytes)",
        json_schema_extra={"default_text": "4Gi", "type_text": "size"},
    )
    drain_seconds: int = Field(
        0,
        ge=0,
        description="on SIGTERM, fail readiness and keep serving this long before closing "
        "the port (the operator sets 5)",
    )
    shutdown_timeout: int = Field(
        20, ge=0, description="then, seconds that requests in flight get to finish"
    )
    log_inferences: Flag | None = Field(
        None,
        description="keep a local inference log (`GET /logs`), uploaded to the registry "
        "in edge mode",
        json_schema_extra={"default_text": "edge mode: true, else false"},
    )
    log_inputs: Flag = Field(
        False,
        description="also log each row's inputs (off: inputs may be personal data, and large)",
    )
    log_dir: Path | None = Field(
        None,
        description="where the log's segments are",
        json_schema_extra={"default_text": "$EDGEPIPE_ENGINE_CACHE_DIR/logs"},
    )
    log_segment_records: int = Field(
        1000, ge=1, description="a segment is written after this many requests..."
    )
    log_segment_seconds: float = Field(
        10.0,
        gt=0,
        description="...or this long (records still buffered are lost if the process is "
        "killed; SIGTERM writes them)",
        json_schema_extra={"unit": "seconds"},
    )
    log_upload_seconds: float = Field(
        10.0,
        gt=0,
        description="how often waiting segments are retried while the registry is down",
        json_schema_extra={"unit": "seconds"},
    )
    local_storage: Size = Field(
        2**30,
        validation_alias="LOCAL_INFERENCE_STORAGE",
        description="disk cap of the log (`512Mi`, `2G`, bytes); the oldest segments go "
        "first, uploaded ones before the rest",
        json_schema_extra={"default_text": "1Gi", "type_text": "size"},
    )
    edge_name: EdgeName | None = Field(
        None,
        validation_alias="EDGE_NAME",
        description="this edge location's name: in every record, and the log's repository "
        "`<prefix>/logs/<pipeline>/<edge>`",
        json_schema_extra={"default_text": "the host name"},
    )
    pipeline_url: str | None = Field(
        None,
        validation_alias="PIPELINE_URL",
        description="edge mode: the published pipeline to pull (`registry/repo:tag`)",
    )
    oci_registry: str | None = Field(
        None,
        validation_alias="OCI_REGISTRY",
        description="edge mode: the registry of a `PIPELINE_URL` that names none",
    )
    oci_username: str | None = Field(
        None, validation_alias="OCI_USERNAME", description="registry login: user name"
    )
    oci_password: str | None = Field(
        None, repr=False, validation_alias="OCI_PASSWORD", description="registry login: password"
    )
    oci_plain_http: Flag = Field(
        False,
        validation_alias="OCI_PLAIN_HTTP",
        description="the registry speaks plain HTTP (loopback tests)",
    )
    oci_auth_file: Path | None = Field(
        None,
        validation_alias="OCI_AUTH_FILE",
        description="a `.dockerconfigjson` file to log in with when `OCI_USERNAME` is unset",
    )
    oci_verify_key: str | None = Field(
        None,
        repr=False,
        validation_alias="OCI_VERIFY_KEY",
        description="edge mode: a public key (PEM text or a file); the pipeline must carry a "
        "valid cosign-format signature by it, checked before anything loads (offline too, "
        "from the cache)",
    )

    update_seconds: float = Field(
        60.0,
        ge=0,
        description="edge mode: how often the engine polls `PIPELINE_URL` for a new version "
        "(±20% jitter; one HEAD request when nothing changed); `0` turns updates off",
        json_schema_extra={"unit": "seconds"},
    )
    update_probation_seconds: float = Field(
        60.0,
        ge=0,
        description="edge mode: how long a new version's error rate is watched after the "
        "switch; above the limit the edge goes back to the previous version",
        json_schema_extra={"unit": "seconds"},
    )
    update_max_error_rate: float = Field(
        0.2,
        ge=0,
        le=1,
        description="edge mode: the share of failed requests (5xx, or rows with "
        "`check_failures`) in probation above which the edge rolls back (from 5 requests on)",
    )
    update_lock: Path | None = Field(
        None,
        description="edge mode: while this file exists a new version downloads and verifies "
        "but waits; it is applied within one poll of the file's removal",
    )

    update_heartbeat_seconds: float = Field(
        300.0,
        gt=0,
        le=300,
        description="edge mode: the edge's status in the registry "
        "(its tag in `<prefix>/status/<pipeline>`) is rewritten on every change and at least "
        "this often, so that its `lastSeen` tells a live edge",
        json_schema_extra={"unit": "seconds"},
    )

    @property
    def update(self) -> UpdatePolicy:
        """Edge updates: the ``update_*`` fields as one object."""
        return UpdatePolicy(
            self.update_seconds,
            self.update_probation_seconds,
            self.update_max_error_rate,
            self.update_lock,
            heartbeat_seconds=self.update_heartbeat_seconds,
        )

    @property
    def edge(self) -> EdgeSource | None:
        """Edge mode's pipeline source; None unless PIPELINE_URL is set."""
        if not self.pipeline_url:
            return None
        return EdgeSource(self.pipeline_url, self.oci_registry, self.oci_verify_key)

    @property
    def registry_login(self) -> RegistryLogin:
        """The OCI_* login: edge mode's and, in the cluster, ``oci://`` model references'."""
        return RegistryLogin(
            self.oci_username, self.oci_password, self.oci_plain_http, self.oci_auth_file
        )

    @property
    def inference_log_on(self) -> bool:
        """Whether to keep the inference log: as set, else on in edge mode."""
        if self.log_inferences is None:
            return self.edge is not None
        return self.log_inferences

    @property
    def workers(self) -> int:
        """Model calls that may run at once: ``INFER_WORKERS``, by default ``CONFIG_CPUS``."""
        return self.infer_workers or self.cpus

    @property
    def threads_per_call(self) -> int:
        """onnxruntime intra-op threads for one model call among others: the cores shared
        by the workers (a call alone gets ``CONFIG_CPUS``, ``runtime.OnnxModel``)."""
        return max(1, self.cpus // self.workers)

    def with_overrides(self, **changes: object) -> Settings:
        """A copy with the given values (command-line flags); None leaves one as it is."""
        return self.model_copy(update={k: v for k, v in changes.items() if v is not None})
