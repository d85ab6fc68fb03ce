"""Model references checked and resolved before an engine has to fetch them, with the
Pipeline's registry login (for the Pipeline and the Publish reconcilers alike)."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

from edgepipe.config import ConfigError, ModelRef
from edgepipe.resources import ModelRegistry, PipelineSpec

from .kube import Kube
from .registry import Login, login_from_secret
from .settings import OperatorSettings


class ModelUnreachable(Exception):
    """A model reference that did not answer; maybe transient."""


def pipeline_login(kube: Kube, spec: PipelineSpec, namespace: str) -> Login | None:
    """The login of the Pipeline's model registry, from its Secret (None without one)."""
    if spec.registry is None or spec.registry.secret_ref is None:
        return None
    name = spec.registry.secret_ref.name
    return login_from_secret(kube.read_secret(name, namespace), name)


@dataclass(frozen=True)
class Resolver:
    """``resolver(field, ref)`` checks and resolves one model reference; ``outputs_of``
    then knows the output names of the ``oci://`` models whose manifests it read."""

    resolve: Callable[[str, ModelRef], ModelRef]
    outputs: dict[str, list[str]]  # by spec field path, filled as manifests are read

    def __call__(self, where: str, ref: ModelRef) -> ModelRef:
        return self.resolve(where, ref)

    def outputs_of(self, where: str, ref: ModelRef) -> list[str] | None:
        return self.outputs.get(f"spec.{where}")


def make_resolver(
    settings: OperatorSettings, login: Login | None = None, registry: ModelRegistry | None = None
) -> Resolver:
    """Checks each model reference the engine will have to fetch.

    ``path`` models live in the engine's image or a volume and cannot be checked from here.
    ``http(s)`` URLs must answer a HEAD request. ``oci://`` references are resolved to the
    model file's sha256 through the registry, with the Pipeline's registry login.
    """
    credentials = login.credentials if login else None
    outputs: dict[str, list[str]] = {}
    plain_http = registry.plain_http if registry is not None else None  # None: loopback

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
                info = oci.model_info(ref.url, credentials, plain_http)
            except oci.RegistryUnavailable as exc:
                raise ModelUnreachable(f"{field}.url: {exc}") from None
            except oci.OciError as exc:
                raise ConfigError(f"{field}.url: {exc}", f"{field}.url") from None
            if info.outputs is not None:  # the manifest lists them: the rules can be checked
                outputs[field] = info.outputs
            return ref.model_copy(update={"sha256": info.sha256})
        return ref

    return Resolver(resolve, outputs)
