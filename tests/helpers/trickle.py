"""A slow link to a real server: a TCP proxy on loopback that passes what the client sends
as it comes and what the server answers at a fixed rate, so that a download is still
running when a test acts on it."""

from __future__ import annotations

import contextlib
import socket
import threading
import time


class TrickleProxy:
    """127.0.0.1:port -> target; the server's bytes reach the client at ``rate`` bytes/s."""

    def __init__(self, target: tuple[str, int], rate: int) -> None:
        self.target, self.rate = target, rate
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.closed = False

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> TrickleProxy:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(self, *_) -> None:
        self.closed = True
        self.server.close()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            threading.Thread(target=self._pump, args=(client, upstream, 0), daemon=True).start()
            threading.Thread(
                target=self._pump, args=(upstream, client, self.rate), daemon=True
            ).start()

    def _pump(self, src: socket.socket, dst: socket.socket, rate: int) -> None:
        """Copy ``src`` to ``dst``, at most ``rate`` bytes/s when rate is set."""
        piece = max(1024, rate // 20) if rate else 65536
        start, sent = time.monotonic(), 0
        try:
            while data := src.recv(piece):
                dst.sendall(data)
                sent += len(data)
                if rate:
                    time.sleep(max(0.0, start + sent / rate - time.monotonic()))
        except OSError:
            pass
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
