"""What kopf keeps of each object it watches (Pipelines, Publishes): everything but
``managedFields`` and kubectl's copy of what it last applied, cut as each answer is
parsed, before kopf queues it.

kopf keeps every watch event in its object's queue until the object's worker has handled
it, and the last one for a few seconds more; server-side apply's ``managedFields`` are a
third or more of an object's JSON, and nothing reads them. (The engine objects are not
kopf's any more: the informers read their streams themselves, see informers.py, and send
``OWN_PARSE`` so that their lines are not parsed and written again here.)
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

KUBECTL_COPY = "kubectl.kubernetes.io/last-applied-configuration"  # `kubectl apply`'s
OWN_PARSE_HEADER = "X-Edgepipe-Own-Parse"
OWN_PARSE = {OWN_PARSE_HEADER: "1"}  # a watch whose reader parses its lines itself


def slim(obj: Any) -> Any:
    """The object without what nobody reads (the same dict, cut in place)."""
    if not isinstance(obj, dict):
        return obj
    meta = obj.get("metadata")
    if isinstance(meta, dict):
        meta.pop("managedFields", None)
        if isinstance(annotations := meta.get("annotations"), dict):
            annotations.pop(KUBECTL_COPY, None)
    return obj


def slim_answer(data: Any) -> Any:
    """A LIST's items, or one object, or a watch event's object."""
    if not isinstance(data, dict):
        return data
    items, kind = data.get("items"), data.get("kind") or ""
    if isinstance(items, list) and kind.endswith("List"):
        for item in items:
            slim(item)
    elif isinstance(data.get("object"), dict) and "type" in data:
        slim(data["object"])
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
    """The session's answers: kopf's watch streams and parsed answers come slimmed. (The
    handlers' own calls read the raw bytes: they get whole objects; the informers parse
    their streams themselves.)"""

    async def start(self, connection: Any) -> SlimResponse:
        await super().start(connection)
        if (
            self.method == "GET"
            and self.url.query.get("watch") == "true"
            and OWN_PARSE_HEADER not in self.request_info.headers
        ):
            self.content = SlimLines(self.content)  # type: ignore[assignment]
        return self

    async def json(self, **kwargs: Any) -> Any:
        return slim_answer(await super().json(**kwargs))
