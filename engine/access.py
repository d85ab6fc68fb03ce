"""Who may call the engine: bearer tokens (from env, or a file re-read when it changes), the
HTTP middleware that asks for one, and the TLS files (re-read when they change)."""

from __future__ import annotations

import asyncio
import hmac
import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from .errors import Forbidden, StartupError, Unauthorized
from .settings import Settings

log = logging.getLogger("edgepipe.engine")

# How often the token file and the TLS files are checked for a change (a stat each).
RELOAD_SECONDS = 1.0
# Routes open without a token: the probes. Every other route, and an unknown path, needs one.
OPEN_ROUTES = frozenset({"/health/live", "/health/ready", "/v2/health/live", "/v2/health/ready"})
METRICS_ROUTE = "/metrics"

Stamp = tuple[int, int, int] | None  # (inode, mtime ns, size) of a file, None if missing


def stamp(path: Path) -> Stamp:
    """What changes when a file is rewritten or replaced (a Secret's symlink swap too)."""
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def split_tokens(text: str) -> tuple[bytes, ...]:
    """Tokens separated by commas or newlines; blanks dropped."""
    parts = text.replace("\n", ",").split(",")
    return tuple(p.strip().encode() for p in parts if p.strip())


@dataclass
class Tokens:
    """The tokens valid now: the env's, plus the token file's as last read."""

    fixed: tuple[bytes, ...] = ()
    path: Path | None = None
    from_file: tuple[bytes, ...] = ()
    seen: Stamp = None

    @classmethod
    def from_settings(cls, settings: Settings) -> Tokens:
        tokens = cls(split_tokens(settings.api_token or ""), settings.api_token_file)
        if tokens.path is not None and not tokens.reload():
            raise StartupError(
                f"EDGEPIPE_ENGINE_API_TOKEN_FILE={tokens.path}: cannot read the file"
            )
        return tokens

    @property
    def enabled(self) -> bool:
        """Whether requests need a token (a token file with no tokens refuses every one)."""
        return bool(self.fixed) or self.path is not None

    def reload(self) -> bool:
        """Re-read the token file if it changed (blocking: run it off the loop). False when
        it cannot be read; the tokens read before stay valid."""
        assert self.path is not None
        now = stamp(self.path)
        if now is not None and now == self.seen:
            return True
        try:
            text = self.path.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            if self.seen is not None:  # once, not every second while it stays unreadable
                log.warning("EDGEPIPE_ENGINE_API_TOKEN_FILE=%s: cannot read it: %s", self.path, exc)
            self.seen = None
            return False
        tokens = split_tokens(text)
        if self.seen is not None:
            log.info("token file %s changed: %d token(s) valid", self.path, len(tokens))
        self.from_file, self.seen = tokens, now
        return True

    def check(self, header: str | None) -> None:
        """Unauthorized without a bearer token, Forbidden when it is none of the valid ones.

        Every valid token is compared, each in constant time, so the time taken says
        nothing about which one, or how much of one, matched.
        """
        if not header:
            raise Unauthorized(
                "this engine needs a token: send the header 'Authorization: Bearer <token>'",
                "authorization",
            )
        scheme, _, given = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            raise Unauthorized("the Authorization header is not 'Bearer <token>'", "authorization")
        offered = given.strip().encode("utf-8", "replace")  # never raises, never matches
        match = False
        for token in (*self.fixed, *self.from_file):
            match |= hmac.compare_digest(token, offered)
        if not match:
            raise Forbidden("the bearer token is not one this engine accepts", "authorization")


def middleware(tokens: Tokens, metrics_open: bool) -> Callable[..., Awaitable[web.StreamResponse]]:
    """Asks every request for a token, except the probes' (and ``/metrics`` when open).

    It decides on the route aiohttp matched, not on the raw path, so that no spelling of a
    path reaches a protected handler as an open one.
    """
    open_routes = OPEN_ROUTES | ({METRICS_ROUTE} if metrics_open else set())

    @web.middleware
    async def auth(request: web.Request, handler) -> web.StreamResponse:
        resource = request.match_info.route.resource
        if resource is None or resource.canonical not in open_routes:
            tokens.check(request.headers.get("Authorization"))
        return await handler(request)

    return auth


@dataclass
class TlsFiles:
    """The certificate, key and optional client CA, and what was last loaded from them."""

    cert: Path
    key: Path
    client_ca: Path | None = None
    context: ssl.SSLContext = field(init=False)
    pem: tuple[bytes, bytes, bytes | None] = field(init=False)  # key, chain, client CA
    version: int = 0  # counts reloads; the gRPC credentials fetcher compares it
    seen: tuple[Stamp, ...] = ()

    @classmethod
    def from_settings(cls, settings: Settings) -> TlsFiles | None:
        if settings.tls_cert is None and settings.tls_key is None:
            if settings.tls_client_ca is not None:
                raise StartupError(
                    "EDGEPIPE_ENGINE_TLS_CLIENT_CA needs EDGEPIPE_ENGINE_TLS_CERT and _TLS_KEY"
                )
            return None
        if settings.tls_cert is None or settings.tls_key is None:
            missing = "CERT" if settings.tls_cert is None else "KEY"
            raise StartupError(
                f"EDGEPIPE_ENGINE_TLS_{missing} is not set: TLS needs both "
                "EDGEPIPE_ENGINE_TLS_CERT and EDGEPIPE_ENGINE_TLS_KEY"
            )
        files = cls(settings.tls_cert, settings.tls_key, settings.tls_client_ca)
        files.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        files.context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            files.load()
        except (OSError, ssl.SSLError) as exc:
            raise StartupError(f"TLS: {exc}") from None
        if files.client_ca is not None:
            files.context.verify_mode = ssl.CERT_REQUIRED
        return files

    def paths(self) -> tuple[Path, ...]:
        return (self.cert, self.key) + ((self.client_ca,) if self.client_ca else ())

    def load(self) -> None:
        """Load the files into the same SSLContext: new connections get the new chain,
        open ones keep theirs. A client CA added is trusted at once; one removed stays
        trusted until a restart (OpenSSL's store only grows)."""
        seen = tuple(stamp(p) for p in self.paths())
        self.context.load_cert_chain(self.cert, self.key)
        ca = None
        if self.client_ca is not None:
            self.context.load_verify_locations(cafile=self.client_ca)
            ca = self.client_ca.read_bytes()
        self.pem = (self.key.read_bytes(), self.cert.read_bytes(), ca)
        self.seen = seen
        self.version += 1

    def changed(self) -> bool:
        return tuple(stamp(p) for p in self.paths()) != self.seen

    def reload(self) -> None:
        try:
            self.load()
        except (OSError, ssl.SSLError) as exc:  # mid-rotation (key not yet written): next time
            log.warning("TLS files changed but cannot be loaded yet: %s", exc)
        else:
            log.info("TLS certificate reloaded from %s", self.cert)


@dataclass
class Access:
    """The engine's tokens and TLS files, built once from the settings at start."""

    tokens: Tokens
    tls: TlsFiles | None
    metrics_open: bool

    @classmethod
    def from_settings(cls, settings: Settings) -> Access:
        return cls(
            Tokens.from_settings(settings),
            TlsFiles.from_settings(settings),
            not settings.metrics_protected,
        )

    async def watch(self) -> None:
        """Re-read the token file and the TLS files when they change. The stats and the
        token file's read run in a thread; loading the chain into the SSLContext runs on
        the loop, between handshakes (it happens only on a change)."""
        while True:
            await asyncio.sleep(RELOAD_SECONDS)
            if self.tokens.path is not None:
                await asyncio.to_thread(self.tokens.reload)
            if self.tls is not None and await asyncio.to_thread(self.tls.changed):
                self.tls.reload()


def watch_context(access: Access):
    """A cleanup_ctx that keeps the files watched while the app runs."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        if access.tokens.path is None and access.tls is None:
            yield
            return
        task = asyncio.create_task(access.watch())
        yield
        task.cancel()

    return ctx


def describe(access: Access) -> str:
    """One line for the start-up log: what is protected (never a token)."""
    if not access.tokens.enabled:
        auth = "no token needed"
    else:
        metrics = "open" if access.metrics_open else "token"
        auth = f"token needed except /health/* (/metrics: {metrics})"
    if access.tls is None:
        return f"access: {auth}; no TLS"
    client = ", client certificate required" if access.tls.client_ca else ""
    return f"access: {auth}; TLS{client}"


def scheme(access: Access) -> str:
    return "https" if access.tls else "http"
