"""Kubeconfig files for clients pointed at an apiserver that is not one (a refused port, a
socket that never answers)."""

from __future__ import annotations

from pathlib import Path

TEMPLATE = """apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "%s"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: x, context: {cluster: c, user: u, namespace: ns}}]
current-context: x
"""


def write_kubeconfig(path: Path, server: str) -> Path:
    """A kubeconfig at ``path`` whose one context, namespace ``ns``, logs in to ``server``."""
    path.write_text(TEMPLATE % server)
    return path
