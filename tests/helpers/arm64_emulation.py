"""Running arm64 containers on an amd64 host under qemu user emulation.

Debian bookworm's qemu (7.2) passes the host's x86 ``/proc/cpuinfo`` through to the
emulated program (qemu 8.2 and later emulate an ARM one). onnxruntime's CPU detection
(pytorch's cpuinfo) cannot parse it and the import crashes with a segmentation fault, so
an emulated engine container gets an ARM ``/proc/cpuinfo`` (a two-core Neoverse-N1)
bind-mounted over the host's. Real arm64 hardware needs nothing of the kind.
"""

from __future__ import annotations

from pathlib import Path

_CORE = (
    "processor\t: {n}\n"
    "BogoMIPS\t: 50.00\n"
    "Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid "
    "asimdrdm lrcpc dcpop asimddp ssbs\n"
    "CPU implementer\t: 0x41\n"
    "CPU architecture: 8\n"
    "CPU variant\t: 0x3\n"
    "CPU part\t: 0xd0c\n"
    "CPU revision\t: 1\n\n"
)


def arm64_cpuinfo_mount(directory: Path) -> list[str]:
    """podman arguments that give an emulated arm64 container an ARM /proc/cpuinfo."""
    path = directory / "cpuinfo-arm64"
    path.write_text("".join(_CORE.format(n=n) for n in range(2)))
    return ["-v", f"{path}:/proc/cpuinfo:ro"]
