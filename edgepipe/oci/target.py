"""Where a publish goes: a registry, an optional path prefix, credentials and transport."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .client import Client
from .refs import CHUNK, Credentials, OciError, speaks_plain_http


def file_digest(path: Path) -> tuple[str, int]:
    """(``sha256:<hex>``, size) of a file."""
    from edgepipe.config import file_sha256

    return "sha256:" + file_sha256(path, CHUNK), Path(path).stat().st_size


@dataclass(frozen=True)
class Target:
    """Where to push: ``registry[/prefix]``, credentials, and the transport."""

    registry: str
    prefix: str = ""
    credentials: Credentials = field(default_factory=Credentials)
    plain_http: bool = False

    @classmethod
    def parse(
        cls, url: str, credentials: Credentials | None = None, plain_http: bool | None = None
    ) -> Target:
        """``[oci://|http://|https://]host[:port][/prefix]``. A scheme says the transport
        (``http://``: plain HTTP) unless ``plain_http`` is given; without one, loopback
        registries speak plain HTTP."""
        raw = url.strip()
        scheme, sep, rest = raw.partition("://")
        if sep:
            if scheme not in ("oci", "http", "https"):
                raise OciError(
                    f"registry {url!r}: unknown scheme {scheme}://; expected host[:port][/prefix]"
                )
            raw = rest
            if plain_http is None and scheme != "oci":
                plain_http = scheme == "http"
        registry, _, prefix = raw.strip("/").partition("/")
        if not registry:
            raise OciError(f"registry {url!r}: expected host[:port][/prefix]")
        plain = speaks_plain_http(registry, plain_http)
        return cls(registry, prefix, credentials or Credentials(), plain)

    def repository(self, kind: str, name: str) -> str:
        return "/".join(p for p in (self.prefix, kind, name) if p)

    def client(self) -> Client:
        return Client(self.registry, self.credentials, plain_http=self.plain_http)
