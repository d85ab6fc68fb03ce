"""The engine's listening ports: one another process holds is a one-line start-up error
naming the port and its setting, said before any model loads (a 537 MB model takes
seconds), and again if the port is taken between that check and the bind."""

from __future__ import annotations

import errno
import socket
from dataclasses import dataclass

from .errors import StartupError
from .settings import Settings


@dataclass(frozen=True)
class Port:
    """A port the engine listens on, and how a user changes it."""

    what: str  # "HTTP", "gRPC"
    host: str
    number: int
    setting: str
    flag: str
    can_be_off: bool = False

    def unavailable(self, exc: Exception) -> StartupError:
        """The one-line error for a failed bind (an OSError, or gRPC's RuntimeError)."""
        if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
            why = "is in use"
        elif isinstance(exc, OSError) and exc.strerror:
            why = f"cannot be bound ({exc.strerror})"
        else:  # gRPC says only that it failed
            why = "cannot be bound (in use, or not an address of this host)"
        off = ", or 0 to turn gRPC off" if self.can_be_off else ""
        return StartupError(
            f"{self.what} port {self.number} on {self.host} {why}; set {self.setting} "
            f"(or {self.flag}) to a free port{off}"
        )

    def check_free(self) -> None:
        """Bind and release the port; a port in use (or privileged) is a StartupError. Other
        bind problems (a host name that does not resolve) are left to the real bind."""
        if not self.number:
            return
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        try:
            with socket.create_server((self.host, self.number), family=family):
                pass
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                raise self.unavailable(exc) from None


def ports(settings: Settings) -> tuple[Port, Port]:
    """(the REST port, the gRPC port) of these settings."""
    host = settings.host
    return (
        Port("HTTP", host, settings.port, "EDGEPIPE_ENGINE_PORT", "--port"),
        Port("gRPC", host, settings.grpc_port, "EDGEPIPE_ENGINE_GRPC_PORT", "--grpc-port", True),
    )
