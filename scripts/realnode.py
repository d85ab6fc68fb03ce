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

import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

# A sibling module: this one is loaded by scripts/testcluster, with scripts/ on sys.path.
from realnode_host import (
    GATEWAY,
    SUBNET,
    cni_config,
    install_packages,
    iptables_kube_cleanup,
    kill_group,
    kill_shims,
    network_down,
    network_up,
    pod_netns,
    remove_netns,
    run,
    unmount_under,
)

NODE_NAME = "real-node-0"
NODE_LABEL = "edgepipe.io/node-kind"
FAKE_TAINT = "edgepipe.io/fake-node"
PAUSE_IMAGE = "localhost/edgepipe-pause:1"
AGENTS = ("kube-proxy", "kubelet", "containerd")  # the node's processes, in start order
STATE = Path(os.environ.get("EDGEPIPE_CACHE", Path.home() / ".cache/edgepipe")) / "realnode.json"

ROOT = Path(__file__).resolve().parent.parent


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
    """The kubelet's settings. In-place pod resize is off: with cgroupsPerQOS off (no pod
    cgroups here) the kubelet of 1.34 dereferences a pod cgroup's nil memory limit when,
    after a node restart, it finds a container without its "actuated resources" record and
    takes that for a resize (doPodResizeAction, kuberuntime_manager.go:839): it panicked
    seconds after a restart, and every later pod stayed Pending. Nothing here resizes a
    running pod."""
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
                "featureGates": {"InPlacePodVerticalScaling": False},
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
                kill_group(pid)
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
    containerd = cluster.spawn(
        "containerd", supervised("containerd", ["containerd", "--config", config])
    )
    cluster.wait(
        "containerd",
        lambda: ctr(node, "version", check=False).returncode == 0,
        containerd,
        "containerd",
    )
    if pause:
        pause_image(node, bins / "pause")
    kubelet_cmd = kubelet_argv(bins, node, kubeconfig, node / "kubelet.yaml")
    kubelet = cluster.spawn("kubelet", supervised("kubelet", kubelet_cmd))

    def node_ready() -> bool:
        # The kubelet's own healthz first: after a restart the Node still reads Ready from
        # the killed kubelet's last heartbeat.
        if not kubelet_healthy(node):
            return False
        jsonpath = "jsonpath={.status.conditions[?(@.type=='Ready')].status}"
        out = cluster.kubectl(kubeconfig, ["get", "node", NODE_NAME, "-o", jsonpath])
        return "True" in out

    cluster.wait("the real node", node_ready, kubelet, "kubelet")
    healthz, metrics = cluster.state()["proxy_ports"]
    proxy = kube_proxy_argv(bins, kubeconfig, healthz, metrics)
    cluster.spawn("kube-proxy", supervised("kube-proxy", proxy))


def kubelet_healthy(node: Path) -> bool:
    port = json.loads((node / "kubelet.yaml").read_text())["healthzPort"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as answer:
        return answer.read() == b"ok"


def supervised(name: str, argv: list[str]) -> list[str]:
    """``argv`` under scripts/supervise.py, which starts the agent again when it exits, as
    systemd does on a real node."""
    return [sys.executable, str(ROOT / "scripts" / "supervise.py"), name, "--", *argv]


def restart(cluster, bins: Path, kubeconfig: Path) -> None:
    """A node reboot: the agents and every container die, then the agents start again and
    the kubelet brings its pods back."""
    pids = cluster.state().get("pids", {})
    for name in reversed(AGENTS):
        if name in pids:
            kill_group(pids[name])
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
