"""A rollout in waves, as pure decisions: which pointers to move next, when to wait, when to stop.

The operator's edge loop and ``edgepipe publish push --waves`` both call ``advance`` with
the edges' reports (``fleetstatus.EdgeReport``) and do what its Step says: move the
pointers of ``edges`` (to the rollout's digest, or back on an abort). Nothing here reads a
clock, the registry or the cluster; the state round-trips through ``status.rollout``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from .rolloutspec import DEFAULT_WAVE_TIMEOUT, RolloutSpec, plan
from .timestamps import parse

if TYPE_CHECKING:
    from .fleetstatus import EdgeReport

Phase = Literal["Progressing", "Complete", "Aborted"]
Action = Literal["move", "wait", "abort", "complete"]
FAILED_STATES = ("RolledBack", "Rejected")
# An edge not heard from for this many of its poll intervals is offline.
OFFLINE_POLLS = 3
TIMED_OUT = "not Current within waveTimeoutSeconds"


def plan_waves(rollout: RolloutSpec | None, edges: list[str]) -> list[list[str]]:
    """The edges of each wave in order; without a rollout, one wave of every edge."""
    if rollout is None:
        return [list(edges)] if edges else []
    return plan(rollout, edges)


def failure_budget(rollout: RolloutSpec | None, n_edges: int) -> int:
    """How many failed edges a rollout tolerates; without a rollout it never aborts."""
    return n_edges if rollout is None else rollout.budget(n_edges)


def _stamp(t: datetime | None) -> str | None:
    if t is None:
        return None
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


@dataclass
class RolloutState:
    """Where a rollout stands; ``status.rollout`` of a Publish holds all of it."""

    version: str
    digest: str  # the manifest the pointers move to
    waves: list[list[str]]
    phase: Phase = "Progressing"
    wave: int = 0  # 0-based index of the current wave
    moved_at: datetime | None = None  # when the current wave's pointers moved; None: not yet
    rollback: dict[str, str] = field(default_factory=dict)  # edge -> pointer before this rollout
    failed: list[str] = field(default_factory=list)
    reasons: dict[str, str] = field(default_factory=dict)  # failed edge -> why
    reason: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    updated: int = 0
    pending: int = 0
    done_waves: list[tuple[datetime | None, datetime | None]] = field(default_factory=list)
    superseded: str | None = None  # the digest of the rollout this one replaced
    handled_request: str | None = None

    @classmethod
    def start(
        cls,
        version: str,
        digest: str,
        waves: list[list[str]],
        now: datetime,
        previous: RolloutState | None = None,
    ) -> RolloutState:
        """A new rollout at wave 1 (not moved yet). ``previous``, a rollout it supersedes,
        hands over the rollback digests of the edges it moved."""
        state = cls(version=version, digest=digest, waves=[list(w) for w in waves], started_at=now)
        if previous is not None and previous.digest != digest:
            state.rollback = dict(previous.rollback)
            state.superseded = previous.digest
        if not any(waves):
            state.phase, state.finished_at = "Complete", now
        return state

    @property
    def edges(self) -> list[str]:
        return [e for w in self.waves for e in w]

    def note_rollback(self, edge: str, pointer: str | None) -> None:
        """Record where ``edge``'s pointer was (read just before moving it): its version to
        go back to. An edge keeps the first digest recorded while its pointer is still on a
        superseded rollout's digest (or on this one's: moved already)."""
        if pointer is None or pointer == self.digest:
            return
        if pointer == self.superseded and edge in self.rollback:
            return
        self.rollback[edge] = pointer

    def mark_moved(self, now: datetime) -> None:
        """The current wave's pointers have moved (call after moving them)."""
        self.moved_at = now

    def wave_state(self, i: int) -> str:
        if i < self.wave or self.phase == "Complete":
            return "Done"
        if i == self.wave:
            if self.phase == "Aborted":
                return "Aborted"
            return "Progressing" if self.moved_at is not None else "Pending"
        return "Pending"

    def to_status(self) -> dict[str, Any]:
        """``status.rollout``: camelCase, waves 1-based, times RFC 3339 (milliseconds)."""
        waves = []
        for i, edges in enumerate(self.waves):
            moved, done = self.done_waves[i] if i < len(self.done_waves) else (None, None)
            if i == self.wave and i >= len(self.done_waves):
                moved = self.moved_at
            waves.append(
                {
                    "edges": list(edges),
                    "state": self.wave_state(i),
                    "movedAt": _stamp(moved),
                    "doneAt": _stamp(done),
                }
            )
        return {
            "phase": self.phase,
            "version": self.version,
            "digest": self.digest,
            "wave": self.wave + 1,
            "waves": waves,
            "movedAt": _stamp(self.moved_at),
            "updated": self.updated,
            "pending": self.pending,
            "failed": len(self.failed),
            "failedEdges": list(self.failed),
            "failureReasons": {e: self.reasons[e] for e in self.failed if e in self.reasons},
            "reason": self.reason,
            "startedAt": _stamp(self.started_at),
            "finishedAt": _stamp(self.finished_at),
            "rollback": dict(self.rollback),
            "superseded": self.superseded,
            "handledRequest": self.handled_request,
        }

    @classmethod
    def from_status(cls, status: dict[str, Any]) -> RolloutState:
        """The state ``to_status`` wrote (a restarted operator resumes from it)."""
        waves = status.get("waves") or []
        wave = int(status.get("wave") or 1) - 1
        finished = wave + 1 if status.get("phase") == "Complete" else wave
        return cls(
            version=status.get("version") or "",
            digest=status["digest"],
            waves=[list(w.get("edges") or []) for w in waves],
            phase=status.get("phase") or "Progressing",
            wave=wave,
            moved_at=parse(status.get("movedAt")),
            rollback=dict(status.get("rollback") or {}),
            failed=list(status.get("failedEdges") or []),
            reasons=dict(status.get("failureReasons") or {}),
            reason=status.get("reason"),
            started_at=parse(status.get("startedAt")),
            finished_at=parse(status.get("finishedAt")),
            updated=int(status.get("updated") or 0),
            pending=int(status.get("pending") or 0),
            done_waves=[
                (parse(w.get("movedAt")), parse(w.get("doneAt"))) for w in waves[:finished]
            ],
            superseded=status.get("superseded"),
            handled_request=status.get("handledRequest"),
        )


@dataclass
class Step:
    """What to do now: ``move`` the pointers of ``edges`` to ``state.digest`` (recording
    ``state.note_rollback`` first, then ``state.mark_moved``); ``abort``: move each of
    ``edges`` back to ``state.rollback[edge]`` where known; ``wait``; or ``complete``."""

    action: Action
    edges: list[str]
    state: RolloutState


def _current(report: EdgeReport | None, digest: str) -> bool:
    return report is not None and report.state == "Current" and report.on(digest)


def _failing(report: EdgeReport | None, digest: str) -> bool:
    return report is not None and report.state in FAILED_STATES and report.aimed_at(digest)


def _offline(report: EdgeReport | None, moved_at: datetime, now: datetime) -> bool:
    """Not heard from since the pointers moved, or for OFFLINE_POLLS of its poll intervals."""
    if report is None or report.since < moved_at:
        return True
    seen = max(report.since, report.last_seen or report.since)
    poll = report.poll_seconds
    return poll > 0 and now - seen > timedelta(seconds=OFFLINE_POLLS * poll)


def _count(state: RolloutState, reports: dict[str, EdgeReport]) -> None:
    """Failures among the moved edges; updated edges, and pending ones (of done waves,
    neither Current nor failed: offline when their wave ended)."""
    done = [e for w in state.waves[: state.wave] for e in w]
    moved = done if state.moved_at is None else [*done, *state.waves[state.wave]]
    if state.phase == "Complete":
        done = moved = state.edges
    for edge in moved:
        report = reports.get(edge)
        if report is not None and edge not in state.failed and _failing(report, state.digest):
            state.failed.append(edge)
            state.reasons[edge] = report.reason or report.state
    state.updated = sum(_current(reports.get(e), state.digest) for e in moved)
    state.pending = sum(
        1 for e in done if e not in state.failed and not _current(reports.get(e), state.digest)
    )


def start(
    rollout: RolloutSpec | None,
    edges: list[str],
    version: str,
    digest: str,
    now: datetime,
    previous: RolloutState | None = None,
) -> RolloutState:
    """A rollout of ``digest`` to ``edges`` planned from ``rollout`` (RolloutState.start)."""
    return RolloutState.start(version, digest, plan_waves(rollout, edges), now, previous)


def abort(state: RolloutState, now: datetime | str, reason: str | datetime) -> Step:
    """Stop ``state`` (e.g. aborted by request): its current wave's moved edges and its
    failed ones go back to their rollback digests. (``reason`` and ``now`` in either order.)"""
    if isinstance(now, str):
        now, reason = reason, now
    assert isinstance(now, datetime) and isinstance(reason, str)
    s = copy.deepcopy(state)
    if s.phase != "Progressing" or not s.waves:
        return Step("wait", [], s)
    s.phase, s.finished_at, s.reason = "Aborted", now, reason
    wave = s.waves[s.wave] if s.moved_at is not None else []
    return Step("abort", [e for e in s.edges if e in wave or e in s.failed], s)


def resume(state: RolloutState, now: datetime | None = None) -> RolloutState:
    """An Aborted rollout, Progressing again at the wave it stopped (its pointers to be
    moved again: ``advance`` says move), with its failures forgotten."""
    s = copy.deepcopy(state)
    if s.phase != "Aborted":
        return s
    s.phase, s.finished_at, s.reason = "Progressing", None, None
    s.moved_at, s.failed, s.reasons = None, [], {}
    return s


def advance(
    state: RolloutState,
    reports: dict[str, EdgeReport],
    now: datetime,
    rollout: RolloutSpec | None,
) -> Step:
    """The next Step of ``state`` given each edge's newest report (pure: ``state`` is not
    changed; the Step's is the new one)."""
    s = copy.deepcopy(state)
    if s.phase == "Aborted" or not s.waves:
        return Step("wait", [], s)
    _count(s, reports)
    if s.phase == "Complete":  # late edges still catch up (and are counted)
        return Step("wait", [], s)
    wave = s.waves[s.wave]
    if s.moved_at is None:
        return Step("move", list(wave), s)
    budget = failure_budget(rollout, len(s.edges))
    timeout = rollout.wave_timeout_seconds if rollout is not None else DEFAULT_WAVE_TIMEOUT
    waiting = [e for e in wave if e not in s.failed and not _current(reports.get(e), s.digest)]
    if waiting and len(s.failed) <= budget and now - s.moved_at >= timedelta(seconds=timeout):
        for edge in waiting:
            if not _offline(reports.get(edge), s.moved_at, now):
                s.failed.append(edge)
                s.reasons[edge] = TIMED_OUT
        waiting = []  # the offline ones are pending: the wave is done without them
        _count(s, reports)
    if len(s.failed) > budget:
        s.phase, s.finished_at = "Aborted", now
        s.reason = f"{len(s.failed)} failed edges, more than maxFailures ({budget})"
        return Step("abort", [e for e in s.edges if e in wave or e in s.failed], s)
    if waiting:
        return Step("wait", [], s)
    s.done_waves.append((s.moved_at, now))
    if s.wave + 1 >= len(s.waves):
        s.phase, s.finished_at = "Complete", now
        _count(s, reports)
        return Step("complete", [], s)
    s.wave += 1
    s.moved_at = None
    _count(s, reports)
    return Step("move", list(s.waves[s.wave]), s)
