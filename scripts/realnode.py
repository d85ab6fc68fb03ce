"""One real Kubernetes node for the test cluster: containerd + kubelet + kube-proxy.

Used by ``scripts/testcluster start DIR --real-node``. Everything it makes is named here,
so that ``stop`` (and the next ``start`` after a SIGKILLed run) can remove all of it:

- a bridge ``eptest0`` with the gateway ``10.213.88.1/24``: pods get addresses in that
  subnet from the CNI bridge plugin, the kubelet and the apiserver listen on the gateway
  address (the kubelet refuses a loopback node IP), and the Service range is routed to the
  bridge, so no test packet ever leaves this machine;
- iptables rules, each with the comment ``edgepipe-test``: forwarding between pods (and
  from pods to Services) is accepted, anything else from the pod subnet is dropped;
- containerd with its own root, state and socket under ``DIR/node``, runc with cgroupfs,
  and ``restrict_oom_score_adj`` (this machine lacks CAP_SYS_RESOURCE, so runc cannot
  lower a container's oom_score_adj);
- a pause image made from a static Go program (no image can be pulled here);
- the kubelet (anonymous auth and AlwaysAllow authorization: test only) and kube-proxy in
  iptables mode.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

BRIDGE = "eptest0"
GATEWAY = "10.213.88.1"
SUBNET = "10.213.88.0/24"
SERVICE_CIDR = "10.213.89.0/24"
NODE_NAME = "real-node-0"
NODE_LABEL = "edgepipe.io/node-kind"
FAKE_TAINT = "edgepipe.io/fake-node"
COMMENT = "edgepipe-test"
PAUSE_IMAGE = "localhost/edgepipe-pause:1"
AGENTS = ("kube-proxy", "kubelet", "containerd")  # the node's processes, in start order
NETNS_DIR = Path("/var/run/netns")
STATE = Path(os.environ.get("EDGEPIPE_CACHE", Path.home() / ".cache/edgepipe")) / "realnode.json"

ROOT = Path(__file__).resolve().parent.parent


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


# -- containerd -----------------------------------------------------------------------------


def containerd_config(node: Path) -> Path:
    cni_config(node / "cni")
    config = node / "containerd.toml"
    config.write_text(f"""version = 2
root = "{node}/containerd/root"
state = "{node}/containerd/state"
disabled_plugins = ["io.containerd.internal.v1.opt", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper"]

[grpc]
  address = "{node}/containerd.sock"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  restrict_oom_score_adj = true
  disable_apparmor = true
  enable_selinux = false
  stream_server_address = "127.0.0.1"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{node}/cni"
""")
    return config


def ctr(node: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run(
        "ctr",
        "--address",
        str(node / "containerd.sock"),
        "-n",
        "k8s.io",
        *args,
        check=check,
        timeout=600,
    )


def load_image(node: Path, image: str) -> None:
    """A podman image into the node's containerd (``podman save`` + ``ctr images import``)."""
    with tempfile.TemporaryDirectory() as tmp:
        tar = Path(tmp) / "image.tar"
        run(str(ROOT / "scripts" / "podman"), "save", "-o", str(tar), image, timeout=600)
        ctr(node, "images", "import", "--snapshotter", "overlayfs", str(tar))


def pause_image(node: Path, pause_bin: Path) -> None:
    """The sandbox image: the static pause binary alone, imported with podman."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "root"
        root.mkdir()
        shutil.copy2(pause_bin, root / "pause")
        tar = Path(tmp) / "pause.tar"
        run("tar", "-C", str(root), "-cf", str(tar), "pause")
        podman = str(ROOT / "scripts" / "podman")
        run(podman, "import", "--change", 'ENTRYPOINT ["/pause"]', str(tar), PAUSE_IMAGE)
    load_image(node, PAUSE_IMAGE)


# -- kubelet and kube-proxy -----------------------------------------------------------------


def kubelet_config(node: Path, port: int, healthz: int) -> Path:
    config = node / "kubelet.yaml"
    config.write_text(
        json.dumps(
            {
                "apiVersion": "kubelet.config.k8s.io/v1beta1",
                "kind": "KubeletConfiguration",
                "address": GATEWAY,
                "port": port,
                "readOnlyPort": 0,
                "healthzBindAddress": "127.0.0.1",
                "healthzPort": healthz,
                "authentication": {"anonymous": {"enabled": True}, "webhook": {"enabled": False}},
                "authorization": {"mode": "AlwaysAllow"},
                "cgroupDriver": "cgroupfs",
                "cgroupsPerQOS": False,
                "enforceNodeAllocatable": [],
                "failSwapOn": False,
                "failCgroupV1": False,
                "containerRuntimeEndpoint": f"unix://{node}/containerd.sock",
                "imageGCHighThresholdPercent": 100,
                "evictionHard": {
                    "memory.available": "1Mi",
                    "nodefs.available": "1%",
                    "imagefs.available": "1%",
                },
                "serializeImagePulls": False,
                "fileCheckFrequency": "1s",
                "nodeStatusUpdateFrequency": "2s",
                "syncFrequency": "5s",
                "volumeStatsAggPeriod": "0s",
                "maxPods": 40,
                "resolvConf": "/etc/resolv.conf",
            },
            indent=2,
        )
    )
    return config


def kubelet_argv(bins: Path, node: Path, kubeconfig: Path, config: Path) -> list[str]:
    return [
        str(bins / "kubelet"),
        f"--config={config}",
        f"--kubeconfig={kubeconfig}",
        f"--root-dir={node}/kubelet",
        f"--cert-dir={node}/kubelet/pki",
        f"--hostname-override={NODE_NAME}",
        f"--node-ip={GATEWAY}",
        f"--node-labels={NODE_LABEL}=real",
        "--v=1",
    ]


def kube_proxy_argv(bins: Path, kubeconfig: Path, healthz: int, metrics: int) -> list[str]:
    return [
        str(bins / "kube-proxy"),
        f"--kubeconfig={kubeconfig}",
        "--proxy-mode=iptables",
        f"--hostname-override={NODE_NAME}",
        f"--cluster-cidr={SUBNET}",
        f"--healthz-bind-address=127.0.0.1:{healthz}",
        f"--metrics-bind-address=127.0.0.1:{metrics}",
        # Leave the host's conntrack sysctls alone (they need privileges this host lacks).
        "--conntrack-max-per-core=0",
        "--conntrack-tcp-timeout-established=0s",
        "--conntrack-tcp-timeout-close-wait=0s",
        "--v=1",
    ]


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


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, 9)
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)


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


def record(node: Path, **fields: object) -> None:
    STATE.parent.mkdir(parents=True, exist_ok=True)
    state = json.loads(STATE.read_text()) if STATE.exists() else {}
    state.update({"node": str(node), **fields})
    STATE.write_text(json.dumps(state))


def forget() -> None:
    STATE.unlink(missing_ok=True)


def previous() -> dict:
    return json.loads(STATE.read_text()) if STATE.exists() else {}


# -- the node's life ------------------------------------------------------------------------


def prepare(cluster) -> None:
    """Before the apiserver starts: packages, leftovers of a killed run, the network."""
    install_packages()
    old = previous()
    if old:
        # A run that was killed before its stop: its processes may still be running.
        old_state = Path(old.get("cluster_state", "/nonexistent"))
        if old_state.exists():
            for pid in json.loads(old_state.read_text()).get("pids", {}).values():
                _kill_group(pid)
        stop(Path(old["node"]), old)
    node = cluster.base / "node"
    node.mkdir(parents=True, exist_ok=True)
    record(
        node,
        netns_before=sorted(pod_netns()),
        forward=_read_forward(),
        cluster_state=str(cluster.state_file),
    )
    network_up()


def start(cluster, bins: Path, kubeconfig: Path, free_port) -> None:
    """containerd, the pause image, the kubelet (until its node is Ready), kube-proxy;
    then the fake node is tainted, so that pods which do not ask for it run for real."""
    node = cluster.base / "node"
    record(node, bins=str(bins))
    containerd_config(node)
    kubelet_config(node, free_port(), free_port())
    proxy_ports = [free_port(), free_port()]
    cluster.save(proxy_ports=proxy_ports)
    start_agents(cluster, bins, kubeconfig, pause=True)
    cluster.kubectl(
        kubeconfig,
        ["taint", "node", cluster.fake_node, f"{FAKE_TAINT}=true:NoSchedule", "--overwrite"],
    )
    cluster.save(real_node=NODE_NAME, gateway=GATEWAY, containerd=str(node / "containerd.sock"))


def start_agents(cluster, bins: Path, kubeconfig: Path, pause: bool = False) -> None:
    """containerd, the kubelet (until the node is Ready) and kube-proxy."""
    node = cluster.base / "node"
    config = str(node / "containerd.toml")
    containerd = cluster.spawn("containerd", ["containerd", "--config", config])
    cluster.wait(
        "containerd",
        lambda: ctr(node, "version", check=False).returncode == 0,
        containerd,
        "containerd",
    )
    if pause:
        pause_image(node, bins / "pause")
    kubelet = cluster.spawn("kubelet", kubelet_argv(bins, node, kubeconfig, node / "kubelet.yaml"))

    def node_ready() -> bool:
        jsonpath = "jsonpath={.status.conditions[?(@.type=='Ready')].status}"
        out = cluster.kubectl(kubeconfig, ["get", "node", NODE_NAME, "-o", jsonpath])
        return "True" in out

    cluster.wait("the real node", node_ready, kubelet, "kubelet")
    healthz, metrics = cluster.state()["proxy_ports"]
    cluster.spawn("kube-proxy", kube_proxy_argv(bins, kubeconfig, healthz, metrics))


def restart(cluster, bins: Path, kubeconfig: Path) -> None:
    """A node reboot: the agents and every container die, then the agents start again and
    the kubelet brings its pods back."""
    pids = cluster.state().get("pids", {})
    for name in reversed(AGENTS):
        if name in pids:
            _kill_group(pids[name])
    kill_shims(cluster.base / "node")
    start_agents(cluster, bins, kubeconfig)


def stop(node: Path, state: dict | None = None) -> None:
    """Remove every container, mount, network namespace, rule and route the node made.
    The cluster's processes (kubelet, containerd) are stopped by the caller first."""
    state = state or previous()
    kill_shims(node)
    remove_netns(pod_netns() - set(state.get("netns_before", [])))
    unmount_under(node)
    bins = state.get("bins")
    iptables_kube_cleanup(Path(bins) if bins else None)
    network_down()
    if "forward" in state:
        Path("/proc/sys/net/ipv4/ip_forward").write_text(state["forward"])
    forget()


def _read_forward() -> str:
    return Path("/proc/sys/net/ipv4/ip_forward").read_text().strip()
