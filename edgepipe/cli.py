"""``edgepipe``: the command line for models, publishing and the edge.

Errors are one line on stderr and a non-zero exit; ``--debug`` shows tracebacks.
Registry credentials come from ``--username``/``--password`` or ``OCI_USERNAME``/
``OCI_PASSWORD``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
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


def emit(obj: Any, output: str, text: Callable[[Any], str] | None = None) -> None:
    """Print for people (text) or for scripts (json, yaml)."""
    if output == "json":
        click.echo(json.dumps(obj, indent=2, default=str))
    elif output == "yaml":
        import yaml

        click.echo(yaml.safe_dump(obj, sort_keys=False), nl=False)
    else:
        click.echo(text(obj) if text else json.dumps(obj, indent=2, default=str))


def output_option(fn):
    return click.option(
        "-o",
        "--output",
        type=click.Choice(["text", "json", "yaml"]),
        default="text",
        help="Output format.",
    )(fn)


def kube_options(fn):
    fn = click.option("--context", help="Kubeconfig context.")(fn)
    fn = click.option("-n", "--namespace", help="Namespace (default: the context's).")(fn)
    return click.option(
        "--kubeconfig", envvar="KUBECONFIG", help="Kubeconfig file [env KUBECONFIG]."
    )(fn)


def _client(kubeconfig, namespace, context):
    from .client.cluster import Client

    return Client(kubeconfig=kubeconfig, namespace=namespace, context=context)


def _wait_progress(label: str):
    console = _console()
    seen: list[str] = []

    def show(status: dict) -> None:
        line = f"{label}: {status.get('phase') or 'waiting'}"
        if status.get("readyReplicas") is not None and status.get("replicas") is not None:
            line += f" ({status['readyReplicas']}/{status['replicas']} ready)"
        if status.get("message"):
            line += f" - {status['message']}"
        if not seen or seen[-1] != line:
            seen.append(line)
            console.print(line)

    return show


def _console():
    from rich.console import Console

    return Console(stderr=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks on errors.")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """edgepipe: pipelines of ONNX models on Kubernetes and at the edge."""
    ctx.obj = {"debug": debug}
    import warnings

    from urllib3.exceptions import InsecureRequestWarning

    # A kubeconfig that skips TLS verification is the user's choice; say so once, not per call.
    warnings.simplefilter("once", InsecureRequestWarning)


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


@model.command("list")
@registry_options
@output_option
def model_list(
    registry: str, username: str | None, password: str | None, plain_http: bool | None, output: str
) -> None:
    """List the models (and their versions) under a registry prefix."""
    from edgepipe_operator.publish import Target

    try:
        target = Target.parse(registry, oci.Credentials(username, password), plain_http)
        client = target.client()
        base = target.repository("models", "") + "/"
        rows = [
            {
                "name": repo[len(base) :],
                "repository": f"{target.registry}/{repo}",
                "versions": client.tags(repo),
            }
            for repo in client.repositories()
            if repo.startswith(base)
        ]
    except (oci.OciError, ValueError) as exc:
        raise _fail(exc) from None
    emit(
        rows,
        output,
        lambda rs: (
            "\n".join(f"{r['name']:<24} {', '.join(r['versions'])}" for r in rs) or "no models"
        ),
    )


# -- pipelines -------------------------------------------------------------------------


def _pipeline_line(obj: dict) -> str:
    st = obj.get("status") or {}
    return (
        f"{obj['metadata']['name']:<24} {st.get('phase') or '-':<11} "
        f"{str(st.get('deployed', False)).lower():<8} {st.get('version') or '-':<38} "
        f"{st.get('url') or ''}"
    )


PIPELINE_HEADER = f"{'NAME':<24} {'PHASE':<11} {'DEPLOYED':<8} {'VERSION':<38} URL"


@main.group()
def pipeline() -> None:
    """Pipelines in the cluster (kubectl's kubeconfig rules)."""


@pipeline.command("apply")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@kube_options
def pipeline_apply(file: Path, kubeconfig, namespace, context) -> None:
    """Create or update the Pipelines (and Publishes) in a YAML FILE."""
    from .client.cluster import ClusterError

    try:
        for obj in _client(kubeconfig, namespace, context).apply_file(file):
            click.echo(f"{obj['kind'].lower()}.edgepipe.io/{obj['metadata']['name']} applied")
    except (ClusterError, OSError, ValueError) as exc:
        raise _fail(exc) from None


@pipeline.command("list")
@kube_options
@output_option
def pipeline_list(kubeconfig, namespace, context, output: str) -> None:
    """List Pipelines."""
    from .client.cluster import ClusterError

    try:
        items = _client(kubeconfig, namespace, context).list("pipelines")
    except ClusterError as exc:
        raise _fail(exc) from None
    emit(items, output, lambda xs: "\n".join([PIPELINE_HEADER, *map(_pipeline_line, xs)]))


@pipeline.command("get")
@click.argument("name")
@kube_options
@output_option
def pipeline_get(name: str, kubeconfig, namespace, context, output: str) -> None:
    """Show one Pipeline."""
    from .client.cluster import ClusterError

    try:
        obj = _client(kubeconfig, namespace, context).get("pipelines", name)
    except ClusterError as exc:
        raise _fail(exc) from None
    emit(obj, output, lambda o: "\n".join([PIPELINE_HEADER, _pipeline_line(o)]))


@pipeline.command("deploy")
@click.argument("name")
@click.option("--timeout", type=float, default=300, show_default=True, help="Seconds to wait.")
@kube_options
@output_option
def pipeline_deploy(name: str, timeout: float, kubeconfig, namespace, context, output: str) -> None:
    """Deploy a Pipeline and wait until it is Running."""
    from .client.cluster import ClusterError

    try:
        st = _client(kubeconfig, namespace, context).deploy(
            name, timeout, _wait_progress(f"pipeline {name}")
        )
    except ClusterError as exc:
        raise _fail(exc) from None
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
    from .client.cluster import ClusterError

    try:
        st = _client(kubeconfig, namespace, context).undeploy(
            name, timeout, _wait_progress(f"pipeline {name}")
        )
    except ClusterError as exc:
        raise _fail(exc) from None
    emit(st, output, lambda s: f"pipeline {name} is Undeployed")


@pipeline.command("logs")
@click.argument("name")
@click.option("--tail", type=int, default=200, show_default=True)
@kube_options
def pipeline_logs(name: str, tail: int, kubeconfig, namespace, context) -> None:
    """Print the logs of a Pipeline's engine pods."""
    from .client.cluster import ClusterError

    client = _client(kubeconfig, namespace, context)
    pods = client._call(
        "listing engine pods",
        client.core.list_namespaced_pod,
        client.namespace,
        label_selector=f"app.kubernetes.io/instance={name},app.kubernetes.io/name=edgepipe-engine",
    ).items
    if not pods:
        raise CliError(f"pipeline {name!r} has no engine pods (is it deployed?)")
    try:
        for pod in pods:
            text = client._call(
                f"logs of {pod.metadata.name}",
                client.core.read_namespaced_pod_log,
                pod.metadata.name,
                client.namespace,
                tail_lines=tail,
            )
            click.echo(f"==> {pod.metadata.name} <==\n{text}")
    except ClusterError as exc:
        raise _fail(exc) from None


# -- inference -------------------------------------------------------------------------


def _engine_target(target: str, engine: str) -> tuple[str, str | None]:
    """(engine base URL, pipeline name or None) from a pipeline name or an engine URL."""
    if target.startswith(("http://", "https://")):
        base, sep, name = target.partition("/pipelines/")
        return base.rstrip("/"), (name.strip("/") or None) if sep else None
    return engine.rstrip("/"), target


@main.command("infer")
@click.argument("target", metavar="PIPELINE_OR_URL")
@click.option(
    "--engine",
    default="http://localhost:8080",
    show_default=True,
    help="Engine URL when PIPELINE_OR_URL is a name (after kubectl port-forward).",
)
@click.option(
    "--image",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="An image: letterboxed to 640x640 and sent as the first input.",
)
@click.option(
    "--input",
    "input_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="pandas-records JSON (.json) or Arrow IPC (.arrow).",
)
@click.option(
    "--draw",
    type=click.Path(dir_okay=False, path_type=Path),
    help="With --image: save it with the detected boxes and labels.",
)
@click.option("--confidence", type=float, default=0.5, show_default=True)
@click.option("--iou", type=float, default=0.25, show_default=True)
@output_option
def infer_cmd(target, engine, image, input_file, draw, confidence, iou, output) -> None:
    """Send an image or an input file to a pipeline and print the results."""
    from .client import EngineClient, EngineClientError

    if bool(image) == bool(input_file):
        raise click.UsageError("give --image FILE or --input FILE (one of them)")
    if draw and not image:
        raise click.UsageError("--draw needs --image")
    base, name = _engine_target(target, engine)
    client = EngineClient(base, name)
    try:
        if image:
            _infer_image(client, image, draw, confidence, iou, output)
        elif input_file.suffix == ".arrow":
            import pyarrow as pa

            with pa.memory_map(str(input_file)) as src:
                table = pa.ipc.open_file(src).read_all()
            result = client.infer_arrow(table)
            emit(
                result.to_pylist(),
                output,
                lambda _: (
                    f"{result.num_rows} row(s): "
                    + ", ".join(f"{f.name} ({f.type})" for f in result.schema)
                ),
            )
        else:
            records = json.loads(input_file.read_text())
            result = client.infer_records(None, records)
            emit(result, output, _records_text)
    except EngineClientError as exc:
        raise _fail(exc) from None
    except (OSError, ValueError) as exc:
        raise _fail(exc) from None


def _records_text(records: list[dict]) -> str:
    lines = []
    for i, rec in enumerate(records):
        dims = ", ".join(f"{k}{v['dim']}" for o in rec["outputs"] for k, v in o.items())
        ms = " + ".join(f"{e / 1e6:.1f}" for e in rec["elapsed"])
        lines.append(f"row {i}: {rec['pipeline_name']} / {rec['model_name']}: {dims} ({ms} ms)")
    return "\n".join(lines)


def _infer_image(
    client, image: Path, draw: Path | None, confidence: float, iou: float, output: str
) -> None:
    import numpy as np

    from . import yolo

    pixels = yolo.load_image(image)
    tensor, transform = yolo.letterbox(pixels)
    result = client.infer_tensor(None, None, tensor)
    out = result.outputs[0]
    if out.ndim == 2 and out.shape[1] == 6:  # the engine already decoded (postprocess)
        dets = []
        for x1, y1, x2, y2, score, cls in out:
            box = (
                np.array([x1, y1, x2, y2]) - [transform.pad_x, transform.pad_y] * 2
            ) / transform.scale
            box = np.clip(box, 0, [transform.width, transform.height] * 2)
            dets.append(
                yolo.Detection(int(cls), str(int(cls)), float(score), tuple(float(v) for v in box))
            )
    elif out.ndim == 3 and out.shape[0] == 1 and out.shape[1] >= 5:
        dets = yolo.decode(out, transform, confidence_thres=confidence, iou_thres=iou)
    else:
        emit(_records_text([result.record]), output if output != "text" else "text", lambda t: t)
        return
    rows = [d.to_dict() for d in dets]
    emit(
        rows,
        output,
        lambda rs: (
            "\n".join(f"{r['label']:<8} score {r['score']:.3f}  box {r['box']}" for r in rs)
            or "no detections"
        ),
    )
    if draw:
        draw.parent.mkdir(parents=True, exist_ok=True)
        yolo.draw(pixels, dets, draw)
        click.echo(f"annotated image: {draw}", err=True)


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


def _publish_line(obj: dict) -> str:
    st = obj.get("status") or {}
    return (
        f"{obj['metadata']['name']:<28} {obj['spec']['pipeline']:<24} "
        f"{st.get('phase') or '-':<15} {st.get('helmChartVersion') or '-'}"
    )


PUBLISH_HEADER = f"{'NAME':<28} {'PIPELINE':<24} {'PHASE':<15} CHART VERSION"


@publish.command("create")
@click.argument("name")
@click.option("--pipeline", "pipeline_name", required=True, help="Pipeline to publish.")
@click.option("--registry", required=True, metavar="HOST[/PREFIX]")
@click.option("--secret", help="Secret with the registry's username and password.")
@click.option("--plain-http", is_flag=True, help="The registry speaks plain HTTP.")
@click.option("--version", "version", help="Pipeline version (default: current).")
@click.option("--timeout", type=float, default=600, show_default=True)
@kube_options
@output_option
def publish_create(
    name,
    pipeline_name,
    registry,
    secret,
    plain_http,
    version,
    timeout,
    kubeconfig,
    namespace,
    context,
    output,
) -> None:
    """Create a Publish and wait until it is Published (or Failed)."""
    from .client.cluster import ClusterError

    try:
        st = _client(kubeconfig, namespace, context).publish(
            name,
            pipeline_name,
            registry,
            secret=secret,
            plain_http=plain_http,
            version=version,
            timeout=timeout,
            progress=_wait_progress(f"publish {name}"),
        )
    except ClusterError as exc:
        raise _fail(exc) from None
    if output != "text":
        emit(st, output)
        return
    _print_fields(st)


@publish.command("get")
@click.argument("name")
@kube_options
@output_option
def publish_get(name, kubeconfig, namespace, context, output) -> None:
    """Show one Publish and its status fields."""
    from .client.cluster import ClusterError

    try:
        obj = _client(kubeconfig, namespace, context).get("publishes", name)
    except ClusterError as exc:
        raise _fail(exc) from None
    if output != "text":
        emit(obj, output)
        return
    click.echo("\n".join([PUBLISH_HEADER, _publish_line(obj)]))
    if (obj.get("status") or {}).get("phase") == "Published":
        _print_fields(obj["status"])


@publish.command("list")
@kube_options
@output_option
def publish_list(kubeconfig, namespace, context, output) -> None:
    """List Publishes."""
    from .client.cluster import ClusterError

    try:
        items = _client(kubeconfig, namespace, context).list("publishes")
    except ClusterError as exc:
        raise _fail(exc) from None
    emit(items, output, lambda xs: "\n".join([PUBLISH_HEADER, *map(_publish_line, xs)]))


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
