"""``edgepipe-engine``: serve a pipeline over HTTP."""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import logging
import signal
import sys
from pathlib import Path

from aiohttp import web

from .access import describe, scheme
from .errors import StartupError
from .interrupt import abandon_start
from .loader import read_config
from .ports import ports
from .server import ACCESS, DATAPLANE, create_app
from .settings import Settings, SettingsError

# After the port closes, how long connections accepted just before get to send their request.
LAST_CONNECTIONS_S = 0.2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgepipe-engine",
        description=(
            "Serve a pipeline of ONNX models over HTTP. Settings also come from env "
            "(EDGEPIPE_ENGINE_*, CONFIG_CPUS, DEBUG, PIPELINE_URL, OCI_*); flags win."
        ),
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--config", type=Path, help="pipeline config file (YAML or JSON)")
    source.add_argument(
        "--model", type=Path, help="one ONNX file, served as a pipeline named after the file"
    )
    parser.add_argument("--host", help="listen address (default 0.0.0.0)")
    parser.add_argument("--port", type=int, help="listen port (default 8080)")
    parser.add_argument(
        "--grpc-port", type=int, help="OIP v2 gRPC listen port (default 8081; 0: no gRPC)"
    )
    return parser


def tune_malloc() -> None:
    """Keep glibc's memory bounded without paying page faults on every request.

    Request bodies and answers are megabytes each. Left alone, glibc raises its mmap
    threshold after such buffers are freed and serves later ones from per-thread arenas
    that rarely shrink, so RSS ratchets up; two arenas bound that. Buffers of 32 MiB and
    more are mmapped (returned on free); smaller ones come from the heap, where a 64 MiB
    trim threshold keeps freed memory for the next request, and the data plane gives it
    back once the engine is idle (``DataPlane.trim_when_idle``).

    The threshold was 4 MiB: every 640x640 body (4.9 MB Arrow, 13 MB JSON) and its
    temporaries were fresh mmapped pages, faulted in at ~2.4 us a page on this VM - about
    1,500 faults (3.7 ms) per Arrow request and 14,000 (34 ms) per JSON one, against
    none for a bare aiohttp server (``bench/README.md``, issue 31).
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (musl, macOS): nothing to tune
        return
    m_trim_threshold, m_mmap_threshold, m_arena_max = -1, -3, -8
    libc.mallopt(m_mmap_threshold, 32 * 1024 * 1024)
    libc.mallopt(m_trim_threshold, 64 * 1024 * 1024)
    libc.mallopt(m_arena_max, 2)
    # pyarrow's bundled allocator keeps freed pages for reuse; the system one, tuned as
    # above, gives them back.
    import pyarrow as pa

    pa.set_memory_pool(pa.system_memory_pool())


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    tune_malloc()
    try:
        settings = Settings.from_env().with_overrides(
            host=args.host,
            port=args.port,
            grpc_port=args.grpc_port,
            config_path=args.config,
            model_path=args.model,
        )
    except SettingsError as exc:  # one line per bad value
        sys.exit(exc.report("edgepipe-engine"))
    logging.basicConfig(
        level=logging.DEBUG if settings.debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if settings.edge is None:
        try:
            read_config(settings)  # a config that cannot be read is fatal; say so once
        except StartupError as exc:
            sys.exit(f"edgepipe-engine: {exc}")
    try:
        for port in ports(settings):
            port.check_free()  # before the models load, which may take seconds
        asyncio.run(serve(settings))
    except StartupError as exc:
        sys.exit(f"edgepipe-engine: {exc}")
    except KeyboardInterrupt:  # before serve() took the signal over
        sys.exit(130)


async def serve(settings: Settings) -> None:
    """Serve until SIGTERM or SIGINT, then shut down without dropping a request.

    On the signal the engine first fails readiness (``/health/ready`` answers 503) and
    keeps serving for ``drain_seconds``, long enough for a Service to stop sending it new
    connections; then it closes its port and gives requests in flight up to
    ``shutdown_timeout`` seconds to finish.
    """
    log = logging.getLogger("edgepipe.engine")
    app = create_app(settings)
    runner = web.AppRunner(
        app,
        access_log=logging.getLogger("edgepipe.access") if settings.debug else None,
        shutdown_timeout=settings.shutdown_timeout,
        handle_signals=False,
        # After an answer sent before its body was read (a 408, 413 or 400), read and drop
        # the rest for at most 1 s, not aiohttp's 10, then close: a slow client is cut off.
        lingering_time=1.0,
    )
    loop = asyncio.get_running_loop()
    # Until it serves, a signal stops the engine at once (the models may take seconds).
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, abandon_start, settings.cache_dir, sig)
    await runner.setup()  # loads the pipeline (cleanup_ctx); StartupError ends it here
    try:
        guard = app[ACCESS]
        tls = guard.tls.context if guard.tls else None
        site = web.TCPSite(runner, settings.host, settings.port, ssl_context=tls)
        try:
            await site.start()
        except OSError as exc:  # taken since the check in main()
            raise ports(settings)[0].unavailable(exc) from None
        log.info("serving on %s://%s:%d", scheme(guard), settings.host, settings.port)
        log.info(describe(guard))
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        app[DATAPLANE].draining = True
        if settings.drain_seconds:
            log.info("shutting down: not ready; serving %ds more", settings.drain_seconds)
            await asyncio.sleep(settings.drain_seconds)
        await site.stop()
        log.info("shutting down: port closed; finishing requests in flight")
        # A connection accepted at the port's last instant has its request read before the
        # idle ones are closed: aiohttp would take it for idle, drop its request and wait
        # shutdown_timeout for it.
        await asyncio.sleep(LAST_CONNECTIONS_S)
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    main()
