"""The engine's access settings: bearer tokens, the metrics endpoint's protection, TLS files."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from edgepipe.settingsbase import EnvSettings, Flag


class AccessSettings(EnvSettings):
    """Who may call the engine (``EDGEPIPE_ENGINE_API_TOKEN*``, ``…_TLS_*``); the engine's
    :class:`~edgepipe.engine.settings.Settings` extends it, which sets the env prefix."""

    api_token: str | None = Field(
        None,
        repr=False,
        description="bearer tokens, comma-separated: each request other than `/health/*` "
        "must send `Authorization: Bearer <one of them>` (401 without, 403 with another); "
        "several at once let a fleet rotate them; unset (and no token file): no auth",
    )
    api_token_file: Path | None = Field(
        None,
        description="a file with one token per line, valid beside `EDGEPIPE_ENGINE_API_TOKEN`; "
        "re-read within a second of being changed or replaced (a mounted Secret)",
    )
    metrics_auth: Flag | None = Field(
        None,
        description="`GET /metrics` needs a token too; `false` leaves it open for a scraper "
        "without one",
        json_schema_extra={"default_text": "true when a token is set"},
    )
    tls_cert: Path | None = Field(
        None,
        description="a PEM certificate chain: with `EDGEPIPE_ENGINE_TLS_KEY`, REST serves HTTPS "
        "and gRPC TLS; both are re-read within a second of changing (cert-manager)",
    )
    tls_key: Path | None = Field(None, description="the PEM private key of `…_TLS_CERT`")
    tls_client_ca: Path | None = Field(
        None,
        description="PEM CA certificates: a client must present a certificate they signed "
        "(mutual TLS, REST and gRPC); needs `…_TLS_CERT`",
    )

    @property
    def metrics_protected(self) -> bool:
        """Whether ``/metrics`` asks for a token: as set, else whenever tokens are."""
        if self.metrics_auth is None:
            return bool(self.api_token or self.api_token_file)
        return self.metrics_auth
