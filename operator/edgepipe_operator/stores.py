"""The informers' stores: what the operator keeps of each engine object, a few strings.

Each store is fed by an informer (informers.py) and keeps, per object, only what its
readers read (the transform of client-go's informers), never the object: the applied
digest of every owned object, each kept revision's name, labels and number, each engine
pod's health fields. Readers see kopf's index interface: ``store.get(key, [])`` is an
iterable of the values under ``key`` (one per object), and ``key in store``.

The stores are written on the event loop and read from the handlers' threads: every
read copies (``list``) in one step the GIL does not interrupt.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator
from typing import Any, Protocol

from .builders import PIPELINE_LABEL
from .cache import APPLIED_ANNOTATION

ObjectKey = tuple[str, str]  # (namespace, name)


class Sink(Protocol):
    """What an informer feeds: each object as it is now, and each gone."""

    def put(self, obj: ObjectKey, body: dict[str, Any]) -> None: ...

    def drop(self, obj: ObjectKey) -> None: ...


class Store:
    """key -> the values of the objects filed under it (kopf's ``Index``, read side)."""

    def __init__(self, transform: Callable[[dict[str, Any]], tuple[Hashable, Any] | None]):
        self.transform = transform
        self.by_key: dict[Hashable, dict[ObjectKey, Any]] = {}
        self.filed: dict[ObjectKey, Hashable] = {}

    def put(self, obj: ObjectKey, body: dict[str, Any]) -> None:
        """File the object's extract (replacing its last one); a transform that answers
        None files nothing."""
        self.drop(obj)
        extract = self.transform(body)
        if extract is None:
            return
        key, value = extract
        self.by_key.setdefault(key, {})[obj] = value
        self.filed[obj] = key

    def drop(self, obj: ObjectKey) -> None:
        key = self.filed.pop(obj, None)
        if key is None:
            return
        values = self.by_key.get(key)
        if values is not None:
            values.pop(obj, None)
            if not values:
                del self.by_key[key]

    def get(self, key: Hashable, default: Any = None) -> Any:
        values = self.by_key.get(key)
        return list(values.values()) if values else default

    def __contains__(self, key: object) -> bool:
        return key in self.by_key

    def __iter__(self) -> Iterator[Hashable]:
        return iter(list(self.by_key))

    def __len__(self) -> int:
        return len(self.by_key)


class ByPlural:
    """One key space over a store per kind, keyed (plural, namespace, name): the applied
    digests (a Deployment and a Service may share a name)."""

    def __init__(self, stores: dict[str, Digests]) -> None:
        self.stores = stores

    def get(self, key: tuple[str, str, str], default: Any = None) -> Any:
        store = self.stores.get(key[0])
        return default if store is None else store.get(key, default)

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, tuple) or not key:
            return False
        store = self.stores.get(key[0])
        return store is not None and key in store


class Digests:
    """One kind's applied digests: (plural, namespace, name) -> [digest] (one object per
    key, so no store of lists: a dict entry per object)."""

    def __init__(self, plural: str) -> None:
        self.plural = plural
        self.of: dict[ObjectKey, str | None] = {}

    def put(self, obj: ObjectKey, body: dict[str, Any]) -> None:
        annotations = (body.get("metadata") or {}).get("annotations") or {}
        self.of[obj] = annotations.get(APPLIED_ANNOTATION)

    def drop(self, obj: ObjectKey) -> None:
        self.of.pop(obj, None)

    def get(self, key: tuple[str, str, str], default: Any = None) -> Any:
        obj = key[1:]
        return [self.of[obj]] if obj in self.of else default

    def __contains__(self, key: object) -> bool:
        return isinstance(key, tuple) and key[1:] in self.of


def revision_summary(body: dict[str, Any]) -> tuple[Hashable, Any]:
    """(namespace, pipeline) -> what the revision bookkeeping reads: name, labels, number
    (not the config)."""
    meta = body["metadata"]
    labels = dict(meta.get("labels") or {})
    pipeline = labels.get("app.kubernetes.io/instance")
    summary = {
        "metadata": {"name": meta["name"], "labels": labels},
        "revision": body.get("revision"),
    }
    return (meta["namespace"], pipeline), summary


def slim_pod(body: dict[str, Any]) -> dict[str, Any]:
    """What health.py reads of a pod: its deletion, IP, scheduling and containers' states."""
    meta, status = body.get("metadata") or {}, body.get("status") or {}
    return {
        "metadata": {"name": meta.get("name"), "deletionTimestamp": meta.get("deletionTimestamp")},
        "status": {
            "podIP": status.get("podIP"),
            "conditions": [
                c for c in status.get("conditions") or [] if c.get("type") == "PodScheduled"
            ],
            "containerStatuses": [
                {k: cs.get(k) for k in ("name", "state", "lastState", "ready")}
                for cs in status.get("containerStatuses") or []
            ],
        },
    }


def pod_entry(body: dict[str, Any]) -> tuple[Hashable, Any] | None:
    """(namespace, pipeline) -> the pod's health fields."""
    meta = body["metadata"]
    pipeline = (meta.get("labels") or {}).get(PIPELINE_LABEL)
    if pipeline is None:
        return None
    return (meta["namespace"], pipeline), slim_pod(body)


def slim_deployment(body: dict[str, Any]) -> dict[str, Any]:
    """What the status sync reads of a Deployment (builders.deployment_phase and
    deployment_conditions) and what an Event names of it."""
    meta = body.get("metadata") or {}
    keep = ("name", "namespace", "uid", "generation", "resourceVersion")
    return {
        "apiVersion": body.get("apiVersion") or "apps/v1",
        "kind": "Deployment",
        "metadata": {k: meta.get(k) for k in keep},
        "spec": {k: v for k, v in (body.get("spec") or {}).items() if k == "replicas"},
        "status": body.get("status") or {},
    }


def slim_hpa(body: dict[str, Any]) -> dict[str, Any]:
    """What hpa.hpa_status reads of an autoscaler (its status) and an Event names of it."""
    meta = body.get("metadata") or {}
    return {
        "apiVersion": body.get("apiVersion") or "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {k: meta.get(k) for k in ("name", "namespace", "uid")},
        "status": body.get("status") or {},
    }


def reference(body: dict[str, Any], kind: str, api_version: str) -> dict[str, Any]:
    """Who an Event is about: kind, name, namespace, uid."""
    meta = body.get("metadata") or {}
    return {
        "apiVersion": api_version,
        "kind": kind,
        "metadata": {k: meta.get(k) for k in ("name", "namespace", "uid")},
    }
