"""A Publish's rollout: the waves its edges move in, how many failures stop it, how long a wave waits.

``spec.rollout`` of a Publish and the ``--waves`` of ``edgepipe publish push`` are both a
RolloutSpec. Checks that need the Publish's edges (a wave naming an unknown edge, a
``maxFailures`` over the edge count, a last wave that leaves edges out) are
``check_rollout``'s, which PublishSpec calls; each error names its field.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, WithJsonSchema, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from .spec import SpecModel

DEFAULT_WAVE_TIMEOUT = 600.0
_PERCENT = re.compile(r"^(\d+(?:\.\d+)?)%$")

# An int or "N%": Kubernetes' int-or-string, which the CRD says as such.
IntOrPercent = Annotated[
    int | str,
    WithJsonSchema(
        {
            "x-kubernetes-int-or-string": True,
            "description": "Failed edges that abort the rollout when exceeded: a count "
            '(e.g. 1) or a percent of the Publish\'s edges, rounded down (e.g. "10%").',
        }
    ),
]


class Wave(SpecModel):
    """One wave: the edges it names, or the cumulative percent of all edges moved by its end."""

    edges: list[str] | None = Field(
        default=None, min_length=1, description="The edges this wave moves, by name."
    )
    percent: float | None = Field(
        default=None,
        gt=0,
        le=100,
        description="Cumulative: after this wave, ceil(percent x edges / 100) edges have moved "
        "(spec.edges order, named edges included).",
    )

    @model_validator(mode="after")
    def _one_of(self) -> Wave:
        if (self.edges is None) == (self.percent is None):
            raise ValueError("a wave needs exactly one of edges and percent")
        return self


class RolloutSpec(SpecModel):
    """Move the edges' pointers in waves: each wave waits until its edges run the new
    version (Current), and too many failed edges abort the rollout and move the wave back."""

    waves: list[Wave] = Field(
        min_length=1,
        description="In order; the last must reach every edge (percent 100, or names "
        "covering the rest).",
    )
    max_failures: IntOrPercent = Field(default=0)
    wave_timeout_seconds: float = Field(
        default=DEFAULT_WAVE_TIMEOUT,
        ge=1,
        description="How long a wave waits for its edges: then an offline edge counts as "
        "pending (it catches up later), an online one not yet Current as failed.",
    )

    @field_validator("max_failures")
    @classmethod
    def _count_or_percent(cls, value: int | str) -> int | str:
        if isinstance(value, int):
            if value < 0:
                raise ValueError(f"{value} is negative")
            return value
        if value.isdigit():
            return int(value)
        match = _PERCENT.match(value)
        if not match or float(match.group(1)) > 100:
            raise ValueError(f"{value!r} is neither a count nor a percent such as '10%'")
        return value

    @field_validator("waves")
    @classmethod
    def _percents_rise(cls, waves: list[Wave]) -> list[Wave]:
        last = 0.0
        for i, wave in enumerate(waves):
            if wave.percent is None:
                continue
            if wave.percent <= last:
                raise _error(
                    (i, "percent"),
                    f"{wave.percent:g} does not rise above the previous wave's {last:g}",
                    wave.percent,
                )
            last = wave.percent
        return waves

    def budget(self, n_edges: int) -> int:
        """How many failed edges are tolerated (more abort the rollout)."""
        if isinstance(self.max_failures, int):
            return self.max_failures
        return math.floor(float(self.max_failures[:-1]) * n_edges / 100)


def _error(loc: tuple[Any, ...], message: str, value: Any) -> ValidationError:
    """A ValidationError at ``loc`` (camelCase names), relative to where it is raised."""
    return ValidationError.from_exception_data(
        "rollout",
        [
            InitErrorDetails(
                type=PydanticCustomError("rollout", message),  # type: ignore[arg-type]
                loc=loc,
                input=value,
            )
        ],
    )


def plan(rollout: RolloutSpec, edges: list[str]) -> list[list[str]]:
    """The edges of each wave, in order (waves that would move nothing left out); a
    ValidationError names a wave's edge that is unknown or already in an earlier wave."""
    known = set(edges)
    planned: set[str] = set()
    waves: list[list[str]] = []
    for i, wave in enumerate(rollout.waves):
        new: list[str] = []
        if wave.edges is not None:
            for j, edge in enumerate(wave.edges):
                loc = ("rollout", "waves", i, "edges", j)
                if edge not in known:
                    raise _error(loc, f"{edge!r} is not one of spec.edges", edge)
                if edge in planned or edge in new:
                    raise _error(loc, f"{edge!r} is already in an earlier wave", edge)
                new.append(edge)
        else:
            # Cumulative, and at least one new edge while edges remain.
            total = max(math.ceil((wave.percent or 0) * len(edges) / 100), len(planned) + 1)
            rest = (e for e in edges if e not in planned)
            new = [e for _, e in zip(range(total - len(planned)), rest, strict=False)]
        planned.update(new)
        if new:
            waves.append(new)
    return waves


def check_rollout(rollout: RolloutSpec | None, edges: list[str]) -> None:
    """Raise a ValidationError naming ``rollout.<field>`` when ``rollout`` does not fit
    ``edges`` (a Publish's spec.edges)."""
    if rollout is None:
        return
    if not edges:
        raise _error(("rollout",), "needs spec.edges", None)
    waves = plan(rollout, edges)
    if sum(len(w) for w in waves) < len(edges):
        raise _error(
            ("rollout", "waves", len(rollout.waves) - 1),
            "the last wave must reach every edge (percent: 100, or names covering the rest)",
            None,
        )
    if rollout.budget(len(edges)) > len(edges):
        raise _error(
            ("rollout", "maxFailures"),
            f"{rollout.max_failures} is over the edge count ({len(edges)})",
            rollout.max_failures,
        )


class WaveStatus(SpecModel):
    """One wave of a rollout, as status.rollout.waves shows it."""

    edges: list[str] | None = None
    state: Literal["Pending", "Progressing", "Done", "Aborted"] | None = None
    moved_at: str | None = Field(default=None, description="When its pointers moved.")
    done_at: str | None = Field(default=None, description="When its edges were all Current.")


class RolloutStatus(SpecModel):
    """Where the rollout of the published version stands (everything needed to resume it)."""

    phase: Literal["Progressing", "Complete", "Aborted"] | None = None
    version: str | None = None
    digest: str | None = Field(default=None, description="The manifest the pointers move to.")
    wave: int | None = Field(default=None, description="The current wave, from 1.")
    waves: list[WaveStatus] | None = None
    moved_at: str | None = Field(default=None, description="When the current wave moved.")
    updated: int | None = Field(default=None, description="Edges Current on the version.")
    pending: int | None = Field(
        default=None, description="Edges of done waves that were offline: they catch up later."
    )
    failed: int | None = None
    failed_edges: list[str] | None = None
    failure_reasons: dict[str, str] | None = Field(default=None, description="Why, per edge.")
    reason: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    rollback: dict[str, str] | None = Field(
        default=None,
        description="Each moved edge's pointer before the rollout (an abort's target).",
    )
    superseded: str | None = Field(
        default=None, description="The digest of the rollout it replaced."
    )
    handled_request: str | None = Field(
        default=None, description="The last edgepipe.io/rollout-request acted on."
    )
