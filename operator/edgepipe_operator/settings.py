"""Operator settings from ``EDGEPIPE_OPERATOR_*`` env vars.

| env var | default | meaning |
|---|---|---|
| ``EDGEPIPE_OPERATOR_ENGINE_IMAGE`` | ``edgepipe-engine:0.1.0`` | engine image for Pipelines that name none |
| ``EDGEPIPE_OPERATOR_IMAGE_PULL_POLICY`` | ``IfNotPresent`` | the engine containers' pull policy |
| ``EDGEPIPE_OPERATOR_NAMESPACE`` | (all) | watch one namespace instead of the whole cluster |
| ``EDGEPIPE_OPERATOR_RESYNC_SECONDS`` | ``10`` | how often a deployed Pipeline's status is re-read from its Deployment |
| ``EDGEPIPE_OPERATOR_EDGE_POLL_SECONDS`` | ``60`` | how often each Publish's edges' last log uploads are read from the registry |
| ``EDGEPIPE_OPERATOR_MODEL_CHECK_TIMEOUT`` | ``5`` | seconds to wait for a model URL to answer |
| ``EDGEPIPE_OPERATOR_PROBE_ENGINES`` | ``true`` | ask a running but unready engine pod for its ``/health/ready`` reason (needs the operator to reach pod IPs) |
| ``EDGEPIPE_OPERATOR_WORKERS`` | ``8`` | handlers run at once (threads, and API connections for them) |
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from edgepipe.enginepod import ENGINE_IMAGE

PREFIX = "EDGEPIPE_OPERATOR_"


@dataclass(frozen=True)
class OperatorSettings:
    engine_image: str = ENGINE_IMAGE
    image_pull_policy: str = "IfNotPresent"
    namespace: str | None = None
    resync_seconds: float = 10.0
    model_check_timeout: float = 5.0
    probe_engines: bool = True
    workers: int = 8
    edge_poll_seconds: float = 60.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> OperatorSettings:
        env = os.environ if env is None else env
        d = cls()

        def get(key: str, default: str) -> str:
            return env.get(PREFIX + key) or default

        workers = get("WORKERS", str(d.workers))
        if not workers.isdigit() or int(workers) < 1:
            raise ValueError(f"{PREFIX}WORKERS={workers!r}: expected a whole number, at least 1")
        poll = get("EDGE_POLL_SECONDS", str(d.edge_poll_seconds))
        try:
            if float(poll) <= 0:
                raise ValueError
        except ValueError:
            raise ValueError(
                f"{PREFIX}EDGE_POLL_SECONDS={poll!r}: expected a positive number of seconds"
            ) from None
        try:
            return cls(
                engine_image=get("ENGINE_IMAGE", d.engine_image),
                image_pull_policy=get("IMAGE_PULL_POLICY", d.image_pull_policy),
                namespace=env.get(PREFIX + "NAMESPACE") or None,
                resync_seconds=float(get("RESYNC_SECONDS", str(d.resync_seconds))),
                model_check_timeout=float(get("MODEL_CHECK_TIMEOUT", str(d.model_check_timeout))),
                probe_engines=get("PROBE_ENGINES", "true").lower() in ("1", "true", "yes"),
                workers=int(workers),
                edge_poll_seconds=float(poll),
            )
        except ValueError as exc:
            raise ValueError(f"{PREFIX}*: {exc}") from None
