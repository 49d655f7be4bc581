"""``python -m vkubelet.entrypoints.localcluster``: a local control plane until Ctrl-C."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from vkubelet.entrypoints.localcluster.binaries import BinaryError
from vkubelet.entrypoints.localcluster.cluster import ClusterError, LocalCluster


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m vkubelet.entrypoints.localcluster",
        description="Build (first time only) and start etcd + kube-apiserver on loopback; Ctrl-C stops them.",
    )
    parser.add_argument("--work-dir", type=Path, help="keep certificates, data and logs here")
    parser.add_argument("--port", type=int, help="kube-apiserver secure port (default: a free one)")
    args = parser.parse_args(argv)

    stopping = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    cluster = LocalCluster(args.work_dir, apiserver_port=args.port)
    try:
        cluster.start()
    except (BinaryError, ClusterError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    print(f"kube-apiserver: {cluster.server_url}", flush=True)
    print(f"logs: {cluster.log_dir}", flush=True)
    print(f"export KUBECONFIG={cluster.kubeconfig_path}", flush=True)
    print("Ctrl-C stops the cluster.", file=sys.stderr, flush=True)
    status = 0
    try:
        while not stopping.wait(1.0):
            cluster.check_alive()
    except ClusterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        status = 1
    finally:
        cluster.stop(keep_work_dir=status != 0)
    return status


if __name__ == "__main__":
    raise SystemExit(main())
