"""``edgepipe console``: the fleet page on 127.0.0.1, reading the cluster as this user."""

from __future__ import annotations

import click

from .common import kube_options, say


@click.command("console")
@click.option(
    "--port", type=click.IntRange(1, 65535), default=8765, show_default=True, help="Local port."
)
@kube_options
def console_cmd(port: int, kubeconfig, namespace, context) -> None:
    """A local web page of the namespace's Pipelines and Publishes: each edge's version,
    state and last upload, and each rollout's waves. Refreshes itself every 2 s; it listens
    on 127.0.0.1 only and reads with your kubeconfig. Ctrl-C stops it."""
    import os

    from edgepipe.console.server import ConsoleSettings, serve

    if kubeconfig and os.pathsep in kubeconfig and kubeconfig == os.environ.get("KUBECONFIG"):
        kubeconfig = None  # a KUBECONFIG list: the client merges its files, as kubectl does
    settings = ConsoleSettings(kubeconfig, namespace, context, port=port)
    serve(settings, ready=lambda url: say(f"edgepipe console: {url} (Ctrl-C stops it)"))
