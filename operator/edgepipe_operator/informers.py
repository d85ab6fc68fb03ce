"""client-go style informers: LIST then WATCH one kind of engine object, keeping only a
small extract of each (stores.py), never the object.

kopf gives every watched object a worker task with a queue of its events (about 6 KiB
while it waits, kept 5 s after the last event), a ResourceMemory record for its whole life
(about 0.9 KiB) and per-event invocation state; with six engine objects per Pipeline
(Deployment, pod, Service, ConfigMap, ControllerRevision, autoscaler) that was most of the
operator's memory at 1,000 Pipelines. An informer keeps one stream per kind and, per
object, its resourceVersion and what its stores extract.

The protocol is client-go's reflector: a paginated LIST (``limit`` + ``continue``), then a
WATCH from the list's resourceVersion with bookmarks and a server-side timeout, watched
again from the last version seen whenever the stream ends. A 410 Gone (the version was
compacted away) lists again, and objects that vanished meanwhile are dropped. Connection
errors, 5xx answers and an apiserver that is down are retried with a capped back-off.
Each event is parsed once, here: the session's response class leaves these streams
alone (slim.OWN_PARSE).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

from .kube import ApiError, Kube, Unreachable
from .slim import OWN_PARSE
from .stores import ObjectKey, Sink

log = logging.getLogger(__name__)

PAGE = 500  # objects per LIST page
WATCH_SECONDS = 300  # the apiserver ends each watch after about this long (client-go: 5-10 min)
BACKOFF = (0.25, 5.0)  # first and longest wait between failed attempts (seconds)


@dataclass(frozen=True)
class Kind:
    """Where a kind lives (API prefix and plural) and which of its objects are ours."""

    prefix: str
    plural: str
    kind: str
    selector: str

    @property
    def api_version(self) -> str:
        return self.prefix.removeprefix("/apis/").removeprefix("/api/")


class Gone(Exception):
    """The watch's resourceVersion is too old (410): list again."""


class Informer:
    """One kind in one namespace (or all): its stores follow the cluster; ``on_change``
    hears of each object added or modified after the first sync (not deletions)."""

    def __init__(
        self,
        kube: Kube,
        kind: Kind,
        namespace: str | None,
        stores: Sequence[Sink],
        on_change: Callable[[dict[str, Any]], None] | None = None,
        watch_seconds: int = WATCH_SECONDS,
    ) -> None:
        self.kube, self.kind, self.stores, self.on_change = kube, kind, stores, on_change
        where = f"/namespaces/{namespace}" if namespace else ""
        self.path = f"{kind.prefix}{where}/{kind.plural}"
        self.watch_seconds = watch_seconds
        self.known: dict[ObjectKey, str] = {}  # object -> its last resourceVersion
        self.synced = asyncio.Event()
        self.lists = 0  # LISTs begun (the first, then one per 410): for tests and logs

    async def run(self) -> None:
        """List, then watch, forever (until cancelled)."""
        version: str | None = None
        delay = BACKOFF[0]
        while True:
            try:
                if version is None:
                    version = await self.relist()
                    self.synced.set()
                version, progressed = await self.watch(version)
                if progressed:
                    delay = BACKOFF[0]
                    continue
            except Gone:
                version = None
                continue
            except ApiError as exc:
                if exc.status == 410:
                    version = None
                    continue
                log.warning("watching %s: %s", self.path, exc)
            except (Unreachable, aiohttp.ClientError, TimeoutError, ValueError) as exc:
                log.info("watching %s: %s", self.path, exc or type(exc).__name__)
            except Exception:  # (a session closed by a re-login, a bug): never give up
                log.exception("watching %s", self.path)
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))
            delay = min(delay * 2, BACKOFF[1])

    async def relist(self) -> str:
        """LIST every object, page by page; file each, drop those gone; the version to
        watch from."""
        self.lists += 1
        seen: set[ObjectKey] = set()
        params = {"labelSelector": self.kind.selector, "limit": str(PAGE)}
        while True:
            page = json.loads(await self.kube.request("GET", self.path, params=params))
            for item in page.get("items") or []:
                key, version = identity(item)
                seen.add(key)
                news = self.synced.is_set() and self.known.get(key) != version
                self.put(key, item, version, news)
            meta = page.get("metadata") or {}
            if not meta.get("continue"):
                break
            params = {**params, "continue": meta["continue"]}
        for gone in set(self.known) - seen:
            self.drop(gone)
        return meta.get("resourceVersion") or ""

    async def watch(self, version: str) -> tuple[str, bool]:
        """Follow the stream from ``version`` until it ends; the last version seen, and
        whether any event came."""
        params = {
            "labelSelector": self.kind.selector,
            "watch": "true",
            "resourceVersion": version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(self.watch_seconds),
        }
        timeout = aiohttp.ClientTimeout(total=None, connect=10, sock_read=self.watch_seconds + 30)
        await asyncio.wait_for(self.kube.ready.wait(), timeout=30)
        session = self.kube.session
        assert session is not None
        progressed = False
        async with session.get(
            self.kube.server + self.path, params=params, headers=OWN_PARSE, timeout=timeout
        ) as response:
            if response.status >= 400:
                raise ApiError(response.status, response.reason or "", await _message(response))
            buffer = bytearray()
            async for chunk in response.content.iter_any():
                buffer += chunk
                while (end := buffer.find(b"\n")) >= 0:
                    line = bytes(buffer[:end])
                    del buffer[: end + 1]
                    if line.strip():
                        version = self.event(line, version)
                        progressed = True
        return version, progressed

    def event(self, line: bytes, version: str) -> str:
        """One watch event filed; the version it brings."""
        event = json.loads(line)
        kind, obj = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise Gone(obj.get("message") or "")
            raise ApiError(
                obj.get("code") or 500, obj.get("reason") or "", obj.get("message") or ""
            )
        if kind == "BOOKMARK":
            return (obj.get("metadata") or {}).get("resourceVersion") or version
        key, new = identity(obj)
        if kind == "DELETED":
            self.drop(key)
        else:
            self.put(key, obj, new, news=True)
        return new or version

    def put(self, key: ObjectKey, obj: dict[str, Any], version: str, news: bool) -> None:
        self.known[key] = version
        obj.setdefault("kind", self.kind.kind)  # a LIST's items name no kind of their own
        obj.setdefault("apiVersion", self.kind.api_version)
        for store in self.stores:
            store.put(key, obj)
        if news and self.on_change is not None:
            try:
                self.on_change(obj)
            except Exception:  # a reader's bug must not stop the stream
                log.exception("handling a change of %s %s/%s", self.kind.plural, *key)

    def drop(self, key: ObjectKey) -> None:
        self.known.pop(key, None)
        for store in self.stores:
            store.drop(key)


def identity(obj: dict[str, Any]) -> tuple[ObjectKey, str]:
    """An object's (namespace, name) and resourceVersion."""
    meta = obj.get("metadata") or {}
    namespace = sys.intern(meta.get("namespace") or "")  # one copy of each, not one per object
    return (namespace, meta.get("name") or ""), meta.get("resourceVersion") or ""


async def _message(response: aiohttp.ClientResponse) -> str:
    try:
        return (json.loads(await response.read()).get("message")) or ""
    except (ValueError, AttributeError, aiohttp.ClientError):
        return ""
