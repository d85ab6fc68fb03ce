"""Engine settings, read from ``EDGEPIPE_ENGINE_*`` env vars and the tutorial's own names.

| env var | default | meaning |
|---|---|---|
| ``EDGEPIPE_ENGINE_HOST`` | ``0.0.0.0`` | listen address |
| ``EDGEPIPE_ENGINE_PORT`` | ``8080`` | listen port (REST) |
| ``EDGEPIPE_ENGINE_GRPC_PORT`` | ``8081`` | OIP v2 gRPC listen port; ``0`` turns gRPC off |
| ``EDGEPIPE_ENGINE_CONFIG`` | (none) | pipeline config file (YAML or JSON) |
| ``EDGEPIPE_ENGINE_MODEL`` | (none) | one ONNX file, served as a one-step pipeline |
| ``EDGEPIPE_ENGINE_MAX_BODY_BYTES`` | ``67108864`` (64 MiB) | request body limit (413 above) |
| ``EDGEPIPE_ENGINE_MAX_IMAGE_PIXELS`` | ``40000000`` | an encoded image with more pixels is refused (413) before it is decoded |
| ``EDGEPIPE_ENGINE_SHADOW_TIMEOUT_MS`` | ``100`` | after a step's model answers, how long the answer waits for its shadows |
| ``EDGEPIPE_ENGINE_CACHE_VERSIONS`` | ``5`` | edge mode: pipeline versions kept in the cache (with their models) |
| ``EDGEPIPE_ENGINE_BODY_TIMEOUT_SECONDS`` | ``30`` | a request body still arriving after this is cut off (408), so a slow client holds nothing for long |
| ``EDGEPIPE_ENGINE_ECHO_LIMIT_BYTES`` | ``65536`` | bodies up to this size are echoed as ``original_data`` |
| ``EDGEPIPE_ENGINE_ALLOW_NAN`` | ``false`` | accept NaN/Inf in float inputs |
| ``EDGEPIPE_ENGINE_INFER_WORKERS`` | ``1`` | concurrent model calls; each gets ``CONFIG_CPUS / workers`` threads |
| ``EDGEPIPE_ENGINE_CACHE_DIR`` | ``~/.cache/edgepipe/engine`` | edge mode: where pulled models go |
| ``EDGEPIPE_ENGINE_DRAIN_SECONDS`` | ``0`` | on SIGTERM, fail readiness and keep serving this long before closing the port (the operator sets 5) |
| ``EDGEPIPE_ENGINE_SHUTDOWN_TIMEOUT`` | ``20`` | then, seconds that requests in flight get to finish |
| ``EDGEPIPE_ENGINE_LOG_INFERENCES`` | edge mode: ``true``, else ``false`` | keep a local inference log (``GET /logs``), uploaded to the registry in edge mode |
| ``EDGEPIPE_ENGINE_LOG_INPUTS`` | ``false`` | also log each row's inputs (off: inputs may be personal data, and large) |
| ``EDGEPIPE_ENGINE_LOG_DIR`` | ``<cache dir>/logs`` | where the log's segments are |
| ``EDGEPIPE_ENGINE_LOG_SEGMENT_RECORDS`` | ``1000`` | a segment is written after this many requests... |
| ``EDGEPIPE_ENGINE_LOG_SEGMENT_SECONDS`` | ``10`` | ...or this long (records still buffered are lost if the process is killed; SIGTERM writes them) |
| ``EDGEPIPE_ENGINE_LOG_UPLOAD_SECONDS`` | ``10`` | how often waiting segments are retried while the registry is down |
| ``LOCAL_INFERENCE_STORAGE`` | ``1Gi`` | disk cap of the log (``512Mi``, ``2G``, bytes); the oldest segments go first, uploaded ones before the rest |
| ``EDGE_NAME`` | the host name | this edge location's name: in every record, and the log's repository ``<prefix>/logs/<pipeline>/<edge>`` |
| ``CONFIG_CPUS`` | ``1`` | onnxruntime intra-op threads, and the decode pool's size |
| ``DEBUG`` | ``false`` | debug logging |
| ``PIPELINE_URL`` | (none) | edge mode: the published pipeline to pull (``registry/repo:tag``) |
| ``OCI_REGISTRY``, ``OCI_USERNAME``, ``OCI_PASSWORD`` | (none) | edge mode: registry login |
| ``OCI_PLAIN_HTTP`` | ``false`` | the registry speaks plain HTTP (loopback tests) |
| ``OCI_AUTH_FILE`` | (none) | a ``.dockerconfigjson`` file to log in with when ``OCI_USERNAME`` is unset |
| ``OCI_VERIFY_KEY`` | (none) | edge mode: a public key (PEM text or a file); the pipeline must carry a valid cosign-format signature by it, checked before anything loads (offline too, from the cache) |

Latency or throughput: with ``INFER_WORKERS=1`` (the default) one model call at a time
spreads over all ``CONFIG_CPUS`` threads, which gives the lowest latency per request.
With ``INFER_WORKERS=N`` up to N calls run at once, each on ``CONFIG_CPUS / N`` threads;
single-threaded calls side by side waste less time in synchronisation, so a busy engine
answers more requests per second (``bench/README.md`` has the figures). Decoding runs in
its own pool either way, so the next request is decoded while one is in the model.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from edgepipe.oci import Credentials, OciError

PREFIX = "EDGEPIPE_ENGINE_"
# 1x3x640x640 float32 as pandas-records JSON is about 13 MB; 64 MiB leaves room for batches.
DEFAULT_MAX_BODY = 64 * 1024 * 1024
# A 12-megapixel phone photo is 12 M pixels; an 8K frame 33 M.
DEFAULT_MAX_IMAGE_PIXELS = 40_000_000
DEFAULT_SHADOW_TIMEOUT_MS = 100


class SettingsError(ValueError):
    """An env var with a value that cannot be used."""


def _bool(env: Mapping[str, str], key: str, default: bool) -> bool:
    raw = env.get(key)
    if raw is None or raw == "":
        return default
    low = raw.strip().lower()
    if low in {"1", "true", "yes", "on"}:
        return True
    if low in {"0", "false", "no", "off"}:
        return False
    raise SettingsError(f"{key}={raw!r}: expected true or false")


def _int(env: Mapping[str, str], key: str, default: int, minimum: int = 0) -> int:
    raw = env.get(key)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{key}={raw!r}: expected a whole number") from None
    if value < minimum:
        raise SettingsError(f"{key}={raw!r}: expected at least {minimum}")
    return value


def _cpus(env: Mapping[str, str]) -> int:
    raw = env.get("CONFIG_CPUS")
    if raw is None or raw == "":
        return 1
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"CONFIG_CPUS={raw!r}: expected a number of cores") from None
    if value <= 0:
        raise SettingsError(f"CONFIG_CPUS={raw!r}: expected a positive number")
    # Fractional CPU limits (0.5) still need one thread.
    return max(1, int(value))


def _seconds(env: Mapping[str, str], key: str, default: float) -> float:
    raw = env.get(key)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if value <= 0:
        raise SettingsError(f"{key}={raw!r}: expected a positive number of seconds")
    return value


def parse_size(raw: str, what: str = "LOCAL_INFERENCE_STORAGE") -> int:
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
        raise ValueError(f"{what}={raw!r}: expected a size such as 512Mi, 2Gi or 100000000")
    return int(value * units[unit])


def _size(env: Mapping[str, str], key: str, default: str) -> int:
    try:
        return parse_size(env.get(key) or default, key)
    except ValueError as exc:
        raise SettingsError(str(exc)) from None


def _edge_name(env: Mapping[str, str]) -> str | None:
    from edgepipe.resources import check_edges

    raw = env.get("EDGE_NAME") or None
    if raw is not None:
        try:
            check_edges([raw])
        except ValueError as exc:
            raise SettingsError(f"EDGE_NAME: {exc}".replace("edges[0]: ", "")) from None
    return raw


@dataclass(frozen=True)
class OciSettings:
    pipeline_url: str
    registry: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    plain_http: bool = False
    auth_file: Path | None = None
    verify_key: str | None = field(default=None, repr=False)  # OCI_VERIFY_KEY: PEM or a file

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
class Settings:
    host: str = "0.0.0.0"
    port: int = 8080
    grpc_port: int = 8081
    config_path: Path | None = None
    model_path: Path | None = None
    max_body_bytes: int = DEFAULT_MAX_BODY
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    shadow_timeout_ms: int = DEFAULT_SHADOW_TIMEOUT_MS
    body_timeout_seconds: int = 30
    cache_versions: int = 5
    echo_limit_bytes: int = 65536
    allow_nan: bool = False
    cpus: int = 1
    infer_workers: int = 1
    debug: bool = False
    cache_dir: Path = field(default_factory=lambda: Path.home() / ".cache/edgepipe/engine")
    drain_seconds: int = 0
    shutdown_timeout: int = 20
    log_inferences: bool | None = None  # None: on in edge mode
    log_inputs: bool = False
    log_dir: Path | None = None
    log_segment_records: int = 1000
    log_segment_seconds: float = 10.0
    log_upload_seconds: float = 10.0
    local_storage: int = 2**30
    edge_name: str | None = None
    oci: OciSettings | None = None  # set in edge mode (PIPELINE_URL)
    registry: OciSettings = field(default_factory=lambda: OciSettings(pipeline_url=""))

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env

        def path(key: str) -> Path | None:
            raw = env.get(PREFIX + key)
            return Path(raw) if raw else None

        # The OCI_* login serves edge mode and, in the cluster, oci:// model references.
        registry = OciSettings(
            pipeline_url=env.get("PIPELINE_URL") or "",
            registry=env.get("OCI_REGISTRY") or None,
            username=env.get("OCI_USERNAME") or None,
            password=env.get("OCI_PASSWORD") or None,
            plain_http=_bool(env, "OCI_PLAIN_HTTP", False),
            auth_file=Path(env["OCI_AUTH_FILE"]) if env.get("OCI_AUTH_FILE") else None,
            verify_key=env.get("OCI_VERIFY_KEY") or None,
        )
        oci = registry if registry.pipeline_url else None
        defaults = cls()
        return cls(
            host=env.get(PREFIX + "HOST") or defaults.host,
            port=_int(env, PREFIX + "PORT", defaults.port),
            grpc_port=_int(env, PREFIX + "GRPC_PORT", defaults.grpc_port),
            config_path=path("CONFIG"),
            model_path=path("MODEL"),
            max_body_bytes=_int(env, PREFIX + "MAX_BODY_BYTES", defaults.max_body_bytes, 1),
            max_image_pixels=_int(env, PREFIX + "MAX_IMAGE_PIXELS", defaults.max_image_pixels, 1),
            shadow_timeout_ms=_int(env, PREFIX + "SHADOW_TIMEOUT_MS", defaults.shadow_timeout_ms),
            body_timeout_seconds=_int(
                env, PREFIX + "BODY_TIMEOUT_SECONDS", defaults.body_timeout_seconds, 1
            ),
            cache_versions=_int(env, PREFIX + "CACHE_VERSIONS", defaults.cache_versions, 1),
            echo_limit_bytes=_int(env, PREFIX + "ECHO_LIMIT_BYTES", defaults.echo_limit_bytes),
            allow_nan=_bool(env, PREFIX + "ALLOW_NAN", False),
            cpus=_cpus(env),
            infer_workers=_int(env, PREFIX + "INFER_WORKERS", 1, 1),
            debug=_bool(env, "DEBUG", False),
            cache_dir=path("CACHE_DIR") or defaults.cache_dir,
            drain_seconds=_int(env, PREFIX + "DRAIN_SECONDS", defaults.drain_seconds),
            shutdown_timeout=_int(env, PREFIX + "SHUTDOWN_TIMEOUT", defaults.shutdown_timeout),
            log_inferences=_bool(env, PREFIX + "LOG_INFERENCES", oci is not None),
            log_inputs=_bool(env, PREFIX + "LOG_INPUTS", False),
            log_dir=path("LOG_DIR"),
            log_segment_records=_int(env, PREFIX + "LOG_SEGMENT_RECORDS", 1000, 1),
            log_segment_seconds=_seconds(env, PREFIX + "LOG_SEGMENT_SECONDS", 10.0),
            log_upload_seconds=_seconds(env, PREFIX + "LOG_UPLOAD_SECONDS", 10.0),
            local_storage=_size(env, "LOCAL_INFERENCE_STORAGE", "1Gi"),
            edge_name=_edge_name(env),
            oci=oci,
            registry=registry,
        )

    @property
    def threads_per_call(self) -> int:
        """onnxruntime intra-op threads for one model call: the cores shared by the workers."""
        return max(1, self.cpus // self.infer_workers)

    def with_overrides(self, **changes: object) -> Settings:
        return replace(self, **{k: v for k, v in changes.items() if v is not None})
