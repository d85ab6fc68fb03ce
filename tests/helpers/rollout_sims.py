"""Simulated edges for rollout tests: each follows its pointer in the real registry and
reports with the edge's own status writer (fleetstatus.StatusWriter), but instead of an
engine a rule decides how an update ends: Current, RolledBack, or held Downloading."""

from __future__ import annotations

from datetime import UTC, datetime

from edgepipe import fleet, fleetstatus, oci
from tests.helpers.background import Background


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class SimEdge(Background):
    """One edge: polls its pointer every ``poll`` seconds; a new target ends as
    ``outcome[digest]`` (else ``default``) says ("good": Current on it; "bad": RolledBack, never retried;
    "hold": Downloading until the outcome changes). ``history`` is every (state, running
    digest) it reported, in order; ``targets`` every digest its pointer named."""

    def __init__(
        self, client: oci.Client, prefix: str, pipeline: str, edge: str, poll: float = 0.2
    ) -> None:
        self.client, self.prefix, self.pipeline, self.edge = client, prefix, pipeline, edge
        self.repository = f"{prefix}/pipelines/{pipeline}"
        self.writer = fleetstatus.StatusWriter(
            fleetstatus.status_repository(prefix, pipeline), edge
        )
        self.poll = poll
        self.outcome: dict[str, str] = {}
        self.default = "good"  # the outcome of a digest not in ``outcome``
        self.versions: dict[str, str] = {}  # digest -> version, for the reports
        self.running: str | None = None
        self.refused: set[str] = set()
        self.history: list[tuple[str, str | None]] = []
        self.targets: list[str] = []  # each new digest its pointer named, in order
        self.errors: list[str] = []
        self._state, self._reason, self._since, self._target = "Current", None, _now(), None

    def _report(self, state: str, reason: str | None = None) -> None:
        if (state, reason) != (self._state, self._reason):
            self._since = _now()
        self._state, self._reason = state, reason
        doc = {
            "edge": self.edge,
            "pipeline": self.pipeline,
            "state": state,
            "reason": reason,
            "since": self._since,
            "running": {"version": self.versions.get(self.running or "", "?"),
                        "digest": self.running},
            "previous": None,
            "target": self._target,
            "lastPoll": {"at": _now(), "result": "ok"},
            "pollSeconds": self.poll,
            "lastSeen": _now(),
        }  # fmt: skip
        self.writer.push(self.client, doc)
        self.history.append((state, self.running))

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._step()
            except Exception as exc:  # the test reads them
                self.errors.append(repr(exc))
            self._stop.wait(self.poll)

    def _step(self) -> None:
        target = fleet.pointer_digest(self.client, self.repository, self.edge)
        if target is None:
            return
        if self.targets[-1:] != [target]:
            self.targets.append(target)
        first = self.running is None
        if first:
            self.running = target
        self._target = target
        if target == self.running or target in self.refused:
            if first or (self._state != "Current" and target == self.running):
                self._report("Current")
            return
        outcome = self.outcome.get(target, self.default)
        if outcome == "hold":
            if self._state != "Downloading":
                self._report("Downloading", "held by the test")
        elif outcome == "bad":
            self.refused.add(target)
            self._report("RolledBack", "fails after its swap")
        else:
            self.running = target
            self._report("Current")
