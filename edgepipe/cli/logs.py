"""``edgepipe logs``: the inference logs a pipeline's edges uploaded, as one table."""

from __future__ import annotations

import sys

import click

from .common import emit, registry_options, target


def _text(table, pipeline: str, filtered: bool) -> str:
    """One line per record: time, edge, id, model, milliseconds, and the outputs' shapes."""
    if table.num_rows == 0:
        which = " that match --edge/--since" if filtered else ""
        return f"pipeline {pipeline} is published; no inference logs{which} uploaded (yet)"
    shown = table.select(["time", "edge", "id", "model_name", "elapsed_ns"]).to_pandas()
    shown["elapsed_ms"] = (shown.pop("elapsed_ns") / 1e6).round(2)
    shown["outputs"] = [
        ", ".join(f"{t['name']}{list(t['shape'])}" for t in tensors)
        for tensors in table.column("outputs").to_pylist()
    ]
    return shown.to_string(index=False)


@click.command("logs")
@click.argument("pipeline")
@registry_options
@click.option("--edge", help="Only this edge location's records.")
@click.option(
    "--since", help="Only records from this time on (ISO 8601 with a zone, or Unix seconds)."
)
@click.option(
    "-o",
    "--output",
    type=click.Choice(["text", "json", "yaml", "arrow"]),
    default="text",
    show_default=True,
    help="Output format; arrow: an Arrow IPC stream on stdout (pyarrow.ipc.open_stream reads it).",
)
def logs_cmd(pipeline, registry, username, password, plain_http, edge, since, output) -> None:
    """Read PIPELINE's inference logs, uploaded by its edges to --registry."""
    from edgepipe.client.logs import read_logs

    table = read_logs(
        target(registry, username, password, plain_http), pipeline, edge=edge, since=since
    )
    if output == "arrow":
        import pyarrow as pa

        if sys.stdout.isatty():
            raise click.UsageError("-o arrow writes binary: redirect it to a file or a pipe")
        with pa.ipc.new_stream(sys.stdout.buffer, table.schema) as writer:
            writer.write_table(table)
        return
    if output in ("json", "yaml"):
        import json

        from edgepipe import edgelog

        records = edgelog.records_json(table)
        if output == "yaml":
            emit(records, output)
        else:  # one line: outputs hold thousands of numbers, one per line would not read
            click.echo(json.dumps(records))
        return
    click.echo(_text(table, pipeline, bool(edge or since)))
