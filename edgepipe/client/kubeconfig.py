"""Where the cluster client looks for a kubeconfig, what it says when there is none, and its
one warning for a kubeconfig that skips TLS verification."""

from __future__ import annotations

import os
import sys
from pathlib import Path

DEFAULT = "~/.kube/config"
TEST_CLUSTER = (
    "for this project's test cluster: scripts/testcluster start DIR, then KUBECONFIG=DIR/kubeconfig"
)


def missing(kubeconfig: str | None) -> str | None:
    """Why no kubeconfig can be read (what was looked for, and how to give one), or None.

    kubectl's rules: the given file, else every file ``KUBECONFIG`` lists, else
    ``~/.kube/config``; a pod uses its service account instead."""
    if kubeconfig is not None:
        if Path(kubeconfig).expanduser().exists():
            return None
        return f"kubeconfig {kubeconfig} does not exist (--kubeconfig, KUBECONFIG)"
    listed = [p for p in os.environ.get("KUBECONFIG", "").split(os.pathsep) if p]
    if any(Path(p).expanduser().exists() for p in listed):
        return None
    if not listed and Path(DEFAULT).expanduser().exists():
        return None
    looked = (
        f"KUBECONFIG lists {', '.join(listed)}, none of which exists"
        if listed
        else f"KUBECONFIG is not set and there is no {DEFAULT} ({Path(DEFAULT).expanduser()})"
    )
    return (
        f"no kubeconfig found: {looked}; give one with --kubeconfig FILE (Python: "
        f"Client(kubeconfig=...)) or the KUBECONFIG variable; {TEST_CLUSTER}"
    )


_warned: list[str] = []


def warn_if_insecure(config) -> None:
    """One line on stderr, once per process (the first client made), when the kubeconfig
    skips TLS verification; urllib3's own warning (twice per call) is silenced.
    ``PYTHONWARNINGS=ignore`` silences this one too."""
    import warnings

    from urllib3.exceptions import InsecureRequestWarning

    warnings.simplefilter("ignore", InsecureRequestWarning)
    if config.verify_ssl or _warned or "ignore" in sys.warnoptions:
        return
    _warned.append(config.host)
    print(
        f"warning: the kubeconfig skips TLS verification for {config.host} "
        "(insecure-skip-tls-verify): the server's identity is not checked",
        file=sys.stderr,
    )
