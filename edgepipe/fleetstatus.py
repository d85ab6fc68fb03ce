"""Edge status in the registry: a repository per pipeline, a tag per edge record, one listing."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from edgepipe import oci
from edgepipe.timestamps import parse

STATUS_ARTIFACT = "application/vnd.edgepipe.edge.status.v1"
# The empty JSON object, the status manifest's config and layer (the status is annotated).
EMPTY_DIGEST = "sha256:" + hashlib.sha256(b"{}").hexdigest()
STATUS_ANNOTATION = "io.edgepipe.status"
# An edge rewrites its status at least this often, so that lastSeen tells a live edge.
HEARTBEAT_SECONDS = 300
STATES = ("Current", "Downloading", "Waiting", "Probation", "RolledBack", "Rejected")
DELETE_RETRY = 0.5  # seconds before a failed delete of a previous record is tried again
NONE = "none"  # a digest not known (no target yet, a running version without one)

# The status document, as GET /status gives it and the registry keeps it (plus lastSeen).
STATUS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["edge", "pipeline", "state", "since", "running"],
    "properties": {
        "edge": {"type": "string"},
        "pipeline": {"type": "string"},
        "state": {"enum": list(STATES)},
        "reason": {"type": ["string", "null"], "description": "why, for any state but Current"},
        "since": {"type": "string", "description": "when the state began (RFC 3339)"},
        "running": {"$ref": "#/$defs/version"},
        "previous": {"oneOf": [{"$ref": "#/$defs/version"}, {"type": "null"}]},
        "target": {
            "type": ["string", "null"],
            "description": "the digest the edge's pointer named at the last poll",
        },
        "lastPoll": {
            "type": ["object", "null"],
            "properties": {"at": {"type": "string"}, "result": {"type": "string"}},
        },
        "pollSeconds": {"type": "number", "description": "the edge's poll interval"},
        "lastSeen": {"type": "string", "description": "when the edge wrote this (registry only)"},
    },
    "$defs": {
        "version": {
            "type": "object",
            "properties": {"version": {"type": "string"}, "digest": {"type": "string"}},
        }
    },
}


def status_repository(prefix: str, pipeline: str) -> str:
    """``<prefix>/status/<pipeline>``: every edge of the pipeline tags its records here."""
    return "/".join(p for p in (prefix, "status", pipeline) if p)


def short(digest: str | None) -> str:
    """The first 12 hex digits of a digest (``none`` without one)."""
    hexa = (digest or "").removeprefix("sha256:")[:12]
    return hexa or NONE


def same_digest(a: str | None, b: str | None) -> bool:
    """Whether two digests (either maybe the 12-digit prefix a tag holds) are the same."""
    a, b = (a or "").removeprefix("sha256:"), (b or "").removeprefix("sha256:")
    return len(a) >= 12 and len(b) >= 12 and (a.startswith(b) or b.startswith(a))


@dataclass(frozen=True)
class StatusTag:
    """One edge's record as its tag names it: ``<edge>.<ms>.<state>.<running12>.<target12>``."""

    edge: str
    since: datetime  # when this (state, running, target) began
    state: str
    running12: str  # "" when not known
    target12: str | None
    tag: str

    @property
    def ms(self) -> int:
        return round(self.since.timestamp() * 1000)

    @classmethod
    def make(cls, edge: str, ms: int, state: str, running: str | None, target: str | None):
        tag = f"{edge}.{ms}.{state}.{short(running)}.{short(target)}"
        parsed = cls.parse(tag)
        if parsed is None or len(tag) > 128:
            raise ValueError(f"edge {edge!r}: no status tag can name it ({tag!r})")
        return parsed

    @classmethod
    def parse(cls, tag: str) -> StatusTag | None:
        """The record a tag names; None for a tag that is not one."""
        parts = tag.rsplit(".", 4)
        if len(parts) != 5:
            return None
        edge, ms, state, running, target = parts
        if not edge or not ms.isdigit() or state not in STATES:
            return None
        since = datetime.fromtimestamp(int(ms) / 1000, UTC)
        return cls(
            edge, since, state, "" if running == NONE else running,
            None if target == NONE else target, tag,
        )  # fmt: skip


def _newest(tags: list[str]) -> dict[str, StatusTag]:
    out: dict[str, StatusTag] = {}
    for tag in tags:
        st = StatusTag.parse(tag)
        if st is None:
            continue
        seen = out.get(st.edge)
        if seen is None or (st.ms, st.tag) > (seen.ms, seen.tag):
            out[st.edge] = st
    return out


def _url(client: oci.Client, repository: str, what: str) -> str:
    return f"{client.scheme}://{client.registry}/v2/{repository}/{what}"


def _tag_pages(
    client: oci.Client, repository: str, page: int | None = None
) -> tuple[list[str], int]:
    """Every tag of ``repository`` (Link pagination followed; ``page``: ask for pages of that
    many); and the requests it took."""
    tags: list[str] = []
    url: str | None = _url(client, repository, "tags/list" + (f"?n={page}" if page else ""))
    n = 0
    client.reg.auth.load_configs(client._container(repository))
    while url:
        resp = client.reg.do_request(url, "GET")
        n += 1
        if resp.status_code == 404:  # no edge reported yet
            return tags, n
        client._check(resp, f"tags of {repository}")
        tags += resp.json().get("tags") or []
        url = client.next_page(resp)
    return tags, n


def list_status_tags(
    client: oci.Client, prefix: str, pipeline: str, page: int | None = None
) -> dict[str, StatusTag]:
    """Every edge's newest record, from the tag listing alone (no request per edge)."""
    return _newest(_tag_pages(client, status_repository(prefix, pipeline), page)[0])


def _get_doc(client: oci.Client, repository: str, tag: str) -> dict[str, Any] | None:
    try:
        manifest, _ = client.get_manifest(oci.Reference(client.registry, repository, tag=tag))
    except oci.NotInRegistry:  # replaced since the listing
        return None
    return json.loads((manifest.get("annotations") or {})[STATUS_ANNOTATION])


def read_status(client: oci.Client, prefix: str, pipeline: str, edge: str) -> dict | None:
    """One edge's last reported status (a listing and a manifest GET); None when it never
    reported."""
    newest = list_status_tags(client, prefix, pipeline).get(edge)
    if newest is None:
        return None
    return _get_doc(client, status_repository(prefix, pipeline), newest.tag)


@dataclass
class EdgeReport:
    """What an edge last reported: its newest tag, with its document's details when read."""

    edge: str
    state: str
    running: str  # the digest (its 12-digit prefix when the document is older than the tag)
    target: str | None
    since: datetime  # when this record began
    last_seen: datetime | None
    reason: str | None
    version: str | None
    poll_seconds: float
    doc: dict[str, Any] | None

    def on(self, digest: str | None) -> bool:
        """Whether the edge runs ``digest``."""
        return same_digest(self.running, digest)

    def aimed_at(self, digest: str | None) -> bool:
        """Whether the edge's pointer named ``digest`` at its last poll."""
        return same_digest(self.target, digest)

    @classmethod
    def of(cls, st: StatusTag, doc: dict[str, Any] | None) -> EdgeReport:
        running, target = st.running12, st.target12
        version = reason = None
        if doc is not None and doc.get("state") == st.state:
            full = (doc.get("running") or {}).get("digest")
            running = full if same_digest(full, running) else running
            target = doc.get("target") if same_digest(doc.get("target"), target) else target
            version = (doc.get("running") or {}).get("version") if running == full else None
            reason = doc.get("reason")
        return cls(
            edge=st.edge, state=st.state, running=running, target=target, since=st.since,
            last_seen=parse((doc or {}).get("lastSeen")), reason=reason, version=version,
            poll_seconds=float((doc or {}).get("pollSeconds") or 0.0), doc=doc,
        )  # fmt: skip


class StatusReader:
    """Reads a pipeline's edges with one listing, and a manifest GET only for an edge whose
    newest tag changed, or whose document was read more than ``heartbeat_seconds`` ago
    (for its lastSeen). Keep one per pipeline; ``requests`` counts what it asked."""

    def __init__(
        self, heartbeat_seconds: float = HEARTBEAT_SECONDS, page: int | None = None
    ) -> None:
        self.heartbeat_seconds, self.page = heartbeat_seconds, page
        self.requests = 0
        self.gets = 0  # manifest GETs among them
        self._docs: dict[str, tuple[str, dict[str, Any] | None, float]] = {}  # tag, doc, read at

    def read(self, client: oci.Client, prefix: str, pipeline: str) -> dict[str, EdgeReport]:
        repository = status_repository(prefix, pipeline)
        tags, n = _tag_pages(client, repository, self.page)
        self.requests += n
        now = time.monotonic()
        out: dict[str, EdgeReport] = {}
        newest = _newest(tags)
        for edge, st in newest.items():
            tag, doc, at = self._docs.get(edge, ("", None, 0.0))
            if tag != st.tag or doc is None or now - at >= self.heartbeat_seconds:
                self.requests += 1
                self.gets += 1
                try:
                    fresh = _get_doc(client, repository, st.tag)
                except oci.RegistryUnavailable:
                    # docker-registry's filesystem storage answers 500 to a read of a tag
                    # being rewritten at that moment (a heartbeat): read it next time.
                    fresh = None
                # Gone since the listing: keep what was read, read again next time.
                tag, doc, at = (st.tag, fresh, now) if fresh is not None else ("", doc, 0.0)
                self._docs[edge] = (tag, doc, at)
            out[edge] = EdgeReport.of(st, doc)
        for edge in set(self._docs) - set(newest):
            del self._docs[edge]
        return out


class StatusWriter:
    """One edge's records: a heartbeat PUTs the same tag again; a new record (state, running
    or target changed) is a new tag, and the previous one's manifest is deleted (best effort:
    a registry that refuses deletes keeps old tags, and readers take the newest)."""

    def __init__(self, repository: str, edge: str) -> None:
        self.repository, self.edge = repository, edge
        self.tag: StatusTag | None = None
        self.digest: str | None = None  # the manifest last PUT
        self.deletes = True  # False once the registry said it does not delete
        self.stale: list[str] = []  # digests whose delete failed (retried at the next push)
        self.requests = 0

    def push(self, client: oci.Client, doc: dict[str, Any], ms: int | None = None) -> StatusTag:
        """Write ``doc`` (an edge status) under this record's tag; the tag."""
        running, target = (doc.get("running") or {}).get("digest"), doc.get("target")
        key = (doc["state"], short(running), short(target))
        old = tag = self.tag
        if tag is None or (tag.state, tag.running12 or NONE, tag.target12 or NONE) != key:
            ms = ms if ms is not None else time.time_ns() // 1_000_000
            tag = StatusTag.make(self.edge, ms, doc["state"], running, target)
        if old is None:
            empty = client.push_bytes(self.repository, b"{}", oci.EMPTY_CONFIG)
            self.requests += 2
        else:
            empty = {"mediaType": oci.EMPTY_CONFIG, "digest": EMPTY_DIGEST, "size": 2}
        manifest = {
            "schemaVersion": 2,
            "mediaType": oci.MANIFEST,
            "artifactType": STATUS_ARTIFACT,
            "config": empty,
            "layers": [empty],
            "annotations": {
                STATUS_ANNOTATION: json.dumps(doc, separators=(",", ":"), sort_keys=True)
            },
        }
        previous = self.digest
        self.digest = client.put_manifest(self.repository, manifest, tag=tag.tag)
        self.tag = tag
        self.requests += 1
        if old is None:
            self._clean_up(client, tag)
        stale = self.stale[:]  # deletes that failed before: tried again
        if old is not None and old.tag != tag.tag and previous:
            self._delete(client, previous)
        for digest in stale:
            self._delete(client, digest)
        return tag

    def _delete(self, client: oci.Client, digest: str) -> None:
        """Delete the manifest ``digest`` (and so its tag); one retry after DELETE_RETRY
        seconds, then at the next push: docker-registry's DELETE reads every tag of the
        repository, and answers 500 when another edge is writing its tag at that moment."""
        self.stale = [d for d in self.stale if d != digest]
        for attempt in range(2):
            if not self.deletes:
                return
            try:
                resp = client.reg.do_request(
                    _url(client, self.repository, f"manifests/{digest}"), "DELETE"
                )
            except oci.OciError:
                resp = None
            self.requests += 1
            if resp is not None and (resp.status_code == 405 or "UNSUPPORTED" in resp.text):
                self.deletes = False  # not asked again
            if resp is not None and resp.status_code < 500:
                return
            if attempt == 0:
                time.sleep(DELETE_RETRY)
        self.stale.append(digest)

    def _clean_up(self, client: oci.Client, mine: StatusTag) -> None:
        """At the first write: this edge's older records (from before a restart) go."""
        try:
            tags, n = _tag_pages(client, self.repository)
            self.requests += n
            for tag in tags:
                st = StatusTag.parse(tag)
                if st is None or st.edge != self.edge or st.tag == mine.tag or not self.deletes:
                    continue
                try:
                    digest = _head(client, self.repository, tag)
                except oci.NotInRegistry:
                    continue
                self.requests += 1
                if digest and digest != self.digest:
                    self._delete(client, digest)
        except oci.OciError:
            return


def _head(client: oci.Client, repository: str, tag: str) -> str | None:
    """The digest a tag names (one HEAD)."""
    resp = client._check(
        client.reg.do_request(
            _url(client, repository, f"manifests/{tag}"), "HEAD", headers={"Accept": oci.MANIFEST}
        ),
        f"manifest {repository}:{tag}",
    )
    return resp.headers.get("Docker-Content-Digest")
