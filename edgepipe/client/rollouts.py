"""A Publish's rollout and its edges through the Kubernetes API: start one (a new version),
abort or resume it, wait for it wave by wave, and list the edges as a DataFrame (a mixin of
``cluster.Client``, which it uses through ``publishes.ClusterApi``)."""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any

from .publishes import ClusterApi
from .status import WAIT_SECONDS, ClusterError, Progress, find_version, status_is_current

if TYPE_CHECKING:
    import pandas as pd

# The CLI and the API ask the operator to abort or resume with this annotation; its value
# is "<abort|resume>:<id>", and the operator writes the value it acted on to
# status.rollout.handledRequest (once per id).
ROLLOUT_REQUEST = "edgepipe.io/rollout-request"
DONE = ("Complete", "Aborted")
EDGE_COLUMNS = ["edge", "version", "state", "lastSeen", "reason", "wave"]


def edge_rows(status: dict[str, Any]) -> list[dict[str, Any]]:
    """One dict per edge of a Publish's status, with the columns of ``Client.edges``."""
    return [
        {
            "edge": e.get("name"),
            "version": e.get("version"),
            "state": e.get("state") or "Unknown",
            "lastSeen": e.get("lastSeen"),
            "reason": e.get("reason"),
            "wave": e.get("wave"),
        }
        for e in status.get("edges") or []
    ]


def wave_line(rollout: dict[str, Any]) -> str:
    """``wave 2/3: 4 updated, 2 pending, 0 failed``, or the phase once it has ended."""
    counts = (
        f"{rollout.get('updated', 0)} updated, {rollout.get('pending', 0)} pending, "
        f"{rollout.get('failed', 0)} failed"
    )
    phase = rollout.get("phase") or "Progressing"
    if phase in DONE:
        why = f" ({rollout['reason']})" if phase == "Aborted" and rollout.get("reason") else ""
        return f"{phase}: {counts}{why}"
    return f"wave {rollout.get('wave', 1)}/{len(rollout.get('waves') or []) or '?'}: {counts}"


class RolloutMixin:
    """Rollouts, for a class that is a ``ClusterApi`` (each method's ``self`` says so)."""

    def edges(self: ClusterApi, name: str) -> pd.DataFrame:
        """The Publish's edges as the operator last saw them: one row per edge with its
        ``version``, ``state`` (Current, Downloading, Waiting, Probation, RolledBack,
        Rejected, Offline or Unknown), ``lastSeen`` (UTC), ``reason`` and ``wave`` (1-based)."""
        import pandas as pd

        rows = edge_rows(self.get("publishes", name).get("status") or {})
        df = pd.DataFrame(rows, columns=EDGE_COLUMNS)
        df["lastSeen"] = pd.to_datetime(df["lastSeen"], utc=True, errors="coerce")
        df["wave"] = df["wave"].astype("Int64")
        return df

    def rollout(
        self: ClusterApi,
        name: str,
        to: str | None = None,
        *,
        abort: bool = False,
        resume: bool = False,
        timeout: float = WAIT_SECONDS,
        progress: Progress | None = None,
    ) -> dict:
        """Roll the Publish ``to`` a pipeline version (its ``spec.version``; 8 or more
        characters of it suffice), ``abort`` its rollout, or ``resume`` an aborted one; then
        wait and return ``status.rollout``. Without ``abort``, the wait ends when the
        rollout is Complete or Aborted (an Aborted rollout is returned, not raised: its
        ``reason`` and ``failedEdges`` say why); with it, once the operator has acted.
        ``progress`` gets ``status.rollout`` each time its wave or counts change."""
        if sum((to is not None, abort, resume)) > 1:
            raise ValueError("give one of to=, abort=True or resume=True")
        obj = self.get("publishes", name)
        request = version = None
        if to is not None:
            pipeline = obj["spec"]["pipeline"]
            kept = (self.get("pipelines", pipeline).get("status") or {}).get("versions") or []
            version = find_version(pipeline, [v["version"] for v in kept], to)
            if obj["spec"].get("version") != version:
                self._merge("publishes", name, {"spec": {"version": version}})
        elif abort or resume:
            request = _ask(self, name, obj, "abort" if abort else "resume")

        def done(o: dict) -> bool:
            st = o.get("status") or {}
            roll = st.get("rollout") or {}
            if request is not None:
                handled = roll.get("handledRequest") == request
                return handled and (abort or roll.get("phase") in DONE)
            if not status_is_current(o) or st.get("phase") != "Published":
                return False
            if version is not None and st.get("pipelineVersion") != version:
                return False
            if version is not None and roll and roll.get("version") != version:
                return False  # the previous version's rollout, still shown
            return roll.get("phase") in DONE or (not roll and not o["spec"].get("edges"))

        def failed(o: dict) -> str | None:
            st = o.get("status") or {}
            if request is None and status_is_current(o) and st.get("phase") == "Failed":
                return f"{st.get('reason')}: {st.get('message')}"
            return None

        status = self.wait(
            "publishes",
            name,
            done=done,
            failed=failed,
            timeout=timeout,
            progress=_per_wave(progress, version) if progress else None,
        )
        return status.get("rollout") or {}


def _ask(cluster: ClusterApi, name: str, obj: dict, what: str) -> str:
    """Set the request annotation (a new id each time, so the operator acts on it once)."""
    roll = (obj.get("status") or {}).get("rollout") or {}
    phase = roll.get("phase")
    if what == "abort" and phase != "Progressing":
        raise ClusterError(f"publish {name!r} has no rollout in progress to abort ({phase})")
    if what == "resume" and phase != "Aborted":
        raise ClusterError(f"publish {name!r} has no aborted rollout to resume ({phase})")
    request = f"{what}:{secrets.token_hex(6)}"
    cluster._merge("publishes", name, {"metadata": {"annotations": {ROLLOUT_REQUEST: request}}})
    return request


def _per_wave(progress: Progress, version: str | None) -> Progress:
    """Calls ``progress(status.rollout)`` when the rollout's wave, counts or phase change
    (and, for a new version, only for that version's rollout)."""
    seen: list[str] = []

    def show(status: dict) -> None:
        roll = status.get("rollout")
        if not roll or (version is not None and roll.get("version") != version):
            return
        line = wave_line(roll)
        if not seen or seen[-1] != line:
            seen.append(line)
            progress(roll)

    return show
