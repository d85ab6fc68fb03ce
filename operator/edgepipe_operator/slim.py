"""What the operator keeps of each watched object: only the fields someone reads, cut as
each answer is parsed, before kopf queues it (the informer's transform of client-go).

kopf keeps every watch event in its object's queue until the object's worker has handled
it, and the last one for a few seconds more. When events arrive faster than the handlers
finish (1,000 Pipelines created at once, a restart listing every object), those queues
hold thousands of full objects. Most of each is never read: a pod's or a Deployment's
spec (its template), a ConfigMap's config, and everyone's ``managedFields``.

Each kind keeps what is read of it:
- every kind: ``metadata`` without ``managedFields`` and without kubectl's copy of what it
  last applied (kopf's filters, the indices' keys, annotations and labels);
- Pod: ``status`` (health.py, the pod index);
- Deployment: ``status`` and ``spec.replicas`` (builders.deployment_phase);
- Service, ConfigMap: nothing more (the applied index reads an annotation);
- ControllerRevision: ``revision`` (the revision index).
Kinds not named here (Pipelines, Publishes, autoscalers, kopf's own scans) keep everything
but ``managedFields``.

``ARRIVALS`` notes, as each event arrives, the newest version of each engine object (its
Deployment, pods, autoscaler): an older event still queued behind a busy handler carries
no news the newer one will not, and readiness.py skips it without taking a thread.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from .builders import PIPELINE_LABEL

# kind -> its top-level fields kept (besides apiVersion, kind and metadata); a field
# mapped to a tuple keeps only those of its own fields.
KEEP: dict[str, dict[str, tuple[str, ...] | None]] = {
    "Pod": {"status": None},
    "Deployment": {"status": None, "spec": ("replicas",)},
    "Service": {},
    "ConfigMap": {},
    "ControllerRevision": {"revision": None},
}
ALWAYS = ("apiVersion", "kind", "metadata")
KUBECTL_COPY = "kubectl.kubernetes.io/last-applied-configuration"  # `kubectl apply`'s


def slim(obj: Any, kind: str | None = None) -> Any:
    """The object with only what is read of its kind (the same dict, cut in place)."""
    if not isinstance(obj, dict):
        return obj
    meta = obj.get("metadata")
    if isinstance(meta, dict):
        meta.pop("managedFields", None)
        if isinstance(annotations := meta.get("annotations"), dict):
            annotations.pop(KUBECTL_COPY, None)
    keep = KEEP.get(kind or obj.get("kind") or "")
    if keep is None:
        return obj
    for field in [f for f in obj if f not in ALWAYS and f not in keep]:
        del obj[field]
    for field, subfields in keep.items():
        value = obj.get(field)
        if subfields is not None and isinstance(value, dict):
            obj[field] = {k: value[k] for k in subfields if k in value}
    return obj


class Arrivals:
    """The newest resourceVersion the watches (or a LIST) delivered of each engine object."""

    KINDS = frozenset({"Deployment", "Pod", "HorizontalPodAutoscaler"})

    def __init__(self) -> None:
        self.newest: dict[str, str] = {}  # uid -> resourceVersion

    def saw(self, event: str | None, obj: dict[str, Any], kind: str | None) -> None:
        meta = obj.get("metadata")
        if kind not in self.KINDS or not isinstance(meta, dict):
            return
        uid, labels = meta.get("uid"), meta.get("labels") or {}
        if not uid or PIPELINE_LABEL not in labels:
            return
        if event == "DELETED":
            self.newest.pop(uid, None)
        else:
            self.newest[uid] = meta.get("resourceVersion") or ""

    def superseded(self, body: Any) -> bool:
        """True when a newer event of this object has arrived (and will be handled)."""
        meta = body.get("metadata") or {}
        newest = self.newest.get(meta.get("uid") or "")
        return newest is not None and newest != meta.get("resourceVersion")


ARRIVALS = Arrivals()


def slim_answer(data: Any) -> Any:
    """A LIST's items (which carry no kind of their own: the list's names it), or one
    object, or a watch event's object."""
    if not isinstance(data, dict):
        return data
    items, kind = data.get("items"), data.get("kind") or ""
    if isinstance(items, list) and kind.endswith("List"):
        for item in items:
            slim(item, kind.removesuffix("List"))
            ARRIVALS.saw(None, item, kind.removesuffix("List"))
    elif isinstance(data.get("object"), dict) and "type" in data:
        slim(data["object"])
        ARRIVALS.saw(data["type"], data["object"], data["object"].get("kind"))
    else:
        slim(data)
    return data


class SlimLines:
    """A watch stream's body, line by line, each event's object slimmed (everything else
    is the stream's own)."""

    def __init__(self, raw: aiohttp.StreamReader) -> None:
        self.raw = raw

    def __getattr__(self, name: str) -> Any:
        return getattr(self.raw, name)

    async def iter_chunked(self, n: int) -> AsyncIterator[bytes]:
        buffer = b""
        async for data in self.raw.iter_chunked(n):
            buffer += data
            lines = buffer.split(b"\n")
            buffer = lines.pop()
            out = [_slim_line(line) for line in lines if line]
            if out:
                yield b"".join(out)
        if buffer:
            yield buffer  # an unfinished last line, as it came


def _slim_line(line: bytes) -> bytes:
    try:
        event = json.loads(line)
    except ValueError:
        return line + b"\n"  # the reader's own error, as before
    return json.dumps(slim_answer(event), separators=(",", ":")).encode() + b"\n"


class SlimResponse(aiohttp.ClientResponse):
    """The session's answers: watch streams and parsed answers come slimmed. (The
    handlers' own calls read the raw bytes: they get whole objects.)"""

    async def start(self, connection: Any) -> SlimResponse:
        await super().start(connection)
        if self.method == "GET" and self.url.query.get("watch") == "true":
            self.content = SlimLines(self.content)  # type: ignore[assignment]
        return self

    async def json(self, **kwargs: Any) -> Any:
        return slim_answer(await super().json(**kwargs))
