"""Where ``virtual-kubelet`` finds what flags do not say: environment, kubeconfig, the cluster.

Pure but for file existence checks and reads of the paths given: the kubeconfig (``--kubeconfig``,
``$KUBECONFIG``, ``~/.kube/config``), in-cluster detection (``KUBERNETES_SERVICE_HOST`` and
``_PORT``), whether to start the local control plane, and the pod's own namespace from its
ServiceAccount mount. Underscored names are shared with the other ``cli_*`` modules only.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from vkubelet.entrypoints.cli_flags import _invalid

# The namespace of the pod vkubelet runs in, as the kubelet mounts it for its ServiceAccount.
SERVICE_ACCOUNT_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def wants_local_control_plane(*, requested: bool, kubeconfig: Path | None, in_cluster: bool) -> bool:
    """Whether vkubelet should start its own etcd + kube-apiserver.

    Yes when ``--local-control-plane`` asks for it, and also when there is nothing else to talk
    to: no kubeconfig was found and the process is not running inside a cluster.
    """
    return requested or (kubeconfig is None and not in_cluster)


def _in_cluster(environ: Mapping[str, str]) -> bool:
    """Whether the process runs in a pod: the kubelet sets both variables in every container."""
    return bool(environ.get("KUBERNETES_SERVICE_HOST")) and bool(environ.get("KUBERNETES_SERVICE_PORT"))


def _own_namespace(in_cluster: bool, *, namespace_file: Path = SERVICE_ACCOUNT_NAMESPACE_FILE) -> str | None:
    """The namespace of the pod vkubelet runs in (its ServiceAccount's), when in a cluster."""
    if not in_cluster:
        return None
    try:
        return namespace_file.read_text().strip() or None
    except OSError:
        return None


def _first(*candidates: tuple[str, str | None]) -> tuple[str | None, str | None]:
    """The first non-empty value and where it came from (an empty variable counts as unset)."""
    for source, candidate in candidates:
        if candidate:
            return candidate, source
    return None, None


def _expand_home(path: str, environ: Mapping[str, str]) -> str:
    if path == "~" or path.startswith("~/"):
        return _home(environ) + path[1:]
    return path


def _home(environ: Mapping[str, str]) -> str:
    return environ.get("HOME") or os.path.expanduser("~")


def _kubeconfig(flag: str | None, environ: Mapping[str, str]) -> Path | None:
    """The kubeconfig file: --kubeconfig, else the first existing $KUBECONFIG entry, else
    ~/.kube/config when it exists, else None (in-cluster config or the local control plane).

    Upstream silently fell back to in-cluster config when the file named did not exist; a
    missing file that was asked for by name is an error here.
    """
    if flag is not None:
        if not flag:
            return None  # --kubeconfig="" explicitly asks for no file, as upstream
        path = Path(_expand_home(flag, environ))
        if not path.is_file():
            raise _invalid("--kubeconfig", flag, "no such file")
        return path
    env = environ.get("KUBECONFIG")
    if env:
        entries = [entry for entry in env.split(os.pathsep) if entry]
        for entry in entries:
            path = Path(_expand_home(entry, environ))
            if path.is_file():
                return path
        if entries:
            raise _invalid("KUBECONFIG", env, "no such file")
    default = Path(_home(environ)) / ".kube" / "config"
    return default if default.is_file() else None
