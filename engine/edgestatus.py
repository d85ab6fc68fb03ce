"""What an updating edge reports: its status record (``GET /status``), and the same record
pushed to the registry on every change and at least every 5 minutes as a heartbeat (tag
``<edge>.<ms>.<state>.<running12>.<target12>`` in ``<prefix>/status/<pipeline>``, layout and
schema in ``edgepipe.fleetstatus``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

from edgepipe import fleet, oci
from edgepipe.timestamps import now

log = logging.getLogger("edgepipe.engine")


@dataclass
class EdgeStatus:
    edge: str
    pipeline: str
    running: dict[str, str]
    previous: dict[str, str] | None = None
    state: str = "Current"
    reason: str | None = None
    since: str = field(default_factory=now)
    target: str | None = None
    last_poll: dict[str, str] | None = None
    poll_seconds: float = 0.0
    changed: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    def set(self, state: str, reason: str | None = None) -> None:
        if state != self.state or reason != self.reason:
            log.info("update: %s%s", state, f" ({reason})" if reason else "")
            if state != self.state:
                self.since = now()
            self.state, self.reason = state, reason
            self.changed.set()

    def polled(self, result: str, target: str | None = None) -> None:
        self.last_poll = {"at": now(), "result": result}
        if target is not None and target != self.target:
            self.target = target
            self.changed.set()

    def doc(self) -> dict[str, Any]:
        return {
            "edge": self.edge,
            "pipeline": self.pipeline,
            "state": self.state,
            "reason": self.reason,
            "since": self.since,
            "running": self.running,
            "previous": self.previous,
            "target": self.target,
            "lastPoll": self.last_poll,
            "pollSeconds": self.poll_seconds,
        }


@dataclass(frozen=True)
class StatusTarget:
    """Where the heartbeat goes (the pipeline's status repository), and how to log in."""

    registry: str
    credentials: oci.Credentials
    plain_http: bool
    repository: str


class Heartbeat:
    """Pushes the status on each change, and every ``every`` seconds regardless."""

    def __init__(self, status: EdgeStatus, target: StatusTarget, every: float) -> None:
        self.status = status
        self.target = target
        self.every = every
        self.client: oci.Client | None = None
        self.writer = fleet.StatusWriter(target.repository, status.edge)
        self.pushed = 0
        self.down = False  # the last push failed

    async def run(self) -> None:
        while True:
            self.status.changed.clear()
            doc = {**self.status.doc(), "lastSeen": now()}
            try:
                await asyncio.to_thread(self._push, doc)
                self.pushed += 1
                wait = self.every
                self.down = False
            except oci.AuthError as exc:  # no push rights: the status stays on the device
                log.warning("edge status stays local (GET /status): the registry refused "
                            "it (%s)", exc)  # fmt: skip
                return
            except oci.OciError as exc:
                self.client = None
                if not self.down:  # once per outage
                    log.warning("edge status not written to the registry: %s; retrying", exc)
                self.down = True
                wait = min(self.every, 30.0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.status.changed.wait(), wait)

    def _push(self, doc: dict[str, Any]) -> None:
        t = self.target
        if self.client is None:
            self.client = oci.Client(t.registry, t.credentials, plain_http=t.plain_http)
        self.writer.push(self.client, doc)
