"""Publishing a pipeline version for the edge: OCI artifacts plus a generated Helm chart.

One code path for the operator's Publish reconciler and ``edgepipe publish push``:

1. ``artifacts``: every model goes into the pipeline's repository by digest, then the
   pipeline artifact (config blob and model layers) is tagged with the pipeline version;
2. ``chart``: a Helm chart rendered from ``templates/chart``, packaged and pushed to
   ``<registry>/<prefix>/charts``;
3. ``commands``: the docker run line, compose file, values file and helm install command
   a user runs at the edge;
4. ``flow.publish``: all of it in order, returning every field a Publish's status shows.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import PublishError

if TYPE_CHECKING:
    from .artifacts import push_pipeline, resolve_refs
    from .chart import CHART_VERSION_PREFIX, push_chart, render_chart
    from .commands import (
        compose_yaml,
        docker_run_command,
        helm_install_command,
        local_values_yaml,
    )
    from .flow import PublishResult, publish

__all__ = [
    "CHART_VERSION_PREFIX",
    "PublishError",
    "PublishResult",
    "compose_yaml",
    "docker_run_command",
    "helm_install_command",
    "local_values_yaml",
    "publish",
    "push_chart",
    "push_pipeline",
    "render_chart",
    "resolve_refs",
]


def __getattr__(name: str) -> Any:
    """The steps, on first use: they need jinja2, the registry client and the signing keys'
    cryptography (together about 28 MB), which the operator loads only when it publishes
    (``waves``, which its rollouts use, and ``errors`` need none of them)."""
    if name in __all__:
        for sub in ("artifacts", "chart", "commands", "flow"):
            module = importlib.import_module(f"{__name__}.{sub}")
            if name in vars(module):
                globals()[name] = vars(module)[name]  # once: later reads find it here
                return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
