"""``edgepipe publish``: Publishes in the cluster, and publishing without one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from .common import (
    CliError,
    cluster,
    emit,
    kube_options,
    output_option,
    timeout_option,
    wait_progress,
)
from .push import fields_text, publish_push

HEADER = f"{'NAME':<28} {'PIPELINE':<24} {'PHASE':<15} CHART VERSION"


def _line(obj: dict) -> str:
    st = obj.get("status") or {}
    return (
        f"{obj['metadata']['name']:<28} {obj['spec']['pipeline']:<24} "
        f"{st.get('phase') or '-':<15} {st.get('helmChartVersion') or '-'}"
    )


@click.group()
def publish() -> None:
    """Publish pipelines for the edge."""


# push lives in push.py (its wave options make it long); it is publish's first command.
publish.add_command(publish_push)


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
