"""A plain-HTTP proxy in front of a registry that shows every answer to a subclass."""

from __future__ import annotations

import contextlib
import http.client
import http.server
import threading
from typing import Self

from edgepipe.localengine import free_port


class ForwardingProxy:
    """Forwards each request to ``upstream`` on a free port of its own and sends the answer
    back, after ``seen`` had a look at it (``seen`` returns True when it answered itself)."""

    timeout = 30.0  # seconds for each request to the upstream registry

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_) -> None:
                pass

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                conn = http.client.HTTPConnection(proxy.upstream, timeout=proxy.timeout)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                try:
                    conn.request(self.command, self.path, body=body, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                finally:
                    conn.close()
                if proxy.seen(self, body, resp, data):
                    return
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    with contextlib.suppress(OSError):  # the client may have gone
                        self.wfile.write(data)

            do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _forward  # noqa: N815

        self.port = free_port()
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def seen(
        self,
        handler: http.server.BaseHTTPRequestHandler,
        body: bytes | None,
        resp: http.client.HTTPResponse,
        data: bytes,
    ) -> bool:
        """Called with each request and its answer before it goes back; True: answered here."""
        return False

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *_) -> None:
        self.server.shutdown()
        self.server.server_close()
