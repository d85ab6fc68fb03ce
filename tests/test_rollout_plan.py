"""Rollout waves as pure decisions: planning, refusals naming their field, and advance through waves."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from edgepipe import rollout
from edgepipe.config import config_error
from edgepipe.fleetstatus import EdgeReport
from edgepipe.resources import PublishSpec
from edgepipe.rollout import RolloutState, advance, failure_budget, plan_waves
from edgepipe.rolloutspec import RolloutSpec

EDGES = [f"dock-{i}" for i in range(1, 13)]
NEW = "sha256:" + "b" * 64
OLD = "sha256:" + "a" * 64
T0 = datetime(2026, 12, 5, 4, 0, tzinfo=UTC)


def Report(  # noqa: N802 - reads like the record it builds
    edge: str,
    state: str,
    running: str,
    target: str | None,
    since: datetime,
    last_seen: datetime | None = None,
    reason: str | None = None,
    poll_seconds: float = 5.0,
) -> EdgeReport:
    """An edge's report as fleetstatus.StatusReader gives it."""
    return EdgeReport(
        edge=edge, state=state, running=running, target=target, since=since,
        last_seen=last_seen, reason=reason, version=None, poll_seconds=poll_seconds, doc=None,
    )  # fmt: skip


def spec(**rollout) -> RolloutSpec:
    return RolloutSpec.model_validate(rollout)


def refusal(edges: list[str], ro: dict) -> str:
    with pytest.raises(ValidationError) as err:
        PublishSpec.model_validate(
            {"pipeline": "p", "registry": {"url": "r"}, "edges": edges, "rollout": ro}
        )
    return config_error(err.value, prefix="spec").message


# -- planning ------------------------------------------------------------------------------


def test_plan_named_then_cumulative_percents() -> None:
    waves = plan_waves(
        spec(waves=[{"edges": ["dock-5", "dock-2"]}, {"percent": 50}, {"percent": 100}]), EDGES
    )
    assert waves == [
        ["dock-5", "dock-2"],
        ["dock-1", "dock-3", "dock-4", "dock-6"],  # 6 in all, in spec.edges order
        ["dock-7", "dock-8", "dock-9", "dock-10", "dock-11", "dock-12"],
    ]


def test_plan_rounds_up_and_moves_at_least_one() -> None:
    # 10% of 12 = 1.2 -> 2; 11% -> still 2, but a wave moves at least one new edge.
    waves = plan_waves(spec(waves=[{"percent": 10}, {"percent": 11}, {"percent": 100}]), EDGES)
    assert [len(w) for w in waves] == [2, 1, 9]
    assert [e for w in waves for e in w] == EDGES


def test_start_plans_the_waves() -> None:
    s = rollout.start(spec(waves=[{"percent": 50}, {"percent": 100}]), EDGES[:4], "v2", NEW, T0)
    assert s.waves == [EDGES[:2], EDGES[2:4]] and s.phase == "Progressing" and s.wave == 0
    assert s.moved_at is None and s.started_at == T0


def test_plan_without_rollout_is_one_wave_and_never_aborts() -> None:
    assert plan_waves(None, EDGES) == [EDGES]
    assert plan_waves(None, []) == []
    assert failure_budget(None, 12) == 12


def test_failure_budget_count_or_percent() -> None:
    assert failure_budget(spec(waves=[{"percent": 100}], maxFailures=2), 12) == 2
    assert failure_budget(spec(waves=[{"percent": 100}], maxFailures="10%"), 12) == 1  # floor
    assert failure_budget(spec(waves=[{"percent": 100}], maxFailures="25%"), 12) == 3
    assert failure_budget(spec(waves=[{"percent": 100}]), 12) == 0


@pytest.mark.parametrize(
    ("edges", "ro", "expected"),
    [
        (
            EDGES[:3],
            {"waves": [{"edges": ["dock-1", "dock-9"]}, {"percent": 100}]},
            "spec.rollout.waves[0].edges[1]: 'dock-9' is not one of spec.edges",
        ),
        (
            EDGES,
            {"waves": [{"percent": 50}, {"percent": 50}, {"percent": 100}]},
            "spec.rollout.waves[1].percent: 50 does not rise above the previous wave's 50",
        ),
        (
            EDGES,
            {"waves": [{"percent": 50, "edges": ["dock-1"]}, {"percent": 100}]},
            "spec.rollout.waves[0]: a wave needs exactly one of edges and percent",
        ),
        (
            EDGES,
            {"waves": [{}, {"percent": 100}]},
            "spec.rollout.waves[0]: a wave needs exactly one of edges and percent",
        ),
        (
            EDGES[:3],
            {"waves": [{"percent": 100}], "maxFailures": 4},
            "spec.rollout.maxFailures: 4 is over the edge count (3)",
        ),
        (
            EDGES[:3],
            {"waves": [{"percent": 100}], "maxFailures": "ten"},
            "spec.rollout.maxFailures: 'ten' is neither a count nor a percent such as '10%'",
        ),
        (
            EDGES,
            {"waves": [{"edges": ["dock-1"]}, {"percent": 50}]},
            "spec.rollout.waves[1]: the last wave must reach every edge",
        ),
        (
            EDGES,
            {"waves": [{"percent": 50}, {"edges": ["dock-2"]}, {"percent": 100}]},
            "spec.rollout.waves[1].edges[0]: 'dock-2' is already in an earlier wave",
        ),
        ([], {"waves": [{"percent": 100}]}, "spec.rollout: needs spec.edges"),
        (
            EDGES,
            {"waves": [{"percent": 100}], "waveTimeoutSeconds": 0},
            "spec.rollout.waveTimeoutSeconds: ",
        ),
    ],
)
def test_refusals_name_the_field(edges: list[str], ro: dict, expected: str) -> None:
    assert refusal(edges, ro).startswith(expected)


def test_spec_round_trips_camel_case() -> None:
    ro = {"waves": [{"edges": ["dock-1"]}, {"percent": 100}], "maxFailures": "10%"}
    doc = PublishSpec.model_validate(
        {"pipeline": "p", "registry": {"url": "r"}, "edges": EDGES, "rollout": ro}
    ).model_dump(by_alias=True, exclude_none=True)
    assert doc["rollout"] == {**ro, "waves": [{"edges": ["dock-1"]}, {"percent": 100.0}]} | {
        "waveTimeoutSeconds": 600.0
    }


# -- advancing -----------------------------------------------------------------------------

RO = spec(
    waves=[{"edges": ["dock-1", "dock-2"]}, {"percent": 50}, {"percent": 100}],
    maxFailures=1,
    waveTimeoutSeconds=60,
)


def current(edge: str, at: datetime, digest: str = NEW) -> EdgeReport:
    return Report(edge, "Current", digest, digest, at, last_seen=at)


def state_of(edges: list[str] = EDGES, ro: RolloutSpec | None = RO) -> RolloutState:
    return RolloutState.start("v2", NEW, plan_waves(ro, edges), T0)


def moved(step: rollout.Step, at: datetime, pointer: str = OLD) -> RolloutState:
    """What a caller does with a move step: record the rollback, move, mark."""
    assert step.action == "move"
    for edge in step.edges:
        step.state.note_rollback(edge, pointer)
    step.state.mark_moved(at)
    return step.state


def test_advance_moves_wave_after_wave_in_order() -> None:
    s = state_of()
    reports = {e: current(e, T0 - timedelta(hours=1), OLD) for e in EDGES}
    step = advance(s, reports, T0, RO)
    assert (step.action, step.edges) == ("move", ["dock-1", "dock-2"])
    assert s.moved_at is None  # advance does not change its argument
    s = moved(step, T0)
    t = T0 + timedelta(seconds=5)
    reports["dock-1"] = current("dock-1", t)
    step = advance(s, reports, t, RO)
    assert step.action == "wait" and step.state.updated == 1  # dock-2 not Current yet
    reports["dock-2"] = current("dock-2", t)
    step = advance(step.state, reports, t, RO)
    assert (step.action, step.edges) == ("move", ["dock-3", "dock-4", "dock-5", "dock-6"])
    assert step.state.wave == 1 and step.state.to_status()["waves"][0]["state"] == "Done"
    s = moved(step, t)
    for e in s.waves[1]:
        reports[e] = current(e, t)
    step = advance(s, reports, t, RO)
    assert step.action == "move" and step.edges == EDGES[6:]
    s = moved(step, t)
    for e in EDGES[6:]:
        reports[e] = current(e, t)
    step = advance(s, reports, t, RO)
    assert step.action == "complete"
    status = step.state.to_status()
    assert status["phase"] == "Complete" and status["updated"] == 12 and status["pending"] == 0
    assert [w["state"] for w in status["waves"]] == ["Done"] * 3
    assert status["rollback"] == dict.fromkeys(EDGES, OLD)
    assert advance(step.state, reports, t, RO).action == "wait"  # finished: nothing to move


def test_failures_past_max_failures_abort_and_move_the_wave_back() -> None:
    s = moved(advance(state_of(), {}, T0, RO), T0)
    t = T0 + timedelta(seconds=5)
    reports = {
        "dock-1": Report("dock-1", "RolledBack", OLD, NEW, t, reason="probation: 5xx"),
        "dock-2": current("dock-2", t),
    }
    step = advance(s, reports, t, RO)
    # One failure is within maxFailures 1: the wave is done with it, the next one moves.
    assert step.action == "move" and step.state.failed == ["dock-1"]
    s = moved(step, t)
    reports["dock-3"] = Report("dock-3", "Rejected", OLD, NEW, t, reason="smoke test failed")
    step = advance(s, reports, t, RO)
    assert step.action == "abort"
    assert step.edges == ["dock-1", "dock-3", "dock-4", "dock-5", "dock-6"]
    status = step.state.to_status()
    assert status["phase"] == "Aborted" and status["failed"] == 2
    assert status["failedEdges"] == ["dock-1", "dock-3"]
    assert status["failureReasons"]["dock-3"] == "smoke test failed"
    assert "maxFailures (1)" in status["reason"]
    assert status["waves"][1]["state"] == "Aborted" and status["waves"][2]["state"] == "Pending"
    assert step.state.rollback["dock-3"] == OLD
    assert advance(step.state, reports, t, RO).action == "wait"  # no further moves


def test_a_failure_for_another_digest_does_not_count() -> None:
    s = moved(advance(state_of(), {}, T0, RO), T0)
    t = T0 + timedelta(seconds=5)
    reports = {
        "dock-1": Report("dock-1", "RolledBack", OLD, "sha256:" + "c" * 64, t),
        "dock-2": current("dock-2", t),
    }
    step = advance(s, reports, t, RO)
    assert step.action == "wait" and step.state.failed == []


def test_timeout_offline_is_pending_online_not_current_is_failed() -> None:
    ro = spec(waves=[{"percent": 50}, {"percent": 100}], maxFailures=1, waveTimeoutSeconds=60)
    edges = EDGES[:4]
    s = moved(advance(state_of(edges, ro), {}, T0, ro), T0)
    t = T0 + timedelta(seconds=30)
    reports = {
        # dock-1 stopped before the move: its newest record is older than the move.
        "dock-1": current("dock-1", T0 - timedelta(minutes=10), OLD),
        # dock-2 is online, still downloading.
        "dock-2": Report("dock-2", "Downloading", OLD, NEW, T0 + timedelta(seconds=2), t),
    }
    assert advance(s, reports, t, ro).action == "wait"  # not timed out yet
    t = T0 + timedelta(seconds=60)
    reports["dock-2"].last_seen = t
    step = advance(s, reports, t, ro)
    assert (step.action, step.edges) == ("move", ["dock-3", "dock-4"])
    assert step.state.failed == ["dock-2"]
    assert step.state.reasons["dock-2"] == rollout.TIMED_OUT
    assert step.state.pending == 1  # dock-1, offline: it catches up later
    # dock-1 returns and updates (its pointer moved): it counts as updated.
    s = moved(step, t)
    t2 = t + timedelta(seconds=10)
    reports.update({e: current(e, t2) for e in ("dock-1", "dock-3", "dock-4")})
    step = advance(s, reports, t2, ro)
    assert step.action == "complete"
    assert (step.state.updated, step.state.pending, len(step.state.failed)) == (3, 0, 1)


def test_an_edge_silent_for_three_polls_is_offline() -> None:
    ro = spec(waves=[{"percent": 100}], waveTimeoutSeconds=60)
    s = moved(advance(state_of(["dock-1"], ro), {}, T0, ro), T0)
    t = T0 + timedelta(seconds=61)
    # It began downloading after the move, then went quiet for more than 3 x 5 s.
    quiet = Report("dock-1", "Downloading", OLD, NEW, T0 + timedelta(seconds=1), T0)
    step = advance(s, {"dock-1": quiet}, t, ro)
    assert step.action == "complete" and step.state.failed == [] and step.state.pending == 1
    # Late catch-up after Complete still counts.
    step = advance(step.state, {"dock-1": current("dock-1", t)}, t, ro)
    assert step.action == "wait" and (step.state.updated, step.state.pending) == (1, 0)


def test_timeout_failures_past_budget_abort() -> None:
    ro = spec(waves=[{"percent": 50}, {"percent": 100}], waveTimeoutSeconds=60)
    s = moved(advance(state_of(EDGES[:2], ro), {}, T0, ro), T0)
    t = T0 + timedelta(seconds=61)
    stuck = Report("dock-1", "Probation", NEW, NEW, T0 + timedelta(seconds=1), t)
    step = advance(s, {"dock-1": stuck}, t, ro)
    assert (step.action, step.edges) == ("abort", ["dock-1"])
    assert step.state.phase == "Aborted" and step.state.reasons["dock-1"] == rollout.TIMED_OUT


def test_status_round_trip_resumes_with_the_same_next_step() -> None:
    s = moved(advance(state_of(), {}, T0, RO), T0 + timedelta(milliseconds=123))
    t = T0 + timedelta(seconds=5)
    reports = {"dock-1": current("dock-1", t)}
    before = advance(s, reports, t, RO)
    again = RolloutState.from_status(s.to_status())
    assert again == s
    after = advance(again, reports, t, RO)
    assert (after.action, after.edges, after.state) == (before.action, before.edges, before.state)
    # Through the PublishStatus model (the CRD's schema) too.
    from edgepipe.resources import PublishStatus

    doc = PublishStatus.model_validate({"rollout": s.to_status()}).model_dump(by_alias=True)
    assert RolloutState.from_status(doc["rollout"]) == s
    # A finished one as well.
    reports = {e: current(e, t) for e in EDGES}
    step = advance(s, reports, t, RO)
    while step.action == "move":
        step = advance(moved(step, t), reports, t, RO)
    assert step.action == "complete"
    assert RolloutState.from_status(step.state.to_status()) == step.state


def test_a_move_step_not_marked_is_given_again() -> None:
    """A caller that died between moving and saving gets the same move (HEAD-before-PUT
    makes it free), not a skipped wave."""
    s = state_of()
    first = advance(s, {}, T0, RO)
    saved = RolloutState.from_status(first.state.to_status())
    assert advance(saved, {}, T0, RO).edges == first.edges


def test_superseding_keeps_the_first_rollback_digest() -> None:
    s = moved(advance(state_of(), {}, T0, RO), T0)  # dock-1, dock-2: OLD -> NEW
    newer = "sha256:" + "d" * 64
    s2 = RolloutState.start("v3", newer, s.waves, T0, previous=s)
    s2.note_rollback("dock-1", NEW)  # still on the superseded digest: keeps OLD
    s2.note_rollback("dock-3", OLD)
    s2.note_rollback("dock-4", newer)  # already on the new digest: nothing to record
    assert s2.rollback == {"dock-1": OLD, "dock-2": OLD, "dock-3": OLD}


def test_abort_by_request_and_resume() -> None:
    s = moved(advance(state_of(), {}, T0, RO), T0)
    step = rollout.abort(s, T0, "aborted by request")
    assert (step.action, step.edges) == ("abort", ["dock-1", "dock-2"])
    assert step.state.reason == "aborted by request"
    assert rollout.abort(s, "aborted by request", T0).state == step.state  # either order
    again = rollout.resume(step.state, T0)
    assert again.phase == "Progressing" and again.failed == [] and again.wave == 0
    assert advance(again, {}, T0, RO).edges == ["dock-1", "dock-2"]


def test_reports_from_tags_alone_count() -> None:
    """Before its document is read, an edge's report holds the tag's 12-digit digests."""
    ro = spec(waves=[{"percent": 100}])
    s = moved(advance(state_of(["dock-1", "dock-2"], ro), {}, T0, ro), T0)
    t = T0 + timedelta(seconds=3)
    reports = {
        "dock-1": Report("dock-1", "Current", NEW[7:19], NEW[7:19], t),
        "dock-2": Report("dock-2", "Rejected", OLD[7:19], NEW[7:19], t),
    }
    step = advance(s, reports, t, ro)
    assert step.action == "abort" and step.state.failed == ["dock-2"]
    assert step.state.updated == 1 and step.state.reasons["dock-2"] == "Rejected"
