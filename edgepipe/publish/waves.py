"""A rollout in waves without a cluster: ``edgepipe publish push --waves``, against the registry alone.

The same decisions as the operator's (``edgepipe.rollout.advance``), driven by a loop that
reads the edges' status records (``fleetstatus.StatusReader``: one tag listing a poll)
and moves their pointers (``fleet.move_pointers``: concurrently, each HEAD first, so a
pointer already there is not written again).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

from edgepipe import fleet, oci
from edgepipe.fleetstatus import StatusReader
from edgepipe.rollout import RolloutState, Step, advance, plan_waves
from edgepipe.rolloutspec import RolloutSpec

Log = Callable[[str], None]


class RolloutAborted(RuntimeError):
    """The rollout stopped itself: too many edges failed. ``state`` says which and why."""

    def __init__(self, state: RolloutState) -> None:
        self.state = state
        failing = ", ".join(
            f"{e} ({state.reasons[e]})" if state.reasons.get(e) else e for e in state.failed
        )
        super().__init__(
            f"rollout of {state.version} aborted at wave {state.wave + 1}/{len(state.waves)}: "
            f"{state.reason}; failing edges: {failing or '-'}"
        )


def progress_line(state: RolloutState) -> str:
    """``wave 2/3: 4 updated, 2 pending, 0 failed``."""
    return (
        f"wave {state.wave + 1}/{len(state.waves)}: {state.updated} updated, "
        f"{state.pending} pending, {len(state.failed)} failed"
    )


def _utcnow() -> datetime:
    return datetime.now(UTC)


def move_for(step: Step, clients: fleet.Clients, repository: str, now: datetime) -> list[str]:
    """The pointer moves ``step`` asks for, the same for this driver and the operator: a
    wave's edges to the rollout's digest (each pointer read first and noted as its edge's
    rollback digest before it moves; the wave then marked moved at ``now``), or an abort's
    edges back to their rollback digests. The edges whose pointer was written."""
    state = step.state
    if step.action == "move":
        moved = fleet.move_pointers(
            clients, repository, state.digest, step.edges, before=state.note_rollback
        )
        state.mark_moved(now)
        return [edge for edge in step.edges if edge in moved]
    if step.action == "abort":
        return fleet.move_pointers_back(clients, repository, state.rollback, step.edges)
    return []


class WaveDriver:
    """Moves one version's pointers wave by wave, from what the edges report."""

    def __init__(
        self,
        target: oci.Target,
        pipeline: str,
        digest: str,
        version: str,
        edges: list[str],
        rollout: RolloutSpec | None,
        *,
        log: Log = lambda _: None,
        poll_seconds: float = 2.0,
    ) -> None:
        self.client = target.client()
        self.clients = fleet.Clients(target.client, self.client)
        self.prefix, self.pipeline = target.prefix, pipeline
        self.repository = target.repository("pipelines", pipeline)
        self.rollout, self.log, self.poll_seconds = rollout, log, poll_seconds
        self.reader = StatusReader()
        self.state = RolloutState.start(version, digest, plan_waves(rollout, edges), _utcnow())
        self.moves: list[tuple[str, str]] = []  # (edge, digest), in the order they were made

    def step(self) -> Step:
        """One read of the edges, one decision, and the pointer moves it asks for."""
        reports = self.reader.read(self.client, self.prefix, self.pipeline)
        step = advance(self.state, reports, _utcnow(), self.rollout)
        state = step.state
        n = len(state.waves)
        moved = move_for(step, self.clients, self.repository, _utcnow())
        if step.action == "move":
            self.moves += [(edge, state.digest) for edge in moved]
            self.log(f"wave {state.wave + 1}/{n}: pointers of {', '.join(step.edges)} moved")
        elif step.action == "abort":
            for edge in moved:
                self.moves.append((edge, state.rollback[edge]))
                self.log(f"edge {edge}: pointer back to {state.rollback[edge][:19]}")
        elif step.action == "complete" or progress_line(state) != progress_line(self.state):
            self.log(progress_line(state))
        self.state = state
        return step

    def run(self, sleep: Callable[[float], None] = time.sleep) -> RolloutState:
        """Until Complete (the state), or RolloutAborted. Interrupted (Ctrl-C), it stops
        where it is: the pointers moved so far stay moved."""
        while True:
            step = self.step()
            if step.action == "complete" or not self.state.waves:
                self.log(f"rollout complete: {progress_line(self.state).split(': ', 1)[1]}")
                return self.state
            if step.action == "abort":
                raise RolloutAborted(self.state)
            if step.action == "wait":
                sleep(self.poll_seconds)
