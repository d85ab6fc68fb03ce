"""``edgepipe pipeline``: Pipelines in the cluster, with kubectl's kubeconfig rules."""

from __future__ import annotations

from pathlib import Path

import click

from .common import cluster, emit, kube_options, output_option, timeout_option, wait_progress


def _row(obj: dict, wide: bool) -> list[str]:
    st = obj.get("status") or {}
    version = st.get("version") or "-"
    ready = f"{st.get('readyReplicas', 0)}/{st.get('replicas', 0)}" if st.get("deployed") else "-"
    row = [
        obj["metadata"]["name"],
        st.get("phase") or "-",
        str(st.get("deployed", False)).lower(),
        version if wide else version[:8],  # like a short commit hash; -o wide shows it all
        ready,
    ]
    return [*row, st.get("url") or "-", st.get("message") or ""] if wide else row


def table(objs: list[dict], wide: bool = False) -> str:
    """kubectl-style columns sized to their content: 80 columns unless -o wide."""
    head = ["NAME", "PHASE", "DEPLOYED", "VERSION", "READY"] + (["URL", "MESSAGE"] if wide else [])
    rows = [head, *(_row(o, wide) for o in objs)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    return "\n".join(
        "   ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )


def _details(obj: dict) -> str:
    """The table line, then what a person needs when something is wrong: the message."""
    st = obj.get("status") or {}
    lines = [table([obj])]
    if st.get("url"):
        lines.append(f"URL:      {st['url']}")
    if st.get("autoscaling"):
        lines.append(f"Scaling:  {_scaling(obj)}")
    if st.get("message"):
        lines.append(f"Message:  {st['message']}")
    return "\n".join(lines)


def _scaling(obj: dict) -> str:
    """The autoscaler's line: replicas now and wanted, the metric against its target, and
    why it cannot scale when it cannot."""
    auto = (obj.get("status") or {}).get("autoscaling") or {}
    spec = ((obj.get("spec") or {}).get("deployment") or {}).get("autoscaling") or {}
    now, want = auto.get("currentReplicas", "?"), auto.get("desiredReplicas", "?")
    unit = "%" if spec.get("metric", "cpu") == "cpu" else " in flight"
    target = f"{spec.get('target', 70):g}{unit}"
    line = (
        f"{now} current, {want} desired ({spec.get('minReplicas', 1)}-"
        f"{spec.get('maxReplicas', '?')}); {spec.get('metric', 'cpu')} "
        f"{auto.get('current') or '?'} of target {target}"
    )
    if auto.get("reason"):
        line += f"; cannot scale: {auto['reason']}: {auto.get('message') or ''}".rstrip(": ")
    return line


@click.group()
def pipeline() -> None:
    """Pipelines in the cluster (kubectl's kubeconfig rules)."""


@pipeline.command("apply")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@kube_options
@output_option
def pipeline_apply(file: Path, kubeconfig, namespace, context, output: str) -> None:
    """Create or update the Pipelines (and Publishes) in a YAML FILE."""
    objs = cluster(kubeconfig, namespace, context).apply_file(file)
    emit(
        objs,
        output,
        lambda xs: "\n".join(
            f"{o['kind'].lower()}.edgepipe.io/{o['metadata']['name']} applied" for o in xs
        ),
    )


@pipeline.command("list")
@kube_options
@click.option(
    "-o",
    "--output",
    type=click.Choice(["text", "wide", "json", "yaml"]),
    default="text",
    help="Output format (wide: full versions, URLs and messages).",
)
def pipeline_list(kubeconfig, namespace, context, output: str) -> None:
    """List Pipelines."""
    items = cluster(kubeconfig, namespace, context).list("pipelines")
    if output == "wide":
        click.echo(table(items, wide=True))
        return
    emit(items, output, table)


@pipeline.command("get")
@click.argument("name")
@kube_options
@output_option
def pipeline_get(name: str, kubeconfig, namespace, context, output: str) -> None:
    """Show one Pipeline."""
    obj = cluster(kubeconfig, namespace, context).get("pipelines", name)
    emit(obj, output, _details)


@pipeline.command("deploy")
@click.argument("name")
@timeout_option
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
@timeout_option
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


@pipeline.command("rollback")
@click.argument("name")
@click.option(
    "--to",
    "to",
    metavar="VERSION",
    help="The version to go back to, whole or its first 8 or more characters as "
    "'pipeline list' shows them (default: the one before).",
)
@click.option("--unpin", is_flag=True, help="Follow the spec's steps again.")
@timeout_option
@kube_options
@output_option
def pipeline_rollback(
    name: str, to: str | None, unpin: bool, timeout: float, kubeconfig, namespace, context, output
) -> None:
    """Pin a Pipeline to a past version (spec.version) and wait until it runs it."""
    if unpin and to:
        raise click.UsageError("give --to VERSION or --unpin, not both")
    st = cluster(kubeconfig, namespace, context).rollback(
        name, to, unpin=unpin, timeout=timeout, progress=wait_progress(f"pipeline {name}")
    )
    emit(
        st,
        output,
        lambda s: (
            f"pipeline {name} follows its steps again: version {s.get('version')}"
            if unpin
            else f"pipeline {name} is pinned to version {s.get('version')} ({s.get('phase')}); "
            f"edgepipe pipeline rollback {name} --unpin follows its steps again"
        ),
    )


@pipeline.command("logs")
@click.argument("name")
@click.option(
    "--tail",
    type=int,
    default=200,
    show_default=True,
    metavar="LINES",
    help="How many of each pod's last lines to print.",
)
@kube_options
@output_option
def pipeline_logs(name: str, tail: int, kubeconfig, namespace, context, output: str) -> None:
    """Print the logs of a Pipeline's engine pods."""
    logs = cluster(kubeconfig, namespace, context).engine_logs(name, tail)
    emit(logs, output, lambda ls: "\n".join(f"==> {p} <==\n{t}" for p, t in ls.items()))
