"""``edgepipe publish push``: publish without a cluster, optionally rolling out to edges in waves."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import click

from edgepipe.enginepod import ENGINE_IMAGE

from .common import CliError, Transfer, emit, output_option, registry_options, say, target

LABELS = {
    "pipelineVersion": "Pipeline Version",
    "engineUrl": "Engine URL",
    "pipelineUrl": "Pipeline URL",
    "helmChartUrl": "Helm Chart URL",
    "helmChartReference": "Helm Chart Reference",
    "helmChartVersion": "Helm Chart Version",
    "engineConfig": "Engine Config",
    "createdAt": "Created",
    "updatedAt": "Updated",
}


def _edge_text(edge: dict[str, Any]) -> str:
    last = edge.get("lastUpload")
    if not last:
        return f"{edge['name']} (no logs uploaded yet)"
    return f"{edge['name']} (last log upload {last}, {edge.get('lastUploadRecords', '?')} records)"


def fields_text(fields: dict[str, Any]) -> str:
    """A published status for people: labelled fields, then the docker run line."""
    lines = []
    for key, label in LABELS.items():
        value = fields.get(key)
        if isinstance(value, dict):
            value = json.dumps(value)
        lines.append(f"{label + ':':<22} {value}")
    sigs = fields.get("signatures") or {}
    lines.append(f"{'Signed:':<22} " + (", ".join(sigs.values()) if sigs else "no"))
    edges = fields.get("edges") or []
    lines.append(f"{'Edges:':<22} " + ("; ".join(map(_edge_text, edges)) if edges else "-"))
    # One docker line per edge location, each with its EDGE_NAME, as -o json has them.
    runs = [(f"edge {e['name']}", e.get("dockerRunCommand")) for e in edges] or [
        ("the edge", fields.get("dockerRunCommand"))
    ]
    for where, command in runs:
        if command:
            lines.append(f"\nRun it at {where}:\n  " + command.replace("\n", "\n  "))
    if fields.get("rollout"):
        ro = fields["rollout"]
        lines.append(
            f"\nRollout: {ro['phase']} in {len(ro['waves'])} waves, {ro['updated']} updated, "
            f"{ro['pending']} pending, {ro['failed']} failed"
        )
    return "\n".join(lines)


def wave_options(fn):
    fn = click.option(
        "--wave-poll",
        type=float,
        default=2.0,
        show_default=True,
        metavar="SECONDS",
        help="How often the edges' status is read during --waves.",
    )(fn)
    fn = click.option(
        "--wave-timeout",
        type=float,
        metavar="SECONDS",
        help="How long a wave waits for its edges (default 600): then offline edges count "
        "as pending (they catch up later), online ones not yet Current as failed.",
    )(fn)
    fn = click.option(
        "--max-failures",
        metavar="N|N%",
        help="Failed edges (RolledBack, Rejected) tolerated; more abort the rollout and "
        "move the wave's pointers back (default 0).",
    )(fn)
    return click.option(
        "--waves",
        metavar="LIST",
        help="Move the --edge pointers in waves, e.g. 1,50%,100%: N is a cumulative count "
        "of edges, N% a cumulative percent; each wave waits until its edges are Current.",
    )(fn)


# Which flag a RolloutSpec field came from, for errors.
FLAGS = {
    "waves": "--waves",
    "maxFailures": "--max-failures",
    "waveTimeoutSeconds": "--wave-timeout",
}


def _waves(items: str, edges: list[str]) -> list[dict[str, Any]]:
    """``1,50%,100%`` as RolloutSpec waves: a percent as is, a count as the edges it adds."""
    out: list[dict[str, Any]] = []
    planned = 0  # edges moved by the waves so far (the core's rule for percents)
    for i, raw in enumerate(items.split(",")):
        item = raw.strip()
        what = f"item {i + 1} ({item!r})"
        try:
            if item.endswith("%"):
                percent = float(item[:-1])
                out.append({"percent": percent})
                planned = max(math.ceil(percent * len(edges) / 100), planned + 1)
                continue
            count = int(item)
        except ValueError:
            raise click.BadParameter(
                f"{what} is neither a count nor a percent such as 50%", param_hint="'--waves'"
            ) from None
        if not planned < count <= len(edges):
            raise click.BadParameter(
                f"{what}: a cumulative count must rise above {planned} and be at most the "
                f"{len(edges)} --edge",
                param_hint="'--waves'",
            )
        out.append({"edges": edges[planned:count]})
        planned = count
    return out


def rollout_spec(
    edges: list[str], waves: str | None, max_failures: str | None, timeout: float | None
):
    """The rollout the wave flags ask for (None without --waves), or a click error naming
    the flag."""
    from pydantic import ValidationError

    from edgepipe.config import config_error
    from edgepipe.rolloutspec import RolloutSpec, check_rollout

    if waves is None:
        for flag, value in (("--max-failures", max_failures), ("--wave-timeout", timeout)):
            if value is not None:
                raise click.UsageError(f"{flag} needs --waves")
        return None
    if not edges:
        raise click.UsageError("--waves needs the edges: --edge NAME (repeated)")
    doc: dict[str, Any] = {"waves": _waves(waves, edges)}
    if max_failures is not None:
        doc["maxFailures"] = int(max_failures) if max_failures.isdigit() else max_failures
    if timeout is not None:
        doc["waveTimeoutSeconds"] = timeout
    try:
        rollout = RolloutSpec.model_validate(doc)
        check_rollout(rollout, edges)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = [p for p in err["loc"] if p != "rollout"]
        flag = FLAGS.get(str(loc[0]) if loc else "waves", "--waves")
        message = config_error(exc).message.split("; ")[0].removeprefix("rollout.")
        raise click.BadParameter(message, param_hint=f"'{flag}'") from None
    return rollout


def drive(dest, result, rollout, poll: float) -> dict[str, Any]:
    """Roll ``result`` out in waves, printing each; its status.rollout. An abort is a
    one-line failure (exit 1); Ctrl-C stops, leaving the pointers as they are."""
    from edgepipe.publish.waves import RolloutAborted, WaveDriver

    driver = WaveDriver(
        dest,
        result.pipeline_name,
        result.pipeline_digest,
        result.pipeline_version,
        result.edges,
        rollout,
        log=lambda m: say(f"  {m}"),
        poll_seconds=poll,
    )
    say(f"rolling {result.pipeline_version} out in {len(driver.state.waves)} waves")
    try:
        return driver.run().to_status()
    except RolloutAborted as exc:
        raise CliError(str(exc)) from None
    except KeyboardInterrupt:
        moved = ", ".join(e for e, _ in driver.moves) or "none"
        say(
            f"interrupted at wave {driver.state.wave + 1}/{len(driver.state.waves)}: the "
            f"pointers stay as they are (moved: {moved}); run the push again to go on"
        )
        raise click.exceptions.Abort from None  # exit 130


@click.command("push")
@click.argument(
    "config_file", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option(
    "--model",
    "model_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Publish one ONNX file as a one-step pipeline instead.",
)
@registry_options
@click.option(
    "--engine-image",
    default=ENGINE_IMAGE,
    show_default=True,
    help="Engine image the chart and docker run use.",
)
@click.option("--chart-name", help="Chart name (default: the pipeline's name).")
@click.option(
    "--replicas", type=int, default=1, show_default=True, help="Engine replicas the chart runs."
)
@click.option(
    "--sign-key",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="PEM EC P-256 private key: sign the pipeline and the chart in cosign's format.",
)
@click.option(
    "--sign-key-password",
    envvar="EDGEPIPE_SIGN_KEY_PASSWORD",
    help="Password of an encrypted --sign-key [env EDGEPIPE_SIGN_KEY_PASSWORD].",
)
@click.option("--edge", "edges", multiple=True, help="An edge location's name (repeatable).")
@wave_options
@output_option
def publish_push(
    config_file: Path | None,
    model_file: Path | None,
    registry: str,
    username: str | None,
    password: str | None,
    plain_http: bool | None,
    engine_image: str,
    chart_name: str | None,
    replicas: int,
    sign_key: Path | None,
    sign_key_password: str | None,
    edges: tuple[str, ...],
    waves: str | None,
    max_failures: str | None,
    wave_timeout: float | None,
    wave_poll: float,
    output: str,
) -> None:
    """Publish a pipeline config (or --model FILE) without a cluster: models, pipeline, chart."""
    from edgepipe.config import config_for_model_file, load_config, resolve_local
    from edgepipe.oci import signing
    from edgepipe.outputs import check_validations, readable_outputs
    from edgepipe.publish import publish as do_publish
    from edgepipe.publish import resolve_refs
    from edgepipe.resources import DeploymentConfig, check_edges

    if bool(config_file) == bool(model_file):
        raise click.UsageError("give a CONFIG file or --model FILE.onnx (one of them)")
    try:
        edge_list = check_edges(list(edges))
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--edge'") from None
    rollout = rollout_spec(edge_list, waves, max_failures, wave_timeout)  # before any work
    raw = load_config(config_file) if config_file else config_for_model_file(model_file)
    say(f"hashing the models of {raw.name}")  # seconds for a large model, before any upload
    dest = target(registry, username, password, plain_http)
    config = resolve_refs(resolve_local(raw), dest)
    # Rules that name an output the pipeline does not answer fail here, before any upload.
    check_validations(config, readable_outputs)
    deployment = DeploymentConfig(
        replicas=replicas,
        cpus=config.engine.cpus,
        memory=config.engine.memory,
        gpus=config.engine.gpus,
    )
    try:
        signer = signing.Signer.load(sign_key, sign_key_password) if sign_key else None
    except (signing.KeyProblem, ValueError) as exc:
        raise click.BadParameter(str(exc)) from None
    with Transfer(f"publishing {config.name}") as transfer:
        result = do_publish(
            config,
            dest,
            engine_image=engine_image,
            deployment=deployment,
            chart_name=chart_name,
            log=lambda m: transfer.log(f"  {m}"),
            progress=transfer.update,
            signer=signer,
            edges=edge_list,
            move_edges=[] if rollout else None,  # then the waves move them, one by one
        )
    fields = result.status_fields()
    if rollout is not None:
        fields["rollout"] = drive(dest, result, rollout, wave_poll)
    emit(fields, output, fields_text)
