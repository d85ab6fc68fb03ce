"""``edgepipe publish``: Publishes in the cluster, and publishing without one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from edgepipe.enginepod import ENGINE_IMAGE

from .common import (
    CliError,
    Transfer,
    cluster,
    emit,
    kube_options,
    output_option,
    registry_options,
    say,
    target,
    timeout_option,
    wait_progress,
)

HEADER = f"{'NAME':<28} {'PIPELINE':<24} {'PHASE':<15} CHART VERSION"
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
    return "\n".join(lines)


def _line(obj: dict) -> str:
    st = obj.get("status") or {}
    return (
        f"{obj['metadata']['name']:<28} {obj['spec']['pipeline']:<24} "
        f"{st.get('phase') or '-':<15} {st.get('helmChartVersion') or '-'}"
    )


@click.group()
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
        edge_list = check_edges(list(edges))
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
        )
    emit(result.status_fields(), output, fields_text)


@publish.command("create")
@click.argument("name")
@click.option("--pipeline", "pipeline_name", required=True, help="Pipeline to publish.")
@click.option(
    "--registry",
    required=True,
    metavar="HOST[/PREFIX]",
    help="Registry and optional path prefix to publish to, e.g. registry.example.com/edge.",
)
@click.option("--secret", help="Secret with the registry's username and password.")
@click.option(
    "--plain-http",
    is_flag=True,
    default=None,
    help="The registry speaks plain HTTP (default: only on loopback).",
)
@click.option("--version", "version", help="Pipeline version (default: current).")
@click.option("--edge", "edges", multiple=True, help="An edge location's name (repeatable).")
@click.option("--sign-secret", help="Secret whose 'key' signs the pipeline and the chart.")
@timeout_option
@kube_options
@output_option
def publish_create(
    name,
    pipeline_name,
    registry,
    secret,
    plain_http,
    version,
    edges,
    sign_secret,
    timeout,
    kubeconfig,
    namespace,
    context,
    output,
) -> None:
    """Create a Publish and wait until it is Published (or Failed)."""
    st = cluster(kubeconfig, namespace, context).publish(
        name,
        pipeline_name,
        registry,
        secret=secret,
        plain_http=plain_http,
        version=version,
        edges=list(edges),
        signing_secret=sign_secret,
        timeout=timeout,
        progress=wait_progress(f"publish {name}"),
    )
    emit(st, output, fields_text)


def _edge_command(change: str):
    @click.argument("name")
    @click.argument("edge")
    @timeout_option
    @kube_options
    @output_option
    def command(name, edge, timeout, kubeconfig, namespace, context, output) -> None:
        st = cluster(kubeconfig, namespace, context).set_edges(
            name, change, edge, timeout=timeout, progress=wait_progress(f"publish {name}")
        )
        if output != "text":
            emit(st, output)
            return
        click.echo(
            f"publish {name}: edges {', '.join(e['name'] for e in st.get('edges') or []) or '-'}"
        )
        for e in st.get("edges") or []:
            if e["name"] == edge:
                click.echo(
                    f"\nRun it at edge {edge}:\n  " + e["dockerRunCommand"].replace("\n", "\n  ")
                )

    return command


publish.command("add-edge", help="Add an edge location (EDGE_NAME) to a Publish.")(
    _edge_command("add")
)
publish.command("remove-edge", help="Remove an edge location from a Publish.")(
    _edge_command("remove")
)


@publish.command("keygen")
@click.argument("prefix", type=click.Path(dir_okay=False, path_type=Path))
@output_option
def publish_keygen(prefix: Path, output: str) -> None:
    """Write a signing key pair: PREFIX.key (PEM EC P-256, mode 600) and PREFIX.pub."""
    from edgepipe.oci import signing

    key, pub = prefix.with_name(prefix.name + ".key"), prefix.with_name(prefix.name + ".pub")
    for path in (key, pub):
        if path.exists():
            raise CliError(f"{path} exists; not overwriting a key")
    signer = signing.Signer.generate()
    key.touch(mode=0o600)
    key.write_text(signer.private_pem())
    pub.write_text(signer.public_pem())
    if output != "text":
        emit(
            {"privateKey": str(key), "publicKey": str(pub), "publicPem": signer.public_pem()},
            output,
        )
        return
    click.echo(
        f"private key: {key} (sign with: edgepipe publish push --sign-key {key}, or\n"
        f"  kubectl create secret generic edge-signing --from-file=key={key})"
    )
    click.echo(f'public key:  {pub} (at the edge: OCI_VERIFY_KEY="$(cat {pub})")')


@publish.command("get")
@click.argument("name")
@kube_options
@output_option
def publish_get(name, kubeconfig, namespace, context, output) -> None:
    """Show one Publish and its status fields."""
    obj = cluster(kubeconfig, namespace, context).get("publishes", name)
    if output != "text":
        emit(obj, output)
        return
    click.echo("\n".join([HEADER, _line(obj)]))
    status = obj.get("status") or {}
    if status.get("phase") == "Published":
        click.echo(fields_text(status))
    elif status.get("reason") or status.get("message"):
        click.echo(f"Reason:   {status.get('reason') or '-'}")
        click.echo(f"Message:  {status.get('message') or '-'}")


@publish.command("list")
@kube_options
@output_option
def publish_list(kubeconfig, namespace, context, output) -> None:
    """List Publishes."""
    items = cluster(kubeconfig, namespace, context).list("publishes")
    emit(items, output, lambda xs: "\n".join([HEADER, *map(_line, xs)]))


@publish.command("show")
@click.argument("name")
@kube_options
@output_option
def publish_show(name: str, kubeconfig, namespace, context, output: str) -> None:
    """Print a Publish's docker run line, compose.yaml and helm install command."""
    from edgepipe.publish import compose_yaml, helm_install_command, local_values_yaml

    obj = cluster(kubeconfig, namespace, context).get("publishes", name)
    status = obj.get("status") or {}
    if status.get("phase") != "Published":
        raise CliError(
            f"publish {name!r} is {status.get('phase') or 'not reconciled yet'}"
            + (f": {status.get('message')}" if status.get("message") else "")
        )
    from edgepipe import oci

    # The transport the operator used for this Publish: the same rule, the same answer.
    spec_registry = obj["spec"]["registry"]
    where = oci.Target.parse(spec_registry["url"], plain_http=spec_registry.get("plainHttp"))
    registry, plain = where.registry, where.plain_http
    shown: dict[str, Any] = {
        "dockerRun": status["dockerRunCommand"],
        "composeYaml": compose_yaml(status, registry, plain),
        "localValuesYaml": local_values_yaml(registry, plain),
        "helmInstall": helm_install_command(status, obj["spec"]["pipeline"], plain),
        "publicKey": status.get("publicKey"),
        # One set per edge location, each starting the engine under its name.
        "edges": [
            {
                "name": e["name"],
                "lastUpload": e.get("lastUpload"),
                "dockerRun": e["dockerRunCommand"],
                "composeYaml": compose_yaml(status, registry, plain, e["name"]),
                "localValuesYaml": local_values_yaml(
                    registry, plain, e["name"], status["pipelineUrl"]
                ),
                "helmInstall": helm_install_command(status, e["name"], plain),
            }
            for e in status.get("edges") or []
        ],
    }
    emit(shown, output, _show_text)


def _show_text(d: dict[str, Any]) -> str:
    def block(x: dict[str, Any], title: str) -> str:
        return (
            f"# docker run{title}\n{x['dockerRun']}\n\n# compose.yaml{title}\n{x['composeYaml']}\n"
            f"# local-values.yaml{title}\n{x['localValuesYaml']}\n# helm install{title}\n"
            f"{x['helmInstall']}"
        )

    parts = [block(e, f" (edge {e['name']})") for e in d["edges"]] or [block(d, "")]
    if d.get("publicKey"):
        parts.append(
            "# signed: the engine verifies with OCI_VERIFY_KEY, this public key\n"
            + d["publicKey"].rstrip()
        )
    return "\n\n".join(parts)
