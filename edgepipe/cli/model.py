"""``edgepipe model``: ONNX models pushed to and listed from an OCI registry."""

from __future__ import annotations

from pathlib import Path

import click

from edgepipe import oci

from .common import Transfer, emit, output_option, registry_options, say, target


@click.group()
def model() -> None:
    """Models in an OCI registry."""


@model.command("push")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--name", help="Model name (default: the file's name).")
@click.option("--version", "version", help="Model version (default: derived from sha256).")
@registry_options
@output_option
def model_push(
    file: Path,
    name: str | None,
    version: str | None,
    registry: str,
    username: str | None,
    password: str | None,
    plain_http: bool | None,
    output: str,
) -> None:
    """Push an ONNX FILE as a model artifact and print its reference."""
    from edgepipe.config import sanitize_name

    name = name or sanitize_name(file.stem)
    dest = target(registry, username, password, plain_http)
    # Hashing a large file takes seconds before the first byte goes: say so.
    say(f"hashing {file.name} ({file.stat().st_size / 1e6:.1f} MB)")
    with Transfer(f"pushing {file.name}") as transfer:
        pushed = oci.push_model(
            dest.client(),
            file,
            name=name,
            repository=dest.repository("models", name),
            version=version,
            progress=transfer.update,
        )
    if output != "text":
        emit(
            {"reference": pushed.reference, "sha256": pushed.sha256, "uploaded": pushed.uploaded},
            output,
        )
        return
    note = "uploaded" if pushed.uploaded else "already in the registry: nothing uploaded"
    click.echo(f"{file.name}: sha256 {pushed.sha256} ({note})", err=True)
    click.echo(pushed.reference)


@model.command("list")
@registry_options
@output_option
def model_list(
    registry: str, username: str | None, password: str | None, plain_http: bool | None, output: str
) -> None:
    """List the models (and their versions) under a registry prefix."""
    dest = target(registry, username, password, plain_http)
    client = dest.client()
    base = dest.repository("models", "") + "/"
    rows = [
        {
            "name": repo[len(base) :],
            "repository": f"{dest.registry}/{repo}",
            "versions": client.tags(repo),
        }
        for repo in client.repositories()
        if repo.startswith(base)
    ]
    emit(
        rows,
        output,
        lambda rs: (
            "\n".join(f"{r['name']:<24} {', '.join(r['versions'])}" for r in rs) or "no models"
        ),
    )
