"""``edgepipe``: the command line for models, pipelines, inference and publishing.

One module per command group (``model``, ``pipeline``, ``infer``, ``publish``, ``logs``,
``console``); each command only parses its options, calls the library and prints. Errors
are one line on stderr and a non-zero exit (``run`` turns them into that); ``--debug``
shows tracebacks. Registry credentials come from ``--username``/``--password`` or
``OCI_USERNAME``/``OCI_PASSWORD``.
"""

from __future__ import annotations

import sys

import click

from edgepipe import __version__

from .common import expected_errors
from .console import console_cmd
from .infer import infer_cmd
from .logs import logs_cmd
from .model import model
from .pipeline import pipeline
from .publish import publish
from .rollout import publish_edges, publish_rollout


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks on errors.")
@click.version_option(__version__, "--version", prog_name="edgepipe")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """edgepipe: pipelines of ONNX models on Kubernetes and at the edge."""
    ctx.obj = {"debug": debug}


main.add_command(model)
main.add_command(pipeline)
main.add_command(infer_cmd)
main.add_command(publish)
main.add_command(logs_cmd)
main.add_command(console_cmd)
# On the publish group from here, which keeps publish.py (push, create, show) short.
publish.add_command(publish_rollout)
publish.add_command(publish_edges)


def run() -> None:
    """The console entry point: every failure ends as one line and a non-zero exit."""
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
        expected = isinstance(exc, expected_errors())
        click.echo(f"Error: {exc}" if expected else f"Error: {type(exc).__name__}: {exc}", err=True)
        sys.exit(1)
