"""``edgepipe publish rollout`` and ``edgepipe publish edges``: a Publish's rollout, wave by
wave, and the table of its edges (registered on the ``publish`` group by ``cli/__init__``)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import click

from .common import CliError, cluster, emit, kube_options, output_option, say, timeout_option


def age(stamp: str | None, now: datetime | None = None) -> str:
    """How long ago an RFC 3339 time was, as kubectl shows ages (``8s``, ``5m``, ``3h``, ``2d``)."""
    if not stamp:
        return "never"
    try:
        then = datetime.fromisoformat(stamp)
    except ValueError:
        return stamp
    if then.tzinfo is None:
        then = then.replace(tzinfo=UTC)
    secs = max(0, int(((now or datetime.now(UTC)) - then).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if secs >= size:
            return f"{secs // size}{unit} ago"
    return f"{secs}s ago"


def edges_table(rows: list[dict[str, Any]], now: datetime | None = None) -> str:
    """kubectl-style columns sized to their content; versions short, as ``pipeline list``."""
    head = ["EDGE", "VERSION", "STATE", "LAST SEEN", "REASON"]
    lines = [head] + [
        [
            r["edge"],
            (r.get("version") or "-")[:8],
            r.get("state") or "Unknown",
            age(r.get("lastSeen"), now),
            r.get("reason") or "",
        ]
        for r in rows
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    return "\n".join(
        "   ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines
    )


@click.command("edges")
@click.argument("name")
@kube_options
@output_option
def publish_edges(name: str, kubeconfig, namespace, context, output: str) -> None:
    """A Publish's edges: version, state, when each was last seen, and why (from its status)."""
    from edgepipe.client.rollouts import edge_rows

    status = cluster(kubeconfig, namespace, context).get("publishes", name).get("status") or {}
    rows = edge_rows(status)
    if output == "text" and not rows:
        say(f"publish {name!r} has no edges in its status yet")
    emit(rows, output, edges_table)


@click.command("rollout")
@click.argument("name")
@click.option(
    "--to",
    "to",
    metavar="VERSION",
    help="Roll out this pipeline version (its spec.version; 8 or more characters of it).",
)
@click.option("--abort", is_flag=True, help="Stop the rollout in progress; its wave moves back.")
@click.option("--resume", is_flag=True, help="Go on with an aborted rollout at its wave.")
@timeout_option
@kube_options
@output_option
def publish_rollout(
    name: str, to, abort: bool, resume: bool, timeout: float, kubeconfig, namespace, context, output
) -> None:
    """Roll a Publish out (--to a version), abort or resume its rollout, and wait: one line
    per wave change. Exits 1 when the rollout ends Aborted (unless --abort asked for it)."""
    from edgepipe.client.rollouts import edge_rows, wave_line

    if sum((to is not None, abort, resume)) > 1:
        raise click.UsageError("give one of --to, --abort or --resume")
    client = cluster(kubeconfig, namespace, context)
    roll = client.rollout(
        name,
        to,
        abort=abort,
        resume=resume,
        timeout=timeout,
        progress=lambda r: say(wave_line(r)),
    )
    emit(roll, output, wave_line)
    if roll.get("phase") != "Aborted" or abort:
        return
    failed = sorted(roll.get("failedEdges") or [])
    reasons = roll.get("failureReasons") or {}
    rows = {r["edge"]: r for r in edge_rows(client.get("publishes", name).get("status") or {})}
    for edge in failed if output == "text" else []:
        row = rows.get(edge) or {}
        why = reasons.get(edge) or row.get("reason")
        say(f"  {edge}: {row.get('state') or 'failed'}" + (f" - {why}" if why else ""))
    raise CliError(
        f"the rollout of publish {name!r} was aborted: {roll.get('reason') or 'no reason given'}"
        + (f"; failing edges: {', '.join(failed)}" if failed else "")
    )
