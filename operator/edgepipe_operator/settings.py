"""Operator settings from ``EDGEPIPE_OPERATOR_*`` env vars, read once at start (cli.main).

Every variable, its default and its meaning are the fields of :class:`OperatorSettings`;
the docs' settings reference is generated from them, and a test checks the chart's.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from edgepipe.enginepod import ENGINE_IMAGE
from edgepipe.settingsbase import EnvSettings, Flag, SettingsError

__all__ = ["PREFIX", "OperatorSettings", "SettingsError"]

PREFIX = "EDGEPIPE_OPERATOR_"


class OperatorSettings(EnvSettings):
    """The operator's settings; ``OperatorSettings.from_env()`` reads them."""

    model_config = SettingsConfigDict(env_prefix=PREFIX)

    engine_image: str = Field(ENGINE_IMAGE, description="engine image for Pipelines that name none")
    image_pull_policy: str = Field("IfNotPresent", description="the engine containers' pull policy")
    namespace: str | None = Field(
        None,
        description="watch these namespaces (comma-separated) instead of the whole cluster",
        json_schema_extra={"default_text": "(all)"},
    )
    edge_poll_seconds: float = Field(
        60.0,
        gt=0,
        description="how often each Publish's edges' status is read from the registry and its rollout advanced",
        json_schema_extra={"unit": "seconds"},
    )
    edge_upload_seconds: float = Field(
        300.0,
        gt=0,
        description="how often an edge's last log upload is read again while its reported "
        "status stays the same (a changed status reads it at the next poll)",
        json_schema_extra={"unit": "seconds"},
    )
    model_check_timeout: float = Field(
        5.0,
        gt=0,
        description="seconds to wait for a model URL to answer",
        json_schema_extra={"unit": "seconds"},
    )
    retry_seconds: float = Field(
        5.0,
        gt=0,
        description="the first wait before a model URL or a registry that did not answer is "
        "tried again, doubled at each retry (a Pipeline's model: 3 attempts, then Error; a "
        "Publish's registry: until it answers, at most 60 s apart)",
        json_schema_extra={"unit": "seconds"},
    )
    probe_engines: Flag = Field(
        True,
        description="ask a running but unready engine pod for its `/health/ready` reason "
        "(needs the operator to reach pod IPs)",
    )
    workers: int = Field(
        8, ge=1, description="handlers run at once (threads, and API connections for them)"
    )

    @property
    def namespaces(self) -> list[str]:
        """The namespaces watched; empty: the whole cluster."""
        return [n.strip() for n in (self.namespace or "").split(",") if n.strip()]
