"""The pod specs edgepipe runs, as rendered for access-control tests: an engine pod the
operator builds (with a token Secret), the operator chart's pod, the edge chart's pod."""

from __future__ import annotations

from edgepipe_operator import builders

from tests.helpers.helm import of_kind


def pod_of(rendered: str) -> dict:
    """The pod template of the one Deployment in a rendered chart."""
    return of_kind(rendered, "Deployment")["spec"]["template"]["spec"]


def engine_pod(**spec) -> dict:
    """The engine pod the operator builds for a one-step Pipeline with ``spec`` added."""
    parsed = builders.parse_spec(
        {"steps": [{"model": {"name": "m", "url": "oci://r/m:1", "sha256": "0" * 64}}], **spec}
    )
    config = builders.resolve_pipeline("p", parsed)
    return builders.build_deployment(config, parsed, "ns", image="e:1")["spec"]["template"]["spec"]
