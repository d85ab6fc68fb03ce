"""``edgepipe pipeline``: Pipelines in the cluster, with kubectl's kubeconfig rules."""

from __future__ import annotations

from pathlib import Path

import click

from .common import cluster, emit, kube_options, output_option, wait_progress

HEADER = f"{'NAME':<24} {'PHASE':<11} {'DEPLOYED':<8} {'VERSION':<38} URL"


def _line(obj: dict) -> str:
    st = obj.get("status") or {}
    return (
        f"{obj['metadata']['name']:<24} {st.get('phase') or '-':<11} "
        f"{str(st.get('deployed', False)).lower():<8} {st.get('version') or '-':<38} "
        f"{st.get('url') or ''}"
    )


@click.group()
def pipeline() -> None:
    """Pipelines in the cluster (kubectl's kubeconfig rules)."""


@pipeline.command("apply")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@kube_options
def pipeline_apply(file: Path, kubeconfig, namespace, context) -> None:
    """Create or update the Pipelines (and Publishes) in a YAML FILE."""
    for obj in cluster(kubeconfig, namespace, context).apply_file(file):
        click.echo(f"{obj['kind'].lower()}.edgepipe.io/{obj['metadata']['name']} applied")


@pipeline.command("list")
@kube_options
@output_option
def pipeline_list(kubeconfig, namespace, context, output: str) -> None:
    """List Pipelines."""
    items = cluster(kubeconfig, namespace, context).list("pipelines")
    emit(items, output, lambda xs: "\n".join([HEADER, *map(_line, xs)]))


@pipeline.command("get")
@click.argument("name")
@kube_options
@output_option
def pipeline_get(name: str, kubeconfig, namespace, context, output: str) -> None:
    """Show one Pipeline."""
    obj = cluster(kubeconfig, namespace, context).get("pipelines", name)
    emit(obj, output, lambda o: "\n".join([HEADER, _line(o)]))


@pipeline.command("deploy")
@click.argument("name")
@click.option("--timeout", type=float, default=300, show_default=True, help="Seconds to wait.")
@kube_options
@output_option
def pipeline_deploy(name: str, timeout: float, kubeconfig, namespace, context, output: str) -> None:
    """Deploy a Pipeline and wait until it is Running."""
    st = cluster(kubeconfig, namespace, context).deploy(
        name, timeout, wait_progress(f"pipeline {name}")
    )
    emit(st, output, lambda s: f"pipeline {name} is Running: {s.get('url')}")


@pipeline.command("undeploy")
@click.argument("name")
@click.option("--timeout", type=float, default=120, show_default=True, help="Seconds to wait.")
@kube_options
@output_option
def pipeline_undeploy(
    name: str, timeout: float, kubeconfig, namespace, context, output: str
) -> None:
    """Undeploy a Pipeline (its engine goes; the Pipeline stays)."""
    st = cluster(kubeconfig, namespace, context).undeploy(
        name, timeout, wait_progress(f"pipeline {name}")
    )
    emit(st, output, lambda s: f"pipeline {name} is Undeployed")


@pipeline.command("logs")
@click.argument("name")
@click.option("--tail", type=int, default=200, show_default=True)
@kube_options
def pipeline_logs(name: str, tail: int, kubeconfig, namespace, context) -> None:
    """Print the logs of a Pipeline's engine pods."""
    for pod, text in cluster(kubeconfig, namespace, context).logs(name, tail).items():
        click.echo(f"==> {pod} <==\n{text}")
