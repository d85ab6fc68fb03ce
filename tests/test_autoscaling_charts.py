"""Autoscaling in the charts (issue 28), rendered by the real helm: the Publish's edge chart
has an optional HPA, off by default and changing nothing then; the operator chart may
deploy the Prometheus scrape config and prometheus-adapter's rule for ``inflight``."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from edgepipe.resources import Autoscaling, DeploymentConfig
from tests.helpers.helm import OPERATOR_CHART, by_kind, docs, edge_chart, edge_sets, helm
from tests.helpers.helm import edge_template as template


def test_off_by_default_and_unchanged_then(tmp_path: Path) -> None:
    edge = edge_chart(tmp_path, DeploymentConfig(replicas=2))
    default = template(edge)
    assert "HorizontalPodAutoscaler" not in by_kind(default)
    assert by_kind(default)["Deployment"]["spec"]["replicas"] == 2
    assert template(edge, "autoscaling.enabled=false") == default
    # Byte for byte what the chart rendered before it had autoscaling: the same chart with
    # the HPA template and the replicas guard taken out.
    bare = tmp_path / "bare"
    shutil.copytree(edge, bare)
    (bare / "templates" / "hpa.yaml").unlink()
    deployment = bare / "templates" / "deployment.yaml"
    lines = deployment.read_text().splitlines(keepends=True)
    guard = [i for i, line in enumerate(lines) if "autoscaling.enabled" in line]
    assert len(guard) == 1 and "{{- end }}" in lines[guard[0] + 2]
    del lines[guard[0] + 2], lines[guard[0]]
    deployment.write_text("".join(lines))
    assert template(bare) == default


def test_enabled_it_renders_a_valid_hpa_and_the_deployment_leaves_replicas(
    tmp_path: Path,
) -> None:
    edge = edge_chart(tmp_path, DeploymentConfig(replicas=2))
    rendered = by_kind(
        template(
            edge,
            "autoscaling.enabled=true",
            "autoscaling.minReplicas=2",
            "autoscaling.maxReplicas=5",
            "autoscaling.target=60",
            "autoscaling.behavior.scaleDown.stabilizationWindowSeconds=30",
        )
    )
    assert "replicas" not in rendered["Deployment"]["spec"]
    hpa = rendered["HorizontalPodAutoscaler"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["metadata"]["name"] == rendered["Deployment"]["metadata"]["name"]
    assert hpa["spec"] == {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "e-c"},
        "minReplicas": 2,
        "maxReplicas": 5,
        "metrics": [
            {
                "type": "Resource",
                "resource": {
                    "name": "cpu",
                    "target": {"type": "Utilization", "averageUtilization": 60},
                },
            }
        ],
        "behavior": {"scaleDown": {"stabilizationWindowSeconds": 30}},
    }


def test_the_published_autoscaling_gives_the_defaults(tmp_path: Path) -> None:
    auto = Autoscaling(min_replicas=2, max_replicas=6, metric="inflight", target=2.5)
    edge = edge_chart(tmp_path, DeploymentConfig(autoscaling=auto))
    values = yaml.safe_load((edge / "values.yaml").read_text())["autoscaling"]
    assert values == {
        "enabled": False,  # still off: the edge cluster may have no metrics stack
        "minReplicas": 2,
        "maxReplicas": 6,
        "metric": "inflight",
        "target": 2.5,
        "behavior": {},
    }
    hpa = by_kind(template(edge, "autoscaling.enabled=true"))["HorizontalPodAutoscaler"]
    assert hpa["spec"]["metrics"] == [
        {
            "type": "Pods",
            "pods": {
                "metric": {"name": "edgepipe_inflight_requests"},
                "target": {"type": "AverageValue", "averageValue": "2.5"},
            },
        }
    ]


@pytest.mark.parametrize(
    "bad",
    [
        "autoscaling.metric=rps",
        "autoscaling.minReplicas=0",
        "autoscaling.target=0",
    ],
)
def test_the_values_schema_refuses_a_bad_autoscaling_value(tmp_path: Path, bad: str) -> None:
    edge = edge_chart(tmp_path, DeploymentConfig())
    args = edge_sets("autoscaling.enabled=true", bad)
    proc = helm("template", "e", str(edge), *args, check=False)
    assert proc.returncode != 0
    assert "autoscaling" in proc.stderr


def test_the_operator_chart_renders_the_inflight_configs_only_when_asked(tmp_path: Path) -> None:
    off = docs(helm("template", "x", OPERATOR_CHART).stdout)
    assert not [d for d in off if d["kind"] == "ConfigMap"]
    on = docs(helm("template", "x", OPERATOR_CHART, "--set", "inflightMetrics.enabled=true").stdout)
    maps = {d["metadata"]["name"]: d["data"] for d in on if d["kind"] == "ConfigMap"}
    assert set(maps) == {"x-edgepipe-prometheus-scrape", "x-edgepipe-adapter-rules"}
    scrape = yaml.safe_load(maps["x-edgepipe-prometheus-scrape"]["prometheus.yml"])
    (job,) = scrape["scrape_configs"]
    assert job["scrape_interval"] == "5s" and job["metrics_path"] == "/metrics"
    keep = {r["regex"] for r in job["relabel_configs"] if r.get("action") == "keep"}
    assert keep == {"edgepipe-engine", "http"}  # engine pods, on the port named in enginepod
    (rule,) = yaml.safe_load(maps["x-edgepipe-adapter-rules"]["config.yaml"])["rules"]
    assert rule["name"]["as"] == "edgepipe_inflight_requests"
    assert rule["resources"]["overrides"] == {
        "namespace": {"resource": "namespace"},
        "pod": {"resource": "pod"},
    }
    assert "[30s]" in rule["metricsQuery"]
    # Debian's Prometheus (promtool) checks the rest of the job. Its build leaves out the
    # Kubernetes service discovery, so a static target stands in for the pods there.
    promtool = shutil.which("promtool")
    if promtool:
        config = tmp_path / "prometheus.yml"
        del job["kubernetes_sd_configs"]
        job["static_configs"] = [{"targets": ["10.0.0.1:8080"]}]
        config.write_text(yaml.safe_dump(scrape))
        import subprocess

        proc = subprocess.run([promtool, "check", "config", str(config)], capture_output=True)
        assert proc.returncode == 0, proc.stdout + proc.stderr
