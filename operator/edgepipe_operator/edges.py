"""Each Publish's edges in its status (what each last reported, its last log upload), and
its rollout driven wave by wave.

Edges report to the registry, not to the cluster, so the operator reads the registry:
every ``EDGEPIPE_OPERATOR_EDGE_POLL_SECONDS`` one background task takes the Published
Publishes that name edges (from an index, not a list) and, for each, reads its edges'
status tags with one listing (fleetstatus.StatusReader: a manifest only for an edge whose
record changed), advances its rollout (rollouts.py), and reads an edge's log tags only
when its record changed or ``edge_upload_seconds`` passed. The status is written only
when it changed. (A background task, started and stopped by startup.py, not a kopf timer:
timers put a finalizer on every Publish.)
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import kopf
from pydantic import ValidationError

from edgepipe import edgelog, fleet, fleetstatus, oci
from edgepipe.resources import GROUP, VERSION, PublishSpec
from edgepipe.rolloutspec import RolloutSpec

from . import rollouts
from .kube import ApiError, Kube, Unreachable
from .registry import SecretProblem, publish_target
from .rollouts import Held
from .settings import OperatorSettings

log = logging.getLogger("edgepipe.operator")


def registry_client(kube: Kube, held: Held, spec: dict[str, Any], namespace: str):
    """The Publish's registry target and a client for it, kept between intervals (its
    Secret is read again when the registry spec changes or a call failed)."""
    key = json.dumps(spec.get("registry"), sort_keys=True)
    if held.client is None or held.client[0] != key:
        target = publish_target(kube, PublishSpec.model_validate(spec).registry, namespace)
        held.client = (key, target, target.client())
    return held.client[1], held.client[2]


def read_uploads(
    client: oci.Client,
    prefix: str,
    pipeline: str,
    held: Held,
    reports: dict[str, Any],
    edges: list[str],
    every: float,
) -> dict[str, dict[str, Any] | None]:
    """Each edge's last log upload: read again when its status record changed or ``every``
    seconds passed, else the last read's."""
    mono = time.monotonic()
    for edge in edges:
        report = reports.get(edge)
        mark = None if report is None else (report.state, report.since, report.running)
        last = held.uploads.get(edge)
        if last is None or mono - last[0] >= every or last[1] != mark:
            repo = edgelog.repository(prefix, pipeline, edge)
            held.uploads[edge] = (mono, mark, edgelog.last_upload(client, repo))
    return {e: held.uploads[e][2] for e in edges}


def refresh(kube: Kube, obj: dict[str, Any], held: Held, settings: OperatorSettings) -> bool:
    """One interval of one Publish: its edges' reports, a rollout step, its uploads; the
    status written when it changed. True if written."""
    spec, status, meta = obj.get("spec") or {}, obj.get("status") or {}, obj["metadata"]
    edges = status.get("edges") or []
    if status.get("phase") != "Published" or not edges:
        return False
    target, client = registry_client(kube, held, spec, meta["namespace"])
    now = rollouts.utcnow()
    reports = held.reader.read(client, target.prefix, spec["pipeline"])
    state = held.current(status.get("rollout"))
    new: dict[str, Any] = {}
    waves: list[list[str]] = []
    if state is not None:
        rspec = RolloutSpec.model_validate(spec["rollout"]) if spec.get("rollout") else None
        repository = oci.Reference.parse(status["pipelineUrl"]).repository
        acted = rollouts.step_once(
            state,
            reports,
            rspec,
            (meta.get("annotations") or {}).get(rollouts.REQUEST_ANNOTATION),
            now,
            lambda step: rollouts.perform(
                fleet.Clients(target.client, client), repository, step, now
            ),
        )
        held.state, waves = acted.state, acted.state.waves
        for event in acted.events:
            rollouts.post_event(kube, obj, event)
        new["rollout"] = acted.state.to_status()
    names = [e["name"] for e in edges]
    uploads = read_uploads(
        client, target.prefix, spec["pipeline"], held, reports, names,
        settings.edge_upload_seconds,
    )  # fmt: skip
    new["edges"] = rollouts.edge_lines(edges, reports, waves, uploads, now)
    base = held.last if held.written else status
    new = {
        k: rollouts.merge_patch(base.get(k), v)
        for k, v in new.items()
        if rollouts.pruned(v) != rollouts.pruned(base.get(k))
    }
    if not new:
        return False
    try:
        written = kube.patch_status(
            "publishes",
            meta["name"],
            meta["namespace"],
            new,
            # a re-publish in between wins: the next interval starts from its status
            resource_version=held.written or meta["resourceVersion"],
        )
    except ApiError as exc:
        held.written = None
        if exc.status == 409:
            return False
        raise
    held.written = written["metadata"]["resourceVersion"]
    held.last = {k: written.get("status", {}).get(k) for k in ("rollout", "edges")}
    return True


@kopf.index(GROUP, VERSION, "publishes")
async def edge_publish_index(
    body: kopf.Body, namespace: str, name: str, spec: kopf.Spec, status: kopf.Status, **_: Any
) -> dict[tuple[str, str], dict[str, Any]] | None:
    """The Published Publishes that name edges, with what ``refresh`` reads of them: the
    poll lists nothing (a LIST of every Publish each interval cost the apiserver O(N)).
    (async: kopf runs a sync index function on a handler thread, behind the reconciles.)"""
    if status.get("phase") != "Published" or not status.get("edges"):
        return None
    annotations = body.metadata.get("annotations") or {}
    meta = {
        "name": name,
        "namespace": namespace,
        "uid": body.metadata.get("uid"),
        "resourceVersion": body.metadata.get("resourceVersion"),
        "annotations": {k: v for k, v in annotations.items() if k == rollouts.REQUEST_ANNOTATION},
    }
    slim = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Publish",
        "metadata": meta,
        "spec": dict(spec),
        "status": {
            "phase": "Published",
            "edges": list(status.get("edges") or []),
            "rollout": dict(status.get("rollout") or {}) or None,
            "pipelineUrl": status.get("pipelineUrl"),
        },
    }
    return {(namespace, name): slim}


def refresh_all(
    kube: Kube, publishes: list[dict[str, Any]], held: dict[str, Held], settings: OperatorSettings
) -> None:
    keys = set()
    for obj in publishes:
        name = f"{obj['metadata']['namespace']}/{obj['metadata']['name']}"
        keys.add(name)
        mine = held.get(name)
        if mine is None:
            mine = held[name] = Held(fleetstatus.StatusReader())
        try:
            refresh(kube, obj, mine, settings)
        except (oci.OciError, SecretProblem, ValidationError, ValueError) as exc:
            # (ValueError: a bad spec.) Read the Secret again next time.
            mine.client = None
            log.info("publish %s: cannot read or move its edges: %s", name, exc)
        except (ApiError, Unreachable) as exc:
            log.warning("publish %s: %s", name, exc)
        except Exception:  # one Publish's surprise must not stop the others' poll
            mine.client = None
            log.exception("publish %s: its edges' poll failed", name)
    for gone in set(held) - keys:
        del held[gone]


async def poll(memo: kopf.Memo, index: kopf.Index) -> None:
    """Refresh every Publish in ``index`` (edge_publish_index: the watched namespaces'
    only) every ``edge_poll_seconds``, until cancelled."""
    settings: OperatorSettings = memo.settings
    kube, interval = memo.kube, settings.edge_poll_seconds
    held: dict[str, Held] = {}
    while True:
        publishes = [obj for key in list(index) for obj in index.get(key, [])]
        try:
            await asyncio.to_thread(refresh_all, kube, publishes, held, settings)
        except (ApiError, Unreachable) as exc:
            log.warning("reading Publishes for their edges: %s", exc)
        await asyncio.sleep(interval)
