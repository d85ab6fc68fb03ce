"""OCI names and failures: media types, references, credentials, publish targets."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = [
    "ANNOTATION",
    "CHUNK",
    "EMPTY_CONFIG",
    "HELM_CHART_LAYER",
    "HELM_CONFIG",
    "MANIFEST",
    "MODEL_ARTIFACT",
    "MODEL_LAYER",
    "PIPELINE_ARTIFACT",
    "PIPELINE_CONFIG",
    "AuthError",
    "Credentials",
    "CredentialsRequired",
    "DigestMismatch",
    "NotInRegistry",
    "OciError",
    "Progress",
    "Reference",
    "RegistryUnavailable",
    "is_loopback",
    "speaks_plain_http",
]

MODEL_ARTIFACT = "application/vnd.edgepipe.model.v1"
MODEL_LAYER = "application/vnd.edgepipe.model.onnx"
PIPELINE_ARTIFACT = "application/vnd.edgepipe.pipeline.v1"
PIPELINE_CONFIG = "application/vnd.edgepipe.pipeline.config.v1+json"
EMPTY_CONFIG = "application/vnd.oci.empty.v1+json"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
# Helm's own media types: `helm pull oci://…` accepts a manifest with exactly these.
HELM_CONFIG = "application/vnd.cncf.helm.config.v1+json"
HELM_CHART_LAYER = "application/vnd.cncf.helm.chart.content.v1.tar+gzip"
ANNOTATION = "io.edgepipe.model"
CHUNK = 4 * 1024 * 1024

Progress = Callable[[int, int], None]  # (bytes done, bytes total)


class OciError(RuntimeError):
    """A registry operation failed; the message says which and why."""


class RegistryUnavailable(OciError):
    """The registry could not be reached or failed (5xx): worth retrying later."""


class AuthError(OciError):
    """The registry refused the credentials (401/403): retrying will not help."""


class CredentialsRequired(AuthError):
    """The registry asks for a login and none was given."""

    def __init__(self, registry: str) -> None:
        super().__init__(
            f"registry {registry} needs credentials and none were given: set OCI_USERNAME "
            "and OCI_PASSWORD (the CLI also takes -u/-p), or name a Secret "
            "(spec.registry.secretRef of a Pipeline or a Publish; --secret for "
            "'edgepipe publish create')"
        )
        self.registry = registry


class NotInRegistry(OciError):
    """No such repository, tag or blob."""


class DigestMismatch(OciError):
    """Downloaded bytes do not match their digest."""


@dataclass(frozen=True)
class Reference:
    """``[oci://]registry/repository[:tag][@sha256:digest][?path=FILE]``.

    ``path`` (models only) names one file of an artifact or image that holds several: a
    ModelPack weight's ``org.cncf.model.filepath``, or a file under a modelcar's ``/models``.
    """

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None
    path: str | None = None

    @classmethod
    def parse(cls, ref: str) -> Reference:
        raw, _, query = ref.removeprefix("oci://").partition("?")
        path = None
        if query:
            key, _, path = query.partition("=")
            if key != "path" or not path:
                raise OciError(f"{ref}: expected ?path=FILE after the reference")
        digest = None
        if "@" in raw:
            raw, digest = raw.split("@", 1)
            if not digest.startswith("sha256:") or len(digest) != 71:
                raise OciError(f"{ref}: expected @sha256:<64 hex digits>")
        registry, _, rest = raw.partition("/")
        if not rest or ("." not in registry and ":" not in registry and registry != "localhost"):
            raise OciError(
                f"{ref}: expected registry/repository, e.g. registry.example.com/models/x"
            )
        tag = None
        last = rest.rsplit("/", 1)[-1]
        if ":" in last:
            rest, tag = rest.rsplit(":", 1)
        return cls(registry, rest, tag, digest, path)

    @property
    def target(self) -> str:
        """What oras calls a container: ``registry/repo:tag`` or ``registry/repo@digest``."""
        if self.digest:
            return f"{self.registry}/{self.repository}@{self.digest}"
        return f"{self.registry}/{self.repository}:{self.tag or 'latest'}"

    def __str__(self) -> str:
        out = f"{self.registry}/{self.repository}"
        if self.tag:
            out += f":{self.tag}"
        if self.digest:
            out += f"@{self.digest}"
        if self.path:
            out += f"?path={self.path}"
        return out


@dataclass(frozen=True)
class Credentials:
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls, prefix: str = "OCI_") -> Credentials:
        return cls(
            os.environ.get(prefix + "USERNAME") or None, os.environ.get(prefix + "PASSWORD") or None
        )

    @classmethod
    def from_docker_config(cls, text: str, registry: str | None = None) -> Credentials | None:
        """The login for ``registry`` in a ``.dockerconfigjson`` document (the only entry
        when no registry is named, or when none matches); None when it has no login."""
        try:
            auths = json.loads(text).get("auths", {})
        except (ValueError, AttributeError):
            raise OciError("the docker config is not a JSON object with 'auths'") from None
        entries = list(auths.items())
        if registry is not None:
            entries = [(k, v) for k, v in entries if _host(k) == registry] or entries
        for _, entry in entries:
            if entry.get("auth"):
                user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
                return cls(user, password)
            if entry.get("username"):
                return cls(entry["username"], entry.get("password"))
        return None


def _host(key: str) -> str:
    """``https://registry:5000/v1/`` or ``registry:5000`` -> ``registry:5000``."""
    return key.split("://", 1)[-1].split("/", 1)[0]


def is_loopback(registry: str) -> bool:
    """Registries on loopback are assumed to speak plain HTTP, as helm and oras assume."""
    if registry.startswith("["):  # [::1]:5000
        host = registry.partition("]")[0] + "]"
    else:
        host = registry.rsplit(":", 1)[0] if registry.count(":") == 1 else registry
    return host in ("localhost", "127.0.0.1", "[::1]")


def speaks_plain_http(registry: str, plain_http: bool | None = None) -> bool:
    """Whether to speak plain HTTP to ``registry``: ``plain_http`` when it is given (a
    ``--plain-http`` flag, a Publish's ``plainHttp``, ``OCI_PLAIN_HTTP``), else only on
    loopback. The CLI, the operator and the engine all decide with this one rule."""
    return is_loopback(registry) if plain_http is None else plain_http
