"""What every command shares: option sets, output formats, progress, and the one place
where library errors become a one-line failure."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

import click

from edgepipe import oci


class CliError(click.ClickException):
    """A failure shown as one line."""


def expected_errors() -> tuple[type[Exception], ...]:
    """Library errors that are the user's to fix: shown as one line, without a traceback.

    Imported here, not at the top, so that ``edgepipe --help`` loads no Kubernetes client;
    the spec's and the engine client's errors only when their modules (pydantic, numpy) are
    loaded: else none of them was raised.
    """
    from edgepipe.client.status import ClusterError
    from edgepipe.publish import PublishError

    return (
        oci.OciError,
        *_if_loaded("edgepipe.spec", "ConfigError"),
        PublishError,
        ClusterError,
        *_if_loaded("edgepipe.client.engine", "EngineClientError"),
        OSError,
        ValueError,
    )


def _if_loaded(module: str, name: str) -> tuple[type[Exception], ...]:
    found = sys.modules.get(module)
    return (getattr(found, name),) if found else ()


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
    import os

    from edgepipe.client.cluster import Client

    if kubeconfig and os.pathsep in kubeconfig and kubeconfig == os.environ.get("KUBECONFIG"):
        kubeconfig = None  # a KUBECONFIG list: the client merges its files, as kubectl does
    return Client(kubeconfig=kubeconfig, namespace=namespace, context=context)


def timeout_option(fn):
    """The one ``--timeout`` of every command that waits, with the one default."""
    from edgepipe.client.status import WAIT_SECONDS

    return click.option(
        "--timeout",
        type=float,
        default=WAIT_SECONDS,
        show_default=True,
        metavar="SECONDS",
        help="How long to wait before giving up; every command that waits has this default, "
        "and a wait that fails (Error, Failed, no operator) ends at once.",
    )(fn)


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


def say(message: str) -> None:
    """One plain line on stderr: never wrapped (a reference stays whole), never markup."""
    click.echo(message, err=True)


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n} bytes"


class Transfer:
    """Bytes sent by one command, on stderr. On a terminal, a bar that appears with the
    first bytes (so a finished or empty transfer never reads ``0/? bytes``); elsewhere
    (a log, CI) a plain line per quarter of each file: nothing to redraw, nothing wrapped.
    ``update`` is the ``(done, total)`` callback; ``log`` prints a line above the bar."""

    def __init__(self, label: str, terminal: bool | None = None, console: Any = None) -> None:
        self.label = label
        self.terminal = sys.stderr.isatty() if terminal is None else terminal
        self._console = console
        self._bar: Any = None
        self._task: Any = None
        self._shown = (-1, -1, -1)  # (total, done, quarter) at the last plain line

    def __enter__(self) -> Transfer:
        if self.terminal:
            from rich.console import Console
            from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

            self._bar = Progress(
                "[progress.description]{task.description}",
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                console=self._console or Console(stderr=True),
            )
            self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()

    def log(self, message: str) -> None:
        if self._bar is not None:
            self._bar.console.print(message, markup=False, highlight=False, soft_wrap=True)
        else:
            say(message)

    def update(self, done: int, total: int) -> None:
        if self._bar is not None:
            if self._task is None:
                self._task = self._bar.add_task(self.label, total=total or None)
            self._bar.update(self._task, completed=done, total=total or None)
            return
        quarter = 4 * done // total if total else 0
        last_total, last_done, last_quarter = self._shown
        new_file = total != last_total or done < last_done
        if new_file or quarter > last_quarter:
            self._shown = (total, done, quarter)
            of = f" of {_size(total)} ({100 * done // total}%)" if total else ""
            say(f"{self.label}: {_size(done)}{of}")
        else:
            self._shown = (total, done, last_quarter)


def wait_progress(label: str) -> Callable[[dict], None]:
    """Prints each new status line of an object being waited on."""
    seen: list[str] = []

    def show(status: dict) -> None:
        line = f"{label}: {status.get('phase') or 'waiting'}"
        if status.get("readyReplicas") is not None and status.get("replicas") is not None:
            line += f" ({status['readyReplicas']}/{status['replicas']} ready)"
        if status.get("message"):
            line += f" - {status['message']}"
        if not seen or seen[-1] != line:
            seen.append(line)
            say(line)

    return show
