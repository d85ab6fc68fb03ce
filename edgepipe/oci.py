"""OCI artifacts for models and pipelines, on the oras SDK.

- A **model** is an artifact of type ``application/vnd.edgepipe.model.v1``: an empty config
  and one layer, the ONNX file (``application/vnd.edgepipe.model.onnx``), annotated with
  its name, version, sha256, runtime and input/output signatures. Its reference is
  ``oci://<registry>/<prefix>/models/<name>@sha256:<manifest digest>``.
- A **pipeline** is an artifact of type ``application/vnd.edgepipe.pipeline.v1`` whose config
  blob is the pipeline config document (the engine's own bytes) and whose layers are the
  models, by digest.

Registries answer either ``Basic`` challenges (Debian's ``docker-registry`` with htpasswd)
or ``Bearer`` token challenges (GHCR, Harbor, ECR). oras-py handles each with a different
backend, so ``connect`` reads the registry's challenge and picks one (``auth="auto"``).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import oras.auth
import oras.container
import oras.defaults
import oras.provider
import requests

MODEL_ARTIFACT = "application/vnd.edgepipe.model.v1"
MODEL_LAYER = "application/vnd.edgepipe.model.onnx"
PIPELINE_ARTIFACT = "application/vnd.edgepipe.pipeline.v1"
PIPELINE_CONFIG = "application/vnd.edgepipe.pipeline.config.v1+json"
EMPTY_CONFIG = "application/vnd.oci.empty.v1+json"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
ANNOTATION = "io.edgepipe.model"
CHUNK = 4 * 1024 * 1024

Progress = Callable[[int, int], None]  # (bytes done, bytes total)


class OciError(RuntimeError):
    """A registry operation failed; the message says which and why."""


class RegistryUnavailable(OciError):
    """The registry could not be reached or failed (5xx): worth retrying later."""


class AuthError(OciError):
    """The registry refused the credentials (401/403): retrying will not help."""


class NotFound(OciError):
    """No such repository, tag or blob."""


class DigestMismatch(OciError):
    """Downloaded bytes do not match their digest."""


@dataclass(frozen=True)
class Reference:
    """``[oci://]registry/repository[:tag][@sha256:digest]``."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @classmethod
    def parse(cls, ref: str) -> Reference:
        raw = ref.removeprefix("oci://")
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
        return cls(registry, rest, tag, digest)

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
        return out


@dataclass(frozen=True)
class Credentials:
    username: str | None = None
    password: str | None = None

    @classmethod
    def from_env(cls, prefix: str = "OCI_") -> Credentials:
        return cls(
            os.environ.get(prefix + "USERNAME") or None, os.environ.get(prefix + "PASSWORD") or None
        )


class _Registry(oras.provider.Registry):
    def do_request(self, *args: Any, **kwargs: Any) -> requests.Response:
        # oras-py retries failed requests for about two minutes, sleeping in between. We
        # report them at once and let the caller (kopf's back-off, a CLI user) decide.
        try:
            return oras.provider.Registry.do_request.__wrapped__(self, *args, **kwargs)
        except requests.exceptions.SSLError as exc:
            raise OciError(_tls_message(self.hostname, exc)) from None
        except requests.exceptions.ConnectionError as exc:
            raise RegistryUnavailable(f"cannot reach registry {self.hostname}: {exc}") from None
        except ValueError as exc:  # oras: "Cannot respond to request for authentication."
            raise AuthError(f"registry {self.hostname} refused the credentials: {exc}") from None


def _tls_message(registry: str | None, exc: Exception) -> str:
    # A TLS failure will not fix itself: often the registry speaks plain HTTP.
    return (
        f"TLS handshake with registry {registry} failed ({exc}); if it speaks plain "
        "HTTP, use --plain-http (plainHttp: true in a Publish, OCI_PLAIN_HTTP=true)"
    )


def _challenge(registry: str, plain_http: bool, verify: bool | str) -> str:
    scheme = "http" if plain_http else "https"
    try:
        resp = requests.get(f"{scheme}://{registry}/v2/", timeout=10, verify=verify)
    except requests.exceptions.SSLError as exc:
        raise OciError(_tls_message(registry, exc)) from None
    except requests.exceptions.RequestException as exc:
        raise RegistryUnavailable(f"cannot reach registry {registry}: {exc}") from None
    if resp.status_code >= 500:
        raise RegistryUnavailable(f"registry {registry} answered {resp.status_code}")
    return resp.headers.get("WWW-Authenticate", "")


class Client:
    """A registry session: pushes and pulls models and pipelines."""

    def __init__(
        self,
        registry: str,
        credentials: Credentials | None = None,
        *,
        plain_http: bool = False,
        auth: str = "auto",
        verify: bool | str = True,
    ) -> None:
        self.registry = registry
        self.plain_http = plain_http
        creds = credentials or Credentials()
        if auth == "auto":
            challenge = _challenge(registry, plain_http, verify)
            auth = "basic" if challenge.lower().startswith("basic") else "token"
        self.reg = _Registry(
            hostname=registry, insecure=plain_http, tls_verify=verify, auth_backend=auth
        )
        if creds.username and creds.password:
            self.reg.auth.set_basic_auth(creds.username, creds.password)
        self.scheme = "http" if plain_http else "https"

    # -- low level -----------------------------------------------------------------------

    def _check(self, resp: requests.Response, what: str) -> requests.Response:
        if resp.status_code in (401, 403):
            raise AuthError(
                f"{what}: registry {self.registry} refused the credentials "
                f"(HTTP {resp.status_code})"
            )
        if resp.status_code == 404:
            raise NotFound(f"{what}: not found in {self.registry}")
        if resp.status_code >= 500:
            raise RegistryUnavailable(
                f"{what}: registry {self.registry} answered {resp.status_code}"
            )
        if resp.status_code >= 400:
            raise OciError(f"{what}: HTTP {resp.status_code}: {resp.text[:300]}")
        return resp

    def _container(self, repository: str, tag: str | None = None) -> oras.container.Container:
        name = f"{self.registry}/{repository}" + (f":{tag}" if tag else "")
        return oras.container.Container(name, registry=self.registry)

    def get_manifest(self, ref: Reference) -> tuple[dict[str, Any], str]:
        """The manifest and its digest."""
        container = self._container(ref.repository)
        url = f"{self.scheme}://{self.registry}/v2/{ref.repository}/manifests/" + (
            ref.digest or ref.tag or "latest"
        )
        self.reg.auth.load_configs(container)
        resp = self._check(
            self.reg.do_request(url, "GET", headers={"Accept": MANIFEST}), f"manifest {ref}"
        )
        digest = "sha256:" + hashlib.sha256(resp.content).hexdigest()
        if ref.digest and digest != ref.digest:
            raise DigestMismatch(f"manifest {ref}: content has digest {digest}")
        return resp.json(), digest

    def _start_upload(self, repository: str) -> tuple[oras.container.Container, str]:
        """Open an upload session; (container, session URL)."""
        container = self._container(repository)
        start = self._check(
            self.reg.do_request(
                f"{self.scheme}://{container.upload_blob_url()}",
                "POST",
                headers={"Content-Length": "0"},
            ),
            f"upload to {repository}",
        )
        return container, self.reg._get_location(start, container)

    def repositories(self) -> list[str]:
        """Every repository (the registry's ``_catalog``)."""
        repos: list[str] = []
        url: str | None = f"{self.scheme}://{self.registry}/v2/_catalog?n=1000"
        while url:
            resp = self._check(self.reg.do_request(url, "GET"), "catalog")
            repos += resp.json().get("repositories") or []
            # Pages are chained with a Link header: </v2/_catalog?last=...&n=...>; rel="next"
            link = resp.headers.get("Link", "")
            url = (
                f"{self.scheme}://{self.registry}{link[1 : link.index('>')]}"
                if 'rel="next"' in link
                else None
            )
        return repos

    def tags(self, repository: str) -> list[str]:
        url = f"{self.scheme}://{self.registry}/v2/{repository}/tags/list"
        return (
            self._check(self.reg.do_request(url, "GET"), f"tags of {repository}").json().get("tags")
            or []
        )

    def blob_exists(self, repository: str, digest: str) -> bool:
        url = f"{self.scheme}://{self.registry}/v2/{repository}/blobs/{digest}"
        resp = self.reg.do_request(url, "HEAD")
        if resp.status_code == 404:
            return False
        self._check(resp, f"blob {digest}")
        return True

    def push_blob(
        self, repository: str, path: Path, digest: str, size: int, progress: Progress | None = None
    ) -> bool:
        """Upload a file as a blob unless the repository has it; True when uploaded.

        oras-py's uploads read the whole file into memory or hide progress, so the chunks
        go through its authenticated request helper here, one PATCH per 4 MiB.
        """
        if self.blob_exists(repository, digest):
            if progress:
                progress(size, size)
            return False
        container, location = self._start_upload(repository)
        done = 0
        with open(path, "rb") as f:
            while chunk := f.read(CHUNK):
                resp = self._check(
                    self.reg.do_request(
                        location,
                        "PATCH",
                        data=chunk,
                        headers={
                            "Content-Type": "application/octet-stream",
                            "Content-Range": f"{done}-{done + len(chunk) - 1}",
                            "Content-Length": str(len(chunk)),
                        },
                    ),
                    f"upload to {repository}",
                )
                location = self.reg._get_location(resp, container)
                done += len(chunk)
                if progress:
                    progress(done, size)
        sep = "&" if "?" in location else "?"
        self._check(
            self.reg.do_request(
                f"{location}{sep}digest={digest}", "PUT", headers={"Content-Length": "0"}
            ),
            f"upload to {repository}",
        )
        return True

    def mount_blob(self, repository: str, digest: str, source: str) -> bool:
        """Cross-repository mount of a blob this registry already has; True when mounted.

        oras-py has no mount call, so this is the one raw request: POST with ``mount`` and
        ``from``. A registry that declines answers 202 with an upload session, which is
        cancelled; the caller then copies the blob.
        """
        container = self._container(repository)
        url = f"{self.scheme}://{container.upload_blob_url()}?mount={digest}&from={source}"
        resp = self.reg.do_request(url, "POST", headers={"Content-Length": "0"})
        if resp.status_code == 201:
            return True
        if resp.status_code == 202:
            location = self.reg._get_location(resp, container)
            if location:
                self.reg.do_request(location, "DELETE")
            return False
        self._check(resp, f"mount {digest} into {repository}")
        return False

    def get_blob(self, repository: str, digest: str) -> bytes:
        """A small blob (a config) in memory, verified."""
        url = f"{self.scheme}://{self.registry}/v2/{repository}/blobs/{digest}"
        data = self._check(self.reg.do_request(url, "GET"), f"blob {digest}").content
        actual = "sha256:" + hashlib.sha256(data).hexdigest()
        if actual != digest:
            raise DigestMismatch(f"blob {digest} from {repository} has digest {actual}")
        return data

    def push_bytes(self, repository: str, data: bytes, digest: str) -> None:
        if self.blob_exists(repository, digest):
            return
        _, location = self._start_upload(repository)
        sep = "&" if "?" in location else "?"
        self._check(
            self.reg.do_request(
                f"{location}{sep}digest={digest}",
                "PUT",
                data=data,
                headers={
                    "Content-Type": "application/octet-stream",
                    "Content-Length": str(len(data)),
                },
            ),
            f"upload to {repository}",
        )

    def put_manifest(self, repository: str, manifest: dict[str, Any], tag: str | None) -> str:
        body = json.dumps(manifest, separators=(",", ":"), sort_keys=True).encode()
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        url = f"{self.scheme}://{self.registry}/v2/{repository}/manifests/{tag or digest}"
        self._check(
            self.reg.do_request(url, "PUT", data=body, headers={"Content-Type": MANIFEST}),
            f"manifest for {repository}",
        )
        return digest

    def pull_blob(
        self, repository: str, digest: str, dest: Path, progress: Progress | None = None
    ) -> Path:
        """Download a blob to ``dest`` atomically: temp file, verify the digest, rename."""
        url = f"{self.scheme}://{self.registry}/v2/{repository}/blobs/{digest}"
        resp = self._check(self.reg.do_request(url, "GET", stream=True), f"blob {digest}")
        dest.parent.mkdir(parents=True, exist_ok=True)
        h = hashlib.sha256()
        total = int(resp.headers.get("Content-Length") or 0)
        done = 0
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.")
        try:
            with os.fdopen(fd, "wb") as f:
                for chunk in resp.iter_content(CHUNK):
                    f.write(chunk)
                    h.update(chunk)
                    done += len(chunk)
                    if progress:
                        progress(done, total)
            actual = "sha256:" + h.hexdigest()
            if actual != digest:
                raise DigestMismatch(
                    f"blob {digest} from {self.registry}/{repository}: got {done} bytes with "
                    f"digest {actual}; refusing it"
                )
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return dest


def file_digest(path: Path) -> tuple[str, int]:
    """(``sha256:<hex>``, size) of a file."""
    from .config import file_sha256

    return "sha256:" + file_sha256(path, CHUNK), Path(path).stat().st_size


def _signature(path: Path) -> tuple[list[dict], list[dict]]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def sig(args) -> list[dict]:
        return [
            {
                "name": a.name,
                "type": a.type,
                "shape": [d if isinstance(d, int) else str(d) for d in a.shape],
            }
            for a in args
        ]

    return sig(session.get_inputs()), sig(session.get_outputs())


@dataclass(frozen=True)
class PushedModel:
    reference: str  # oci://registry/repo@sha256:<manifest digest>
    sha256: str  # the ONNX file's
    manifest_digest: str
    uploaded: bool  # False when the registry already had the file


def push_model(
    client: Client,
    path: str | Path,
    *,
    name: str,
    repository: str,
    version: str | None = None,
    progress: Progress | None = None,
) -> PushedModel:
    """Push an ONNX file as a model artifact; re-pushing the same file uploads nothing."""
    from .config import digest_to_uuid

    path = Path(path)
    digest, size = file_digest(path)
    sha = digest.removeprefix("sha256:")
    inputs, outputs = _signature(path)
    version = version or digest_to_uuid(sha)
    uploaded = client.push_blob(repository, path, digest, size, progress)
    empty = b"{}"
    empty_digest = "sha256:" + hashlib.sha256(empty).hexdigest()
    client.push_bytes(repository, empty, empty_digest)
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "artifactType": MODEL_ARTIFACT,
        "config": {"mediaType": EMPTY_CONFIG, "digest": empty_digest, "size": len(empty)},
        "layers": [
            {
                "mediaType": MODEL_LAYER,
                "digest": digest,
                "size": size,
                "annotations": {
                    "org.opencontainers.image.title": path.name,
                    f"{ANNOTATION}.name": name,
                    f"{ANNOTATION}.version": version,
                    f"{ANNOTATION}.sha256": sha,
                    f"{ANNOTATION}.runtime": "onnx",
                    f"{ANNOTATION}.inputs": json.dumps(inputs, separators=(",", ":")),
                    f"{ANNOTATION}.outputs": json.dumps(outputs, separators=(",", ":")),
                },
            }
        ],
        "annotations": {f"{ANNOTATION}.name": name, f"{ANNOTATION}.version": version},
    }
    manifest_digest = client.put_manifest(repository, manifest, tag=version)
    ref = f"oci://{client.registry}/{repository}@{manifest_digest}"
    return PushedModel(ref, sha, manifest_digest, uploaded)


def model_layer(manifest: dict[str, Any], ref: object) -> dict[str, Any]:
    for layer in manifest.get("layers", []):
        if layer.get("mediaType") == MODEL_LAYER:
            return layer
    raise OciError(f"{ref} is not an edgepipe model (no {MODEL_LAYER} layer)")


def model_sha256(
    url: str, credentials: Credentials | None = None, plain_http: bool | None = None
) -> str:
    """The ONNX file's sha256 behind an ``oci://`` model reference."""
    ref = Reference.parse(url)
    if plain_http is None:
        plain_http = is_loopback(ref.registry)
    client = Client(ref.registry, credentials, plain_http=plain_http)
    manifest, _ = client.get_manifest(ref)
    return model_layer(manifest, ref)["digest"].removeprefix("sha256:")


def is_loopback(registry: str) -> bool:
    """Registries on loopback are assumed to speak plain HTTP, as helm and oras assume."""
    host = registry.rsplit(":", 1)[0] if registry.count(":") == 1 else registry
    return host in ("localhost", "127.0.0.1", "[::1]")
