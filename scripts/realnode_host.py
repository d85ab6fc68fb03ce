"""The host side of the test node: packages, the bridge and its iptables rules, and the
clean-up of what containers leave behind (mounts, network namespaces, shims, chains).

Everything here is named by the constants below, so a stop, or a start after a run that
was SIGKILLed, can find and remove it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import subprocess
import time
from pathlib import Path

BRIDGE = "eptest0"
GATEWAY = "10.213.88.1"
SUBNET = "10.213.88.0/24"
SERVICE_CIDR = "10.213.96.0/20"  # room for 4,094 Services (the scale bench makes 1,000)
COMMENT = "edgepipe-test"
NETNS_DIR = Path("/var/run/netns")


def run(*argv: str, check: bool = True, **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, check=check, capture_output=True, text=True, **kw)


def install_packages() -> None:
    """The Debian packages a real node needs, installed when missing."""
    need = [
        pkg
        for tool, pkg in [
            ("containerd", "containerd"),
            ("runc", "runc"),
            ("iptables", "iptables"),
            ("conntrack", "conntrack"),
            ("podman", "podman"),
        ]
        if shutil.which(tool) is None
    ]
    if not Path("/usr/lib/cni/bridge").exists():
        need.append("containernetworking-plugins")
    if need:
        run("apt-get", "update", "-qq")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        run("apt-get", "install", "-y", "-qq", "--no-install-recommends", *need, env=env)


# -- network --------------------------------------------------------------------------------

FORWARD_RULES = [
    ["-s", SUBNET, "-d", SUBNET, "-j", "ACCEPT"],
    ["-s", SUBNET, "-j", "DROP"],
]


def network_up() -> None:
    run("ip", "link", "add", BRIDGE, "type", "bridge")
    run("ip", "addr", "add", f"{GATEWAY}/24", "dev", BRIDGE)
    run("ip", "link", "set", BRIDGE, "up")
    # Services live on the bridge too: a ClusterIP that kube-proxy has not (yet) rewritten
    # goes nowhere, rather than out of this machine.
    run("ip", "route", "add", SERVICE_CIDR, "dev", BRIDGE, "src", GATEWAY)
    for rule in reversed(FORWARD_RULES):
        run("iptables", "-I", "FORWARD", *rule, "-m", "comment", "--comment", COMMENT)
    # A pod reaching a Service's pod is forwarded by this host.
    Path("/proc/sys/net/ipv4/ip_forward").write_text("1")


def network_down() -> None:
    for rule in FORWARD_RULES:
        while (
            run(
                "iptables",
                "-D",
                "FORWARD",
                *rule,
                "-m",
                "comment",
                "--comment",
                COMMENT,
                check=False,
            ).returncode
            == 0
        ):
            pass
    run("ip", "route", "del", SERVICE_CIDR, check=False)
    run("ip", "link", "del", BRIDGE, check=False)


def cni_config(conf_dir: Path) -> None:
    conf_dir.mkdir(parents=True, exist_ok=True)
    conf = {
        "cniVersion": "0.4.0",
        "name": "edgepipe-test",
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": SUBNET, "gateway": GATEWAY}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }
    (conf_dir / "10-edgepipe.conflist").write_text(json.dumps(conf, indent=2))


# -- clean-up -------------------------------------------------------------------------------


def unmount_under(path: Path) -> None:
    """Unmount everything mounted below ``path`` (deepest first)."""
    prefix = str(path.resolve()) + "/"
    mounts = [
        line.split()[1].encode().decode("unicode_escape")
        for line in Path("/proc/self/mounts").read_text().splitlines()
    ]
    for target in sorted((m for m in mounts if m.startswith(prefix)), key=len, reverse=True):
        run("umount", "-l", target, check=False)


def pod_netns() -> set[str]:
    """The CNI network namespaces on this host (containerd names them ``cni-<uuid>``)."""
    return {p.name for p in NETNS_DIR.glob("cni-*")} if NETNS_DIR.exists() else set()


def remove_netns(names: set[str]) -> None:
    for name in sorted(names):
        run("ip", "netns", "delete", name, check=False)
        p = NETNS_DIR / name
        if p.exists():
            run("umount", "-l", str(p), check=False)
            p.unlink(missing_ok=True)


def kill_shims(node: Path) -> None:
    """Every container of this node: each shim's children (the containers' init, whose
    death ends their PID namespace), then the shim."""
    sock = f"{node}/containerd.sock"
    shims = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and b"containerd-shim" in argv[0] and sock.encode() in argv:
            shims.append(int(proc.name))
    for pid in shims:
        for child in _children(pid):
            _kill(child)
        _kill(pid)


def _children(pid: int) -> list[int]:
    out = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(proc.name))
            except (OSError, IndexError, ValueError):
                pass
    return out


def kill_group(pid: int) -> None:
    """SIGKILL to process group ``pid`` (an agent and its supervisor), and a wait until
    every member of it has exited."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, 9)
    deadline = time.monotonic() + 10
    while any(_running(p) for p in _group(pid)) and time.monotonic() < deadline:
        time.sleep(0.05)


def _group(pgid: int) -> list[int]:
    """The processes of group ``pgid``."""
    members = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:
            members.append(int(proc.name))
    return members


def _running(pid: int) -> bool:
    """Some thread of ``pid`` has not exited. A killed process whose parent has not reaped
    it yet (a zombie: this machine's init reaps the agents every 1-2 s) holds no socket,
    file or memory any more: restarting the node waited 5 s for those reapings."""
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return False
    for task in tasks:
        try:
            state = (task / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state not in ("Z", "X"):
            return True
    return False


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, 9)


def iptables_kube_cleanup(bins: Path | None) -> None:
    """kube-proxy's own chains (``kube-proxy --cleanup``), then the kubelet's
    (KUBE-FIREWALL, KUBE-KUBELET-CANARY, KUBE-IPTABLES-HINT): every jump into a ``KUBE-``
    chain from a built-in chain, then the ``KUBE-`` chains themselves. This test host runs
    no other Kubernetes node, so every such chain is one of ours."""
    if bins is not None and (bins / "kube-proxy").exists():
        run(str(bins / "kube-proxy"), "--cleanup", check=False, timeout=60)
    for tool in ("iptables", "ip6tables"):
        for table in ("filter", "nat", "mangle"):
            listing = run(tool, "-t", table, "-S", check=False).stdout.splitlines()
            for line in listing:
                words = shlex.split(line)
                if words[:1] == ["-A"] and not words[1].startswith("KUBE-") and "KUBE-" in line:
                    run(tool, "-t", table, "-D", *words[1:], check=False)
            chains = [ln.split()[1] for ln in listing if ln.startswith("-N KUBE-")]
            for chain in chains:
                run(tool, "-t", table, "-F", chain, check=False)
            for chain in chains:
                run(tool, "-t", table, "-X", chain, check=False)
