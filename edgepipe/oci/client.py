"""A registry session on the oras SDK: manifests, blobs, uploads, cross-repository mounts.

Registries answer either ``Basic`` challenges (Debian's ``docker-registry`` with htpasswd)
or ``Bearer`` token challenges (GHCR, Harbor, ECR). oras-py handles each with a different
backend, so the client reads the registry's challenge and picks one (``auth="auto"``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import oras.auth
import oras.container
import oras.defaults
import oras.provider
import requests

from .refs import (
    CHUNK,
    MANIFEST,
    AuthError,
    Credentials,
    CredentialsRequired,
    DigestMismatch,
    NotInRegistry,
    OciError,
    Progress,
    Reference,
    RegistryUnavailable,
)

log = logging.getLogger("edgepipe.oci")
# A blob download cut mid-way is resumed this many times in all, after 0.5, 1, 2, ... s.
PULL_ATTEMPTS = 6
PULL_BACKOFF = 0.5


class _Registry(oras.provider.Registry):
    def do_request(self, *args: Any, **kwargs: Any) -> requests.Response:
        # oras-py retries failed requests for about two minutes, sleeping in between. We
        # report them at once and let the caller (kopf's back-off, a CLI user) decide.
        basic = getattr(self.auth, "_basic_auth", None)
        if len(args) < 4 and isinstance(self.auth, oras.auth.BasicAuth) and basic:
            # oras sends the login only after a 401: every request would be two.
            kwargs["headers"] = {**(kwargs.get("headers") or {}), **self.auth.get_auth_header()}
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
            if auth == "basic" and not (creds.username and creds.password):
                # A Basic challenge on /v2/ means nothing is served without a login.
                raise CredentialsRequired(registry)
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
            raise NotInRegistry(f"{what}: not found in {self.registry}")
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

    def get_manifest(self, ref: Reference, accept: str = MANIFEST) -> tuple[dict[str, Any], str]:
        """The manifest and its digest (``accept``: the media types asked for, e.g. an
        image index's too)."""
        raw, digest = self.get_manifest_bytes(ref, accept)
        return json.loads(raw), digest

    def get_manifest_bytes(self, ref: Reference, accept: str = MANIFEST) -> tuple[bytes, str]:
        """The manifest as the registry holds it (what its digest and a signature cover)."""
        container = self._container(ref.repository)
        url = f"{self.scheme}://{self.registry}/v2/{ref.repository}/manifests/" + (
            ref.digest or ref.tag or "latest"
        )
        self.reg.auth.load_configs(container)
        resp = self._check(
            self.reg.do_request(url, "GET", headers={"Accept": accept}), f"manifest {ref}"
        )
        digest = "sha256:" + hashlib.sha256(resp.content).hexdigest()
        if ref.digest and digest != ref.digest:
            raise DigestMismatch(f"manifest {ref}: content has digest {digest}")
        return resp.content, digest

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

    def check_push(self, repository: str) -> None:
        """AuthError unless these credentials may push to ``repository`` (an upload session
        is opened and cancelled; nothing is written)."""
        _, location = self._start_upload(repository)
        if location:
            self.reg.do_request(location, "DELETE")

    def repositories(self) -> list[str]:
        """Every repository (the registry's ``_catalog``)."""
        repos: list[str] = []
        url: str | None = f"{self.scheme}://{self.registry}/v2/_catalog?n=1000"
        while url:
            resp = self._check(self.reg.do_request(url, "GET"), "catalog")
            repos += resp.json().get("repositories") or []
            url = self.next_page(resp)
        return repos

    def next_page(self, resp: requests.Response) -> str | None:
        """The URL of the page after ``resp``'s of a paged list (catalog, tags), or None."""
        # Pages are chained with a Link header: </v2/<repo>/tags/list?last=...&n=...>; rel="next"
        link = resp.headers.get("Link", "")
        if 'rel="next"' not in link:
            return None
        return f"{self.scheme}://{self.registry}{link[1 : link.index('>')]}"

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

    def push_bytes(self, repository: str, data: bytes, media_type: str) -> dict[str, Any]:
        """Upload a small blob (a config, a chart) unless the repository has it; its
        descriptor for a manifest."""
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        descriptor = {"mediaType": media_type, "digest": digest, "size": len(data)}
        if self.blob_exists(repository, digest):
            return descriptor
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
        return descriptor

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
        self,
        repository: str,
        digest: str,
        dest: Path,
        progress: Progress | None = None,
        attempts: int = PULL_ATTEMPTS,
        max_bytes: int | None = None,
    ) -> Path:
        """Download a blob to ``dest`` atomically: temp file, verify the digest, rename.

        A connection cut mid-blob is picked up where it stopped (an HTTP Range request,
        the hash carried on), or from the start if the registry ignores the range; up to
        ``attempts`` connections, with a short back-off. Only a whole file with the right
        digest is ever renamed into place; past ``max_bytes`` the download stops (OciError).
        """
        url = f"{self.scheme}://{self.registry}/v2/{repository}/blobs/{digest}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        h = hashlib.sha256()
        total = done = 0
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.")
        try:
            with os.fdopen(fd, "wb") as f:
                for attempt in range(attempts):
                    headers = {"Range": f"bytes={done}-"} if done else {}
                    try:
                        resp = self._check(
                            self.reg.do_request(url, "GET", headers=headers, stream=True),
                            f"blob {digest}",
                        )
                        if done and resp.status_code != 206:  # range ignored: from the start
                            f.seek(0)
                            f.truncate()
                            h, done = hashlib.sha256(), 0
                        if not done:
                            total = int(resp.headers.get("Content-Length") or 0)
                        for chunk in resp.iter_content(CHUNK):
                            f.write(chunk)
                            h.update(chunk)
                            done += len(chunk)
                            if max_bytes is not None and done > max_bytes:
                                raise OciError(
                                    f"blob {digest} from {self.registry}/{repository} is over "
                                    f"{max_bytes} bytes; refusing it"
                                )
                            if progress:
                                progress(done, total)
                        if total and done < total:
                            raise requests.exceptions.ConnectionError(
                                f"the connection closed after {done} of {total} bytes"
                            )
                        break
                    except (RegistryUnavailable, requests.exceptions.RequestException) as exc:
                        if attempt + 1 >= attempts:
                            raise RegistryUnavailable(
                                f"blob {digest} from {self.registry}: {attempts} attempts, "
                                f"{done} of {total or '?'} bytes: {exc}"
                            ) from None
                        log.warning(
                            "blob %s: cut after %d of %s bytes (%s); resuming",
                            digest,
                            done,
                            total or "?",
                            exc,
                        )
                        time.sleep(PULL_BACKOFF * 2**attempt)
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
