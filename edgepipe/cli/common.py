"""What every command shares: option sets, output formats, progress, and the one place
where library errors become a one-line failure."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import click

from edgepipe import oci


class CliError(click.ClickException):
    """A failure shown as one line."""


def expected_errors() -> tuple[type[Exception], ...]:
    """Library errors that are the user's to fix: shown as one line, without a traceback.

    Imported here, not at the top, so that ``edgepipe --help`` loads no Kubernetes client.
    """
    from edgepipe.client import EngineClientError
    from edgepipe.client.cluster import ClusterError
    from edgepipe.config import ConfigError
    from edgepipe.publish import PublishError

    return (
        oci.OciError,
        ConfigError,
        PublishError,
        ClusterError,
        EngineClientError,
        OSError,
        ValueError,
    )


def registry_options(fn):
    fn = click.option(
        "--plain-http",
        is_flag=True,
        default=None,
        help="Speak plain HTTP to the registry (default: only on loopback).",
    )(fn)
    fn = click.option(
        "-p",
        "--password",
        envvar="OCI_PASSWORD",
        help="Registry password or token [env OCI_PASSWORD].",
    )(fn)
    fn = click.option(
        "-u", "--username", envvar="OCI_USERNAME", help="Registry user [env OCI_USERNAME]."
    )(fn)
    return click.option(
        "--registry",
        required=True,
        metavar="HOST[/PREFIX]",
        help="Registry and optional path prefix, e.g. localhost:5000/edge.",
    )(fn)


def target(registry: str, username: str | None, password: str | None, plain_http) -> oci.Target:
    return oci.Target.parse(registry, oci.Credentials(username, password), plain_http)


def kube_options(fn):
    fn = click.option("--context", help="Kubeconfig context.")(fn)
    fn = click.option("-n", "--namespace", help="Namespace (default: the context's).")(fn)
    return click.option(
        "--kubeconfig", envvar="KUBECONFIG", help="Kubeconfig file [env KUBECONFIG]."
    )(fn)


def cluster(kubeconfig: str | None, namespace: str | None, context: str | None):
    from edgepipe.client.cluster import Client

    return Client(kubeconfig=kubeconfig, namespace=namespace, context=context)


def output_option(fn):
    return click.option(
        "-o",
        "--output",
        type=click.Choice(["text", "json", "yaml"]),
        default="text",
        help="Output format.",
    )(fn)


def emit(obj: Any, output: str, text: Callable[[Any], str] | None = None) -> None:
    """Print for people (text) or for scripts (json, yaml)."""
    if output == "json":
        click.echo(json.dumps(obj, indent=2, default=str))
    elif output == "yaml":
        import yaml

        click.echo(yaml.safe_dump(obj, sort_keys=False), nl=False)
    else:
        click.echo(text(obj) if text else json.dumps(obj, indent=2, default=str))


def console():
    from rich.console import Console

    return Console(stderr=True)


def progress_bar(label: str):
    """A transfer bar on stderr and the ``(done, total)`` callback that moves it."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    bar = Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        transient=False,
        console=console(),
    )
    task = bar.add_task(label, total=None)

    def update(done: int, total: int) -> None:
        bar.update(task, completed=done, total=total or None)

    return bar, update


def wait_progress(label: str) -> Callable[[dict], None]:
    """Prints each new status line of an object being waited on."""
    out = console()
    seen: list[str] = []

    def show(status: dict) -> None:
        line = f"{label}: {status.get('phase') or 'waiting'}"
        if status.get("readyReplicas") is not None and status.get("replicas") is not None:
            line += f" ({status['readyReplicas']}/{status['replicas']} ready)"
        if status.get("message"):
            line += f" - {status['message']}"
        if not seen or seen[-1] != line:
            seen.append(line)
            out.print(line)

    return show
