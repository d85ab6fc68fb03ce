"""``edgepipe``: the command line for models, publishing and the edge.

Errors are one line on stderr and a non-zero exit; ``--debug`` shows tracebacks.
Registry credentials come from ``--username``/``--password`` or ``OCI_USERNAME``/
``OCI_PASSWORD``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from . import oci
from .config import ConfigError

ENGINE_IMAGE_DEFAULT = "edgepipe:0.1.0"


class CliError(click.ClickException):
    """A failure shown as one line."""


def _fail(exc: Exception) -> CliError:
    return CliError(str(exc))


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


def _progress(label: str):
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    bar = Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        transient=False,
        console=_console(),
    )
    task = bar.add_task(label, total=None)

    def update(done: int, total: int) -> None:
        bar.update(task, completed=done, total=total or None)

    return bar, update


def _console():
    from rich.console import Console

    return Console(stderr=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks on errors.")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """edgepipe: pipelines of ONNX models on Kubernetes and at the edge."""
    ctx.obj = {"debug": debug}


@main.group()
def model() -> None:
    """Models in an OCI registry."""


@model.command("push")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--name", help="Model name (default: the file's name).")
@click.option("--version", "version", help="Model version (default: derived from sha256).")
@registry_options
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text")
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
    from edgepipe_operator.publish import Target

    from .config import sanitize_name

    name = name or sanitize_name(file.stem)
    try:
        target = Target.parse(registry, oci.Credentials(username, password), plain_http)
        client = target.client()
        bar, update = _progress(f"pushing {file.name}")
        with bar:
            pushed = oci.push_model(
                client,
                file,
                name=name,
                repository=target.repository("models", name),
                version=version,
                progress=update,
            )
    except (oci.OciError, ValueError) as exc:
        raise _fail(exc) from None
    if output == "json":
        click.echo(
            json.dumps(
                {
                    "reference": pushed.reference,
                    "sha256": pushed.sha256,
                    "uploaded": pushed.uploaded,
                }
            )
        )
        return
    note = "uploaded" if pushed.uploaded else "already in the registry: nothing uploaded"
    click.echo(f"{file.name}: sha256 {pushed.sha256} ({note})", err=True)
    click.echo(pushed.reference)


@main.group()
def publish() -> None:
    """Publish pipelines for the edge."""


@publish.command("push")
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
    default=ENGINE_IMAGE_DEFAULT,
    show_default=True,
    help="Engine image the chart and docker run use.",
)
@click.option("--chart-name", help="Chart name (default: the pipeline's name).")
@click.option("--replicas", type=int, default=1, show_default=True)
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text")
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
    output: str,
) -> None:
    """Publish a pipeline config (or --model FILE) without a cluster: models, pipeline, chart."""
    from edgepipe_operator.publish import PublishError, Target
    from edgepipe_operator.publish import publish as do_publish

    from .config import config_for_model_file, load_config, resolve_local
    from .resources import DeploymentConfig

    if bool(config_file) == bool(model_file):
        raise click.UsageError("give a CONFIG file or --model FILE.onnx (one of them)")
    try:
        raw = load_config(config_file) if config_file else config_for_model_file(model_file)
        config = _resolve_refs(resolve_local(raw))
        deployment = DeploymentConfig(
            replicas=replicas,
            cpus=config.engine.cpus,
            memory=config.engine.memory,
            gpus=config.engine.gpus,
        )
        target = Target.parse(registry, oci.Credentials(username, password), plain_http)
        console = _console()
        bar, update = _progress(f"publishing {config.name}")
        with bar:
            result = do_publish(
                config,
                target,
                engine_image=engine_image,
                deployment=deployment,
                chart_name=chart_name,
                log=lambda m: bar.console.print(f"  {m}"),
                progress=update,
            )
    except (ConfigError, oci.OciError, PublishError, ValueError) as exc:
        raise _fail(exc) from None
    fields = result.status_fields()
    if output == "json":
        click.echo(json.dumps(fields, indent=2))
        return
    del console
    _print_fields(fields)


def _resolve_refs(config):
    """Fill in the sha256 of oci:// models from the registry (local files already are)."""
    steps = []
    for i, step in enumerate(config.steps):
        model = step.model
        if model.url and model.url.startswith("oci://") and not model.sha256:
            try:
                model = model.model_copy(update={"sha256": oci.model_sha256(model.url)})
            except oci.OciError as exc:
                raise ConfigError(f"steps[{i}].model.url: {exc}") from None
        steps.append(step.model_copy(update={"model": model}))
    return config.model_copy(update={"steps": steps}).with_version()


def _print_fields(fields: dict[str, Any]) -> None:
    labels = {
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
    for key, label in labels.items():
        value = fields.get(key)
        if isinstance(value, dict):
            value = json.dumps(value)
        click.echo(f"{label + ':':<22} {value}")
    if fields.get("dockerRunCommand"):
        click.echo("\nRun it at the edge:\n  " + fields["dockerRunCommand"].replace("\n", "\n  "))


@publish.command("show")
@click.argument("name")
@click.option("-n", "--namespace", default=None, help="Namespace (default: the context's).")
@click.option("--kubeconfig", envvar="KUBECONFIG", help="Kubeconfig file [env KUBECONFIG].")
def publish_show(name: str, namespace: str | None, kubeconfig: str | None) -> None:
    """Print a Publish's docker run line, compose.yaml and helm install command."""
    from edgepipe_operator.publish import compose_yaml, helm_install_command, local_values_yaml

    from .resources import GROUP, VERSION

    try:
        import kubernetes

        kubernetes.config.load_kube_config(config_file=kubeconfig)
        ns = namespace or kubernetes.config.list_kube_config_contexts(kubeconfig)[1]["context"].get(
            "namespace", "default"
        )
        api = kubernetes.client.CustomObjectsApi()
        obj = api.get_namespaced_custom_object(GROUP, VERSION, ns, "publishes", name)
    except Exception as exc:  # config, network or 404: one line either way
        raise _fail(RuntimeError(f"cannot read publish {name!r}: {exc}")) from None
    status = obj.get("status") or {}
    if status.get("phase") != "Published":
        raise CliError(
            f"publish {name!r} is {status.get('phase') or 'not reconciled yet'}"
            + (f": {status.get('message')}" if status.get("message") else "")
        )
    registry_url = obj["spec"]["registry"]["url"]
    registry = registry_url.split("/", 1)[0]
    plain = bool(obj["spec"]["registry"].get("plainHttp"))
    click.echo("# docker run\n" + status["dockerRunCommand"] + "\n")
    click.echo("# compose.yaml\n" + compose_yaml(status, registry, plain))
    click.echo("# local-values.yaml\n" + local_values_yaml(registry, plain))
    click.echo("# helm install\n" + helm_install_command(status, obj["spec"]["pipeline"], plain))


def run() -> None:
    try:
        main(standalone_mode=False)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        sys.exit(130)
    except Exception as exc:
        if "--debug" in sys.argv:
            raise
        click.echo(f"Error: {exc}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    run()
