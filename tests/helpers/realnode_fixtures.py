"""The real-node cluster as fixtures: one cluster for the run, shared by the ``realnode``
test modules, each in namespaces of its own (a pytest plugin, named in tests/conftest.py).

Starting a cluster and loading the images into its containerd, then stopping it, took each
module about a minute; now the first realnode test pays it once. What differs between the
modules (the operator's chart and its settings, an operator process, Prometheus and the
adapter) each module installs onto the cluster and removes again."""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import realnode_steps as rn
from tests.helpers.kube import Kubectl
from tests.helpers.oci_registry import Registry


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The realnode tests run last, one module after another (their order kept): the
    cluster starts for the first and stops as the run ends, never idling through the
    other modules."""
    items.sort(key=lambda item: item.get_closest_marker("realnode") is not None)


@pytest.fixture(scope="session")
def real_node_cluster(
    images: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[rn.NodeCluster]:
    """scripts/testcluster --real-node, the engine and operator images in its containerd
    and the CRDs installed; stopped when the run ends. The operator's image loads while the
    first tests run (4-5 s; its first user, rn.install_operator, waits for it)."""
    base = tmp_path_factory.mktemp("realnode") / "cp"
    cluster = rn.start_cluster(base, [images["engine"]], later=[images["operator"]])
    yield cluster
    rn.stop_cluster(cluster)


@pytest.fixture(scope="session")
def node_registry(
    real_node_cluster: rn.NodeCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Registry]:
    """A registry with htpasswd on the test bridge, which the pods pull models from."""
    reg = rn.registry_on_bridge(tmp_path_factory.mktemp("node-registry"), real_node_cluster.gateway)
    yield reg
    reg.stop()


@pytest.fixture(scope="module")
def node(real_node_cluster: rn.NodeCluster) -> Iterator[rn.NodeCluster]:
    """The shared cluster for one module. The namespaces the module made
    (``node.namespace``, ``node_ns``) are deleted when it ends, and their pods waited
    for: the next module starts with none of this one's pods running."""
    module = rn.NodeCluster(
        real_node_cluster.base, real_node_cluster.info, loading=real_node_cluster.loading
    )
    seen = len(agent_exits(module.base))
    yield module
    module.delete_namespaces()
    exits = agent_exits(module.base)[seen:]
    if exits:
        warnings.warn(
            f"the real node's agents exited and were started again: {exits}; the kubelet's "
            f"log ends:\n{agent_log(module.base, 'kubelet')[-3000:]}",
            pytest.PytestWarning,
            stacklevel=1,
        )


AGENTS = ("containerd", "kubelet", "kube-proxy")
SUPERVISED = "[supervise]"  # scripts/supervise.py's lines in an agent's log


def agent_log(base: Path, name: str) -> str:
    log = base / "logs" / f"{name}.log"
    return log.read_text(errors="replace") if log.exists() else ""


def agent_exits(base: Path) -> list[str]:
    """Each exit of a node agent that its supervisor saw (and started it again after)."""
    return [
        line
        for name in AGENTS
        for line in agent_log(base, name).splitlines()
        if line.startswith(SUPERVISED)
    ]


@pytest.fixture
def node_ns(node: rn.NodeCluster, request: pytest.FixtureRequest) -> Iterator[Kubectl]:
    """A namespace named after the test; its deletion starts when the test ends."""
    name = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:40].strip("-")
    kubectl = node.namespace(name)
    yield kubectl
    kubectl("delete", "namespace", name, "--wait=false", namespaced=False, check=False)
