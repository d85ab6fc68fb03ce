"""Rollouts in waves, the operator's half: the pointer moves each step of a Publish's
rollout asks for, its requests (abort, resume) and its edges' lines in the status.

The decisions are ``edgepipe.rollout``'s (pure, shared with the CLI's registry-only
driver); this module acts on them. Every pointer is read (HEAD) before it is moved, so a
pointer already on the digest is never PUT again: an operator killed between moving a
wave and writing status.rollout moves nothing twice when it comes back. The Publish
handler starts a rollout (``begin``); the edge poll (edges.py) drives it (``step_once``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from edgepipe import fleet, oci, rollout, timestamps
from edgepipe.publish.waves import move_for
from edgepipe.rollout import RolloutState, Step
from edgepipe.rolloutspec import RolloutSpec

from .kube import ApiError, Unreachable

log = logging.getLogger("edgepipe.operator")

REQUEST_ANNOTATION = "edgepipe.io/rollout-request"
REQUESTS = ("abort", "resume")
# An edge silent this long past its own poll interval shows as Offline.
OFFLINE_AFTER = 2 * fleet.HEARTBEAT_SECONDS


@dataclass(frozen=True)
class Event:
    """A Kubernetes Event to post on the Publish: Normal or Warning, reason, message."""

    type: str
    reason: str
    message: str


@dataclass
class Acted:
    """What one step did: the new state, the Events to post, and the pointers it PUT."""

    state: RolloutState
    events: list[Event] = field(default_factory=list)
    moved: list[str] = field(default_factory=list)


def utcnow() -> datetime:
    return datetime.now(UTC)


def post_event(kube: Any, obj: dict[str, Any], event: Event) -> None:
    """Post ``event`` on ``obj`` (a Publish from the edge poll, an engine object from the
    status dispatcher: threads where kopf's own event queue is out of reach); a failure is
    only logged: the status says it too."""
    meta = obj["metadata"]
    t = stamp(utcnow())
    body = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
        "involvedObject": {
            "apiVersion": obj.get("apiVersion"),
            "kind": obj.get("kind"),
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta.get("uid"),
        },
        "type": event.type,
        "reason": event.reason,
        "message": event.message[:1024],
        "source": {"component": "edgepipe-operator"},
        "firstTimestamp": t,
        "lastTimestamp": t,
        "count": 1,
    }
    try:
        kube.call("POST", f"/api/v1/namespaces/{meta['namespace']}/events", body=body)
    except (ApiError, Unreachable) as exc:
        log.warning("%s %s/%s: event %s not posted: %s", obj.get("kind"), meta["namespace"],
                    meta["name"], event.reason, exc)  # fmt: skip


# -- pointers ------------------------------------------------------------------------------


def note_pointers(
    clients: fleet.Clients, repository: str, state: RolloutState, edges: list[str]
) -> None:
    """Note each edge's pointer digest (one HEAD each, concurrently) as its rollback
    digest (kept when a superseded rollout recorded one, or when already on this
    rollout's digest)."""
    for edge, digest in fleet.pointer_digests(clients, repository, edges).items():
        state.note_rollback(edge, digest)


def perform(clients: fleet.Clients, repository: str, step: Step, now: datetime) -> Acted:
    """Carry out ``step`` (rollout.advance's): its pointer moves and its Events."""
    state = step.state
    n = len(state.waves)
    moved = move_for(step, clients, repository, now)
    if step.action == "move":
        message = (
            f"wave {state.wave + 1}/{n}: {len(step.edges)} edge(s) to version {state.version} "
            f"({', '.join(step.edges)}; {len(moved)} pointer(s) moved)"
        )
        return Acted(state, [Event("Normal", "RolloutWaveStarted", message)], moved)
    if step.action == "abort":
        failing = ", ".join(f"{e} ({state.reasons.get(e, '?')})" for e in state.failed)
        message = (
            f"version {state.version} aborted at wave {state.wave + 1}/{n}: {state.reason}; "
            f"failing edges: {failing or 'none'}; {len(moved)} pointer(s) moved back"
        )
        return Acted(state, [Event("Warning", "RolloutAborted", message)], moved)
    if step.action == "complete":
        message = f"version {state.version}: every wave done ({state.updated} edge(s) updated"
        message += f", {state.pending} pending)" if state.pending else ")"
        return Acted(state, [Event("Normal", "RolloutComplete", message)])
    return Acted(state)


# -- starting and requests ------------------------------------------------------------------


def begin(
    spec: RolloutSpec | None,
    edges: list[str],
    version: str,
    digest: str,
    prior: dict[str, Any] | None,
    now: datetime,
) -> tuple[RolloutState, list[Event]]:
    """A new rollout of ``digest`` to ``edges`` (one wave of them all without ``spec``).
    A prior one still Progressing is superseded: it moves nothing more, and the edges it
    moved keep the rollback digests it recorded while their pointers stay on its digest."""
    previous = None
    events = []
    if prior and prior.get("phase") == "Progressing" and prior.get("digest"):
        previous = RolloutState.from_status(prior)
    if previous is not None and previous.digest != digest:
        events.append(
            Event(
                "Normal",
                "RolloutSuperseded",
                f"the rollout of version {previous.version} (at wave {previous.wave + 1}/"
                f"{len(previous.waves)}) is superseded by version {version}",
            )
        )
    waves = rollout.plan_waves(spec, edges)
    state = RolloutState.start(version, digest, waves, now, previous)
    if previous is not None and previous.digest == digest:
        # Re-planned (edges changed): the edges it moved are not moved again (nor noted).
        state.rollback = dict(previous.rollback)
    # The annotation stays after its request was acted on: not a request to the new rollout.
    state.handled_request = (prior or {}).get("handledRequest")
    return state, events


def parse_request(value: str | None) -> str | None:
    """The action of a ``edgepipe.io/rollout-request`` value ``<abort|resume>:<id>``."""
    if not value:
        return None
    action = value.split(":", 1)[0].strip().lower()
    return action if action in REQUESTS else None


def request(state: RolloutState, value: str | None, now: datetime) -> Step | None:
    """The step a new request asks for (None: no new request). An abort of a Progressing
    rollout aborts it as failures would; a resume of an Aborted one continues at the
    wave it stopped (moved again, failures forgotten); any other is only marked handled."""
    if not value or value == state.handled_request:
        return None
    action = parse_request(value)
    state = replace(state, handled_request=value)
    if action == "abort" and state.phase == "Progressing":
        return rollout.abort(state, now, "aborted by request")
    if action == "resume" and state.phase == "Aborted":
        return Step("wait", [], rollout.resume(state))
    return Step("wait", [], state)


# -- the edges' lines ----------------------------------------------------------------------


def edge_state(report: Any, now: datetime) -> str:
    """An edge's state as the status shows it: its own, Offline when silent for
    2 heartbeats and its poll, Unknown when it never reported."""
    if report is None:
        return "Unknown"
    seen = report.last_seen or report.since
    if seen is not None and now - seen > timedelta(
        seconds=OFFLINE_AFTER + (report.poll_seconds or 0)
    ):
        return "Offline"
    return report.state


def edge_lines(
    edges: list[dict[str, Any]],
    reports: dict[str, Any],
    waves: list[list[str]],
    uploads: dict[str, dict[str, Any] | None],
    now: datetime,
) -> list[dict[str, Any]]:
    """status.edges: each listed edge with its docker line, what it last reported, its
    wave (1-based) and its last log upload."""
    wave_of = {e: i + 1 for i, wave in enumerate(waves) for e in wave}
    lines = []
    for entry in edges:
        name = entry["name"]
        report = reports.get(name)
        line: dict[str, Any] = {"name": name, "dockerRunCommand": entry.get("dockerRunCommand")}
        line["state"] = edge_state(report, now)
        if report is not None:
            line["version"] = report.version
            line["digest"] = report.running
            line["lastSeen"] = stamp(report.last_seen or report.since)
            line["reason"] = report.reason
        if name in wave_of:
            line["wave"] = wave_of[name]
        line.update(uploads.get(name) or {})
        lines.append({k: v for k, v in line.items() if v is not None})
    return lines


def pruned(value: Any) -> Any:
    """``value`` without its None fields, as the apiserver keeps a status (a merge patch's
    None deletes a field; inside a list it is dropped)."""
    if isinstance(value, dict):
        return {k: pruned(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [pruned(v) for v in value]
    return value


def merge_patch(old: Any, new: Any) -> Any:
    """The merge patch that turns ``old`` into ``pruned(new)``: a field ``new`` lacks is
    deleted (a map such as rollback is replaced, not merged into the old one)."""
    new = pruned(new)
    if not isinstance(old, dict) or not isinstance(new, dict):
        return new
    patch: dict[str, Any] = dict.fromkeys((k for k in old if k not in new), None)
    for k, v in new.items():
        patch[k] = merge_patch(old.get(k), v) if isinstance(v, dict) else v
    return patch


def stamp(t: datetime | None) -> str | None:
    return t.astimezone(UTC).strftime(timestamps.FORMAT) if t is not None else None


# -- one interval of one Publish ----------------------------------------------------------


@dataclass
class Held:
    """What the poll keeps of one Publish between intervals (status.rollout stays the
    record: a restarted operator starts from it)."""

    reader: Any  # fleetstatus.StatusReader
    state: RolloutState | None = None
    written: str | None = None  # resourceVersion of our last status write
    last: dict[str, Any] = field(default_factory=dict)  # what it wrote (rollout, edges)
    uploads: dict[str, tuple[float, Any, dict[str, Any] | None]] = field(default_factory=dict)
    client: tuple[Any, oci.Target, oci.Client] | None = None  # (registry spec, target, client)

    def current(self, status: dict[str, Any] | None) -> RolloutState | None:
        """The rollout to drive: ours when status.rollout is the same rollout (the watch
        may not show our last write yet), else the status's (a new publish, a restart)."""
        if not status:
            self.state = None
            return None
        if self.state is None or not same_rollout(self.state, status):
            self.state = RolloutState.from_status(status)
            self.written = None
        return self.state


def same_rollout(state: RolloutState, status: dict[str, Any]) -> bool:
    theirs = RolloutState.from_status(status)
    return (theirs.digest, theirs.started_at) == (state.digest, state.started_at)


def step_once(
    state: RolloutState,
    reports: dict[str, Any],
    spec: RolloutSpec | None,
    annotation: str | None,
    now: datetime,
    act: Callable[[Step], Acted],
) -> Acted:
    """One interval of a rollout: a new request first, then rollout.advance (which also
    recounts a Complete rollout: an edge pending when its wave ended may be Current since);
    each step carried out by ``act``."""
    events: list[Event] = []
    moved: list[str] = []
    asked = request(state, annotation, now)
    if asked is not None:
        done = act(asked)
        state, events, moved = done.state, done.events, done.moved
    if state.phase in ("Progressing", "Complete"):  # a late edge still counts as updated
        done = act(rollout.advance(state, reports, now, spec))
        state, events, moved = done.state, [*events, *done.events], [*moved, *done.moved]
    return Acted(state, events, moved)
