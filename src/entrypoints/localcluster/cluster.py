"""A throwaway but whole control plane on loopback, for tests and the local run.

etcd, kube-apiserver (default admission plugins, ServiceAccount included), kube-scheduler and
kube-controller-manager (its default controllers: serviceaccount and its tokens, the root CA
publisher, deployment/replicaset/job, endpointslice, garbage collector, node lifecycle, CSR
signing, ...), so ordinary workloads behave as on any cluster. ``start()`` returns once the
``default`` ServiceAccount exists, so a pod can be created at once.

What it generates in its work directory (docs/control-plane.md explains each flag)::

    pki/serving-ca.{crt,key}      CA of the API server's serving cert (kubeconfig trusts it)
    pki/apiserver.{crt,key}       serving cert: CN=localhost, SAN localhost, 127.0.0.1, ::1
    pki/client-ca.{crt,key}       --client-ca-file; issue more client certs with it
    pki/admin.{crt,key}           CN=admin, O=system:masters (bypasses RBAC)
    pki/kubelet-client.{crt,key}  what the API server presents to kubelets (O=system:masters)
    pki/kubelet-serving-ca.{crt,key}  signer of kubernetes.io/kubelet-serving CSRs
    pki/kube-scheduler.{crt,key}, pki/kube-controller-manager.{crt,key}  their identities
    pki/sa.key                    service-account signing key (RSA)
    admin.kubeconfig, kube-scheduler.kubeconfig, kube-controller-manager.kubeconfig
    etcd/                         etcd data
    logs/<component>.log

The work directory is deleted by a clean ``stop()`` unless it was given by the caller or
``keep_work_dir=True`` is passed; when starting fails it is kept and the error names it.
"""

from __future__ import annotations

import atexit
import base64
import errno
import fcntl
import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO

import yaml

from vkubelet.adapters import certs
from vkubelet.adapters.system import die_with_parent_prefix
from vkubelet.entrypoints.localcluster.binaries import Binaries, ensure_binaries, tail

LOOPBACK = "127.0.0.1"
LOCAL_CLUSTER_DIR_ENV = "VKUBELET_LOCAL_CLUSTER_DIR"
SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"
# Go's net.Listen error, as etcd and kube-apiserver log it.
_ADDRESS_IN_USE = re.compile(r"listen tcp [^\s:]*:(\d+): bind: address already in use")


class ClusterError(RuntimeError):
    """The local control plane could not be started or used."""


class ClusterStartError(ClusterError):
    def __init__(self, message: str, log_path: Path | None = None) -> None:
        super().__init__(message)
        self.log_path = log_path


class PortInUseError(ClusterStartError):
    def __init__(self, port: int, purpose: str, log_path: Path | None = None, host: str = LOOPBACK) -> None:
        super().__init__(
            f"port {host}:{port} ({purpose}) is already in use; stop whatever listens there "
            f"(e.g. `ss -ltnp 'sport = :{port}'`) or let LocalCluster pick free ports",
            log_path,
        )
        self.port = port


class KubectlError(ClusterError, subprocess.CalledProcessError):
    """kubectl exited non-zero; the message includes its stderr."""

    def __init__(self, returncode: int, cmd: Sequence[str], output: str, stderr: str) -> None:
        # RuntimeError comes first in the MRO and would swallow the arguments: set them here.
        subprocess.CalledProcessError.__init__(self, returncode, cmd, output, stderr)

    def __str__(self) -> str:
        command = " ".join(str(part) for part in self.cmd)
        return f"`{command}` exited with {self.returncode}:\n{self.stderr or self.output}"


def local_cluster_dir(environ: Mapping[str, str]) -> Path:
    """Where ``virtual-kubelet`` keeps the control plane it starts for itself: a fixed place,
    so ``tools/kubectl`` and a second terminal find its kubeconfig."""
    configured = environ.get(LOCAL_CLUSTER_DIR_ENV)
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "vkubelet" / "local-cluster"


def free_ports(count: int) -> list[int]:
    """``count`` distinct loopback ports that were free a moment ago."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((LOOPBACK, 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def port_is_free(port: int, host: str = LOOPBACK) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # SO_REUSEADDR as Go servers set it: a listener makes bind fail, TIME_WAIT leftovers do not.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return False
            raise
    return True


# Identities of the two controllers: the API server's bootstrap RBAC binds these user names.
SCHEDULER_USER = "system:kube-scheduler"
CONTROLLER_MANAGER_USER = "system:kube-controller-manager"


class _Process:
    """One child process with its log file."""

    def __init__(self, name: str, command: Sequence[str], log_path: Path) -> None:
        self.name = name
        self.command = list(command)
        self.log_path = log_path
        self._log: IO[bytes] | None = None
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        self._log.write(f"$ {' '.join(self.command)}\n".encode())
        self._log.flush()
        try:
            self.popen = subprocess.Popen(
                # Dies with us even on kill -9 or a second Ctrl-C: no control plane left behind.
                [*die_with_parent_prefix(), *self.command],
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C in a terminal reaches us, and we stop them in order
            )
        except OSError as exc:
            self._close_log()
            raise ClusterStartError(
                f"cannot run {self.name} ({self.command[0]}): {exc}", self.log_path
            ) from exc

    def exit_code(self) -> int | None:
        return None if self.popen is None else self.popen.poll()

    def stop(self, timeout: float) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._close_log()

    def kill(self) -> None:
        """SIGKILL: no graceful shutdown, as a crash or an OOM kill would leave things."""
        if self.popen is not None and self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait()
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


_running: set[LocalCluster] = set()  # strong references: a forgotten cluster still gets stopped


@atexit.register
def _stop_leftovers() -> None:
    """Do not leave etcd or kube-apiserver behind when the interpreter exits without stop()."""
    for cluster in list(_running):
        cluster.stop(keep_work_dir=True)


class LocalCluster:
    """etcd + kube-apiserver on free (or given) loopback ports, with generated certificates.

    Usage::

        with LocalCluster() as cluster:
            cluster.kubectl("get", "namespaces")
    """

    def __init__(
        self,
        work_dir: Path | None = None,
        *,
        binaries: Binaries | None = None,
        apiserver_port: int | None = None,
        etcd_port: int | None = None,
        etcd_peer_port: int | None = None,
        startup_timeout: float = 120.0,
        stop_timeout: float = 15.0,
        extra_apiserver_args: Sequence[str] = (),
        extra_controller_manager_args: Sequence[str] = (),
        node_monitor_grace_period: str = "40s",
        bind_address: str = LOOPBACK,
        fresh: bool = False,
        verify_kubelet_certificates: bool = False,
    ) -> None:
        # The API server's address. Loopback by default; e2e tests that need the API server's
        # node proxy (which refuses loopback kubelets) bind it to their own test network.
        self.bind_address = bind_address
        self._binaries = binaries
        self._owns_work_dir = work_dir is None
        self._work_dir = Path(work_dir) if work_dir is not None else None
        # fresh: empty a given work dir first (a new cluster each run, at a known place).
        self._fresh = fresh
        self._lock: IO[str] | None = None
        self._requested_ports = (apiserver_port, etcd_port, etcd_peer_port, None, None)
        self._startup_timeout = startup_timeout
        self._stop_timeout = stop_timeout
        self._extra_apiserver_args = list(extra_apiserver_args)
        # The API server verifies kubelets' serving certificates against the kubelet-serving
        # signer (--kubelet-certificate-authority): kubelets then need a CSR-issued certificate.
        self.verify_kubelet_certificates = verify_kubelet_certificates
        self._extra_controller_manager_args = list(extra_controller_manager_args)
        # How long the node lifecycle controller waits for a silent node before marking it
        # Unknown and tainting it unreachable (the controller-manager's default is 40s).
        self.node_monitor_grace_period = node_monitor_grace_period
        self._etcd: _Process | None = None
        self._apiserver: _Process | None = None
        self._scheduler: _Process | None = None
        self._controller_manager: _Process | None = None
        self._apiserver_port = 0
        self._etcd_port = 0
        self._etcd_peer_port = 0
        self._scheduler_port = 0
        self._controller_manager_port = 0

    # -- public properties ------------------------------------------------------------------

    @property
    def work_dir(self) -> Path:
        if self._work_dir is None:
            raise ClusterError("the cluster has not been started")
        return self._work_dir

    @property
    def pki_dir(self) -> Path:
        return self.work_dir / "pki"

    @property
    def log_dir(self) -> Path:
        return self.work_dir / "logs"

    @property
    def etcd_log_path(self) -> Path:
        return self.log_dir / "etcd.log"

    @property
    def apiserver_log_path(self) -> Path:
        return self.log_dir / "kube-apiserver.log"

    @property
    def scheduler_log_path(self) -> Path:
        return self.log_dir / "kube-scheduler.log"

    @property
    def controller_manager_log_path(self) -> Path:
        return self.log_dir / "kube-controller-manager.log"

    @property
    def kubeconfig_path(self) -> Path:
        return self.work_dir / "admin.kubeconfig"

    @property
    def server_url(self) -> str:
        return f"https://{self.bind_address}:{self._apiserver_port}"

    @property
    def etcd_url(self) -> str:
        return f"http://{LOOPBACK}:{self._etcd_port}"

    @property
    def ca_cert_path(self) -> Path:
        """The CA that signed the API server's serving certificate."""
        return self.pki_dir / "serving-ca.crt"

    @property
    def client_ca_cert_path(self) -> Path:
        """The CA the API server trusts for client certificates (``--client-ca-file``)."""
        return self.pki_dir / "client-ca.crt"

    @property
    def client_ca_key_path(self) -> Path:
        return self.pki_dir / "client-ca.key"

    @property
    def kubelet_client_cert_path(self) -> Path:
        """The certificate the API server presents when it calls a kubelet."""
        return self.pki_dir / "kubelet-client.crt"

    @property
    def binaries(self) -> Binaries:
        if self._binaries is None:
            self._binaries = ensure_binaries()
        return self._binaries

    @property
    def kubelet_serving_ca_cert_path(self) -> Path:
        """The CA the controller-manager signs ``kubernetes.io/kubelet-serving`` CSRs with."""
        return self.pki_dir / "kubelet-serving-ca.crt"

    @property
    def running(self) -> bool:
        return any(p is not None and p.exit_code() is None for p in self._processes())

    def _processes(self) -> tuple[_Process | None, ...]:
        """Every component, in start order."""
        return (self._etcd, self._apiserver, self._scheduler, self._controller_manager)

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> LocalCluster:
        if self.running:
            raise ClusterError("the cluster is already running")
        binaries = self.binaries  # builds first when missing, before any port is chosen
        if self._work_dir is None:
            self._work_dir = Path(tempfile.mkdtemp(prefix="vkubelet-cluster-"))
        else:
            self._take_lock()
        if self._fresh:
            shutil.rmtree(self.work_dir, ignore_errors=True)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        attempts = 1 if any(self._requested_ports) else 3
        for attempt in range(1, attempts + 1):
            self._choose_ports()
            try:
                self._write_pki()
                self._start_etcd(binaries)
                self._start_apiserver(binaries)
                self._write_kubeconfigs()
                self._start_scheduler(binaries)
                self._start_controller_manager(binaries)
                self._wait_for_default_service_account()
                _running.add(self)
                return self
            except PortInUseError:
                self._stop_processes()
                if attempt == attempts:
                    self._release_lock()
                    self._report_failure()
                    raise
                # a free port was taken between choosing and binding it: choose again
            except BaseException:
                self._stop_processes()
                self._release_lock()
                self._report_failure()
                raise
        raise AssertionError("unreachable")

    def _take_lock(self) -> None:
        """One cluster per work directory: a second one would wipe or share the first's files."""
        lock_path = self.work_dir.with_name(self.work_dir.name + ".lock")
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        handle = lock_path.open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise ClusterStartError(
                f"another local control plane is running in {self.work_dir} (process {holder}); "
                f"stop it first, or set {LOCAL_CLUSTER_DIR_ENV} to another directory"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._lock = handle

    def _release_lock(self) -> None:
        if self._lock is not None:
            self._lock.close()  # closing drops the flock
            self._lock = None

    def stop(self, *, keep_work_dir: bool = False) -> None:
        """SIGTERM the controllers, the API server, then etcd (SIGKILL after ``stop_timeout``)."""
        self._stop_processes()
        self._release_lock()
        _running.discard(self)
        if self._work_dir is None:
            return
        if self._owns_work_dir and not keep_work_dir:
            shutil.rmtree(self._work_dir, ignore_errors=True)
        else:
            print(f"vkubelet: local cluster files and logs kept in {self._work_dir}", file=sys.stderr)

    def restart_apiserver(self) -> None:
        """Stop and start kube-apiserver on the same port (etcd keeps the data)."""
        if self._apiserver is None:
            raise ClusterError("the cluster has not been started")
        self._apiserver.stop(self._stop_timeout)
        self._start_apiserver(self.binaries)

    def kill_and_restart(self) -> None:
        """SIGKILL kube-apiserver and etcd, then start both again on the same ports.

        etcd restarts on its data directory, so every object and resourceVersion survives: what a
        control-plane node crash and reboot looks like to a client.
        """
        if self._apiserver is None or self._etcd is None:
            raise ClusterError("the cluster has not been started")
        self._apiserver.kill()
        self._etcd.kill()
        binaries = self.binaries
        self._start_etcd(binaries, keep_data=True)
        self._start_apiserver(binaries)

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop(keep_work_dir=exc_type is not None)

    # -- helpers for tests and other components ---------------------------------------------

    def kubectl(
        self, *args: str, check: bool = True, input: str | None = None, timeout: float = 60.0
    ) -> subprocess.CompletedProcess[str]:
        """Run the cached kubectl with the admin kubeconfig."""
        command = [str(self.binaries.kubectl), f"--kubeconfig={self.kubeconfig_path}", *args]
        result = subprocess.run(command, input=input, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise KubectlError(result.returncode, command, result.stdout, result.stderr)
        return result

    def create_namespace(self, name: str, *, timeout: float = 30.0) -> None:
        """Create namespace ``name`` and wait for its ``default`` ServiceAccount, without which
        the ServiceAccount admission plugin rejects the namespace's first pods."""
        self.kubectl("create", "namespace", name)
        deadline = time.monotonic() + timeout
        path = f"/api/v1/namespaces/{name}/serviceaccounts/default"
        while (problem := self._admin_get(path)) is not None:
            if time.monotonic() > deadline:
                raise ClusterError(
                    f"namespace {name}: no default ServiceAccount after {timeout:.0f}s ({problem}); "
                    f"kube-controller-manager log: {self.controller_manager_log_path}"
                )
            time.sleep(0.1)

    def issue_client_certificate(self, common_name: str, organizations: Sequence[str] = ()) -> certs.KeyPair:
        """A client certificate the API server accepts (user ``common_name``, groups ``organizations``)."""
        client_ca = certs.KeyPair(self.client_ca_cert_path.read_bytes(), self.client_ca_key_path.read_bytes())
        return certs.issue(client_ca, common_name=common_name, organizations=organizations, client=True)

    def check_alive(self) -> None:
        """Raise with the log tail if a component has exited."""
        for process in self._processes():
            if process is not None and process.exit_code() is not None:
                raise ClusterError(self._exited_message(process))

    # -- internals --------------------------------------------------------------------------

    def _choose_ports(self) -> None:
        requested = self._requested_ports
        fresh = iter(free_ports(sum(port is None for port in requested)))
        (
            self._apiserver_port,
            self._etcd_port,
            self._etcd_peer_port,
            self._scheduler_port,
            self._controller_manager_port,
        ) = (port if port is not None else next(fresh) for port in requested)
        for host, port, purpose in (
            (LOOPBACK, self._etcd_port, "etcd client URL"),
            (LOOPBACK, self._etcd_peer_port, "etcd peer URL"),
            (self.bind_address, self._apiserver_port, "kube-apiserver secure port"),
            (LOOPBACK, self._scheduler_port, "kube-scheduler secure port"),
            (LOOPBACK, self._controller_manager_port, "kube-controller-manager secure port"),
        ):
            if not port_is_free(port, host):
                raise PortInUseError(port, purpose, host=host)

    def _write_pki(self) -> None:
        pki = self.pki_dir
        if (pki / "sa.key").exists():  # restart or retry in the same work dir: keep identities
            return
        pki.mkdir(parents=True, exist_ok=True)
        serving_ca = certs.new_ca("vkubelet-serving-ca")
        client_ca = certs.new_ca("vkubelet-client-ca")
        pairs = {
            "serving-ca": serving_ca,
            "client-ca": client_ca,
            "kubelet-serving-ca": certs.new_ca("vkubelet-kubelet-serving-ca"),
            "kube-scheduler": certs.issue(client_ca, common_name=SCHEDULER_USER, client=True),
            "kube-controller-manager": certs.issue(
                client_ca, common_name=CONTROLLER_MANAGER_USER, client=True
            ),
            "apiserver": certs.issue(
                serving_ca,
                common_name="localhost",
                server=True,
                dns_names=["localhost"],
                ip_addresses=sorted({LOOPBACK, "::1", self.bind_address}),
            ),
            "admin": certs.issue(
                client_ca, common_name="admin", organizations=["system:masters"], client=True
            ),
            "kubelet-client": certs.issue(
                client_ca,
                common_name="kube-apiserver-kubelet-client",
                organizations=["system:masters"],
                client=True,
            ),
        }
        for name, pair in pairs.items():
            (pki / f"{name}.crt").write_bytes(pair.cert_pem)
            _write_private(pki / f"{name}.key", pair.key_pem)
        _write_private(pki / "sa.key", certs.rsa_private_key_pem())

    def _start_etcd(self, binaries: Binaries, *, keep_data: bool = False) -> None:
        client_url = self.etcd_url
        peer_url = f"http://{LOOPBACK}:{self._etcd_peer_port}"
        if not keep_data:
            # A fresh member: a data dir from an earlier attempt remembers other peer URLs.
            shutil.rmtree(self.work_dir / "etcd", ignore_errors=True)
        self._etcd = _Process(
            "etcd",
            [
                str(binaries.etcd),
                "--name=vkubelet",
                f"--data-dir={self.work_dir / 'etcd'}",
                f"--listen-client-urls={client_url}",
                f"--advertise-client-urls={client_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=vkubelet={peer_url}",
                "--unsafe-no-fsync",  # throwaway data: skip fsync, much faster on CI disks
                "--log-level=warn",
            ],
            self.etcd_log_path,
        )
        self._etcd.start()
        self._wait_ready(
            self._etcd,
            self._etcd_ready,
            "etcd",
            {self._etcd_port: "etcd client URL", self._etcd_peer_port: "etcd peer URL"},
        )

    def _apiserver_args(self) -> list[str]:
        pki = self.pki_dir
        return [
            f"--etcd-servers={self.etcd_url}",
            f"--bind-address={self.bind_address}",
            f"--advertise-address={self.bind_address}",
            f"--secure-port={self._apiserver_port}",
            f"--cert-dir={pki}",
            f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={self.client_ca_cert_path}",
            f"--service-account-issuer={self.server_url}",
            f"--service-account-key-file={pki / 'sa.key'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
            "--authorization-mode=Node,RBAC",
            "--allow-privileged=true",
            # The default admission plugins stay on (ServiceAccount included: every pod gets
            # its projected kube-api-access volume, as in any cluster).
            *self._endpoint_reconciler_args(),
            # A virtual kubelet reports an InternalIP and its port; logs/exec/proxy go there.
            "--kubelet-preferred-address-types=InternalIP",
            f"--kubelet-client-certificate={self.kubelet_client_cert_path}",
            f"--kubelet-client-key={pki / 'kubelet-client.key'}",
            *(
                [f"--kubelet-certificate-authority={self.kubelet_serving_ca_cert_path}"]
                if self.verify_kubelet_certificates
                else []
            ),
            *self._extra_apiserver_args,
        ]

    def _endpoint_reconciler_args(self) -> list[str]:
        # The "kubernetes" Service's endpoint is the advertised address, which the API server
        # refuses when it is loopback; elsewhere (a test network) keep the default reconciler.
        if ipaddress.ip_address(self.bind_address).is_loopback:
            return ["--endpoint-reconciler-type=none"]
        return []

    def _start_apiserver(self, binaries: Binaries) -> None:
        self._apiserver = _Process(
            "kube-apiserver", [str(binaries.kube_apiserver), *self._apiserver_args()], self.apiserver_log_path
        )
        self._apiserver.start()
        self._wait_ready(
            self._apiserver,
            self._apiserver_ready,
            "kube-apiserver",
            {self._apiserver_port: "kube-apiserver secure port"},
        )

    def _start_scheduler(self, binaries: Binaries) -> None:
        self._scheduler = _Process(
            "kube-scheduler",
            [
                str(binaries.kube_scheduler),
                f"--kubeconfig={self.work_dir / 'kube-scheduler.kubeconfig'}",
                "--leader-elect=false",  # one replica
                f"--bind-address={LOOPBACK}",
                f"--secure-port={self._scheduler_port}",
                f"--cert-dir={self.work_dir / 'kube-scheduler'}",
            ],
            self.scheduler_log_path,
        )
        self._scheduler.start()
        self._wait_ready(
            self._scheduler,
            self._healthz_probe(self._scheduler_port),
            "kube-scheduler",
            {self._scheduler_port: "kube-scheduler secure port"},
        )

    def _controller_manager_args(self) -> list[str]:
        pki = self.pki_dir
        return [
            f"--kubeconfig={self.work_dir / 'kube-controller-manager.kubeconfig'}",
            "--leader-elect=false",
            f"--bind-address={LOOPBACK}",
            f"--secure-port={self._controller_manager_port}",
            f"--cert-dir={self.work_dir / 'kube-controller-manager'}",
            # Each controller acts as its own ServiceAccount, as in kubeadm clusters.
            "--use-service-account-credentials=true",
            f"--service-account-private-key-file={pki / 'sa.key'}",
            f"--root-ca-file={self.ca_cert_path}",  # what kube-root-ca.crt publishes
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
            # CSR signers: kubelet serving certificates get their own CA; client certificates
            # come from the CA the API server trusts, so an issued one authenticates.
            f"--cluster-signing-kubelet-serving-cert-file={self.kubelet_serving_ca_cert_path}",
            f"--cluster-signing-kubelet-serving-key-file={pki / 'kubelet-serving-ca.key'}",
            f"--cluster-signing-kubelet-client-cert-file={self.client_ca_cert_path}",
            f"--cluster-signing-kubelet-client-key-file={self.client_ca_key_path}",
            f"--cluster-signing-kube-apiserver-client-cert-file={self.client_ca_cert_path}",
            f"--cluster-signing-kube-apiserver-client-key-file={self.client_ca_key_path}",
            f"--node-monitor-grace-period={self.node_monitor_grace_period}",
            *self._extra_controller_manager_args,
        ]

    def _start_controller_manager(self, binaries: Binaries) -> None:
        self._controller_manager = _Process(
            "kube-controller-manager",
            [str(binaries.kube_controller_manager), *self._controller_manager_args()],
            self.controller_manager_log_path,
        )
        self._controller_manager.start()
        self._wait_ready(
            self._controller_manager,
            self._healthz_probe(self._controller_manager_port),
            "kube-controller-manager",
            {self._controller_manager_port: "kube-controller-manager secure port"},
        )

    def _wait_for_default_service_account(self) -> None:
        """The serviceaccount controller creates ``default/default``; until it has, the
        ServiceAccount admission plugin rejects every pod of the namespace."""
        assert self._controller_manager is not None
        self._wait_ready(
            self._controller_manager,
            lambda: self._admin_get("/api/v1/namespaces/default/serviceaccounts/default"),
            "the default ServiceAccount (kube-controller-manager's serviceaccount controller)",
            {},
        )

    def _wait_ready(
        self,
        process: _Process,
        probe: Callable[[], str | None],
        what: str,
        ports: dict[int, str],
    ) -> None:
        deadline = time.monotonic() + self._startup_timeout
        last_problem = "no answer yet"
        while True:
            if process.exit_code() is not None:
                self._raise_port_in_use(process, ports)
                raise ClusterStartError(self._exited_message(process), process.log_path)
            problem = probe()
            if problem is None:
                return
            last_problem = problem
            if time.monotonic() > deadline:
                raise ClusterStartError(
                    f"{what} did not become ready within {self._startup_timeout:.0f}s "
                    f"(last probe: {last_problem}).\nLog: {process.log_path}\nLast lines:\n"
                    f"{tail(process.log_path)}",
                    process.log_path,
                )
            time.sleep(0.2)

    def _raise_port_in_use(self, process: _Process, ports: dict[int, str]) -> None:
        match = _ADDRESS_IN_USE.search(tail(process.log_path, 200))
        if match is None:
            return
        port = int(match.group(1))
        raise PortInUseError(port, ports.get(port, process.name), process.log_path)

    def _exited_message(self, process: _Process) -> str:
        return (
            f"{process.name} exited with code {process.exit_code()} right after starting.\n"
            f"Log: {process.log_path}\nLast lines:\n{tail(process.log_path)}"
        )

    def _etcd_ready(self) -> str | None:
        try:
            with urllib.request.urlopen(f"{self.etcd_url}/health", timeout=2) as response:
                body = json.loads(response.read())
        except (OSError, ValueError) as exc:
            return str(exc)
        return None if body.get("health") == "true" else f"health: {body}"

    def _apiserver_ready(self) -> str | None:
        return self._admin_get("/readyz")

    def _admin_get(self, path: str) -> str | None:
        """None when the API server answers ``path`` with 200 to the admin, else the problem."""
        context = ssl.create_default_context(cafile=str(self.ca_cert_path))
        context.load_cert_chain(self.pki_dir / "admin.crt", self.pki_dir / "admin.key")
        return _probe(f"{self.server_url}{path}", context)

    @staticmethod
    def _healthz_probe(port: int) -> Callable[[], str | None]:
        # The scheduler and controller-manager serve /healthz over a self-signed certificate
        # to anyone (it is in their default --authorization-always-allow-paths).
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return lambda: _probe(f"https://{LOOPBACK}:{port}/healthz", context)

    def _write_kubeconfigs(self) -> None:
        for user, file_name, pair in (
            ("admin", "admin.kubeconfig", "admin"),
            (SCHEDULER_USER, "kube-scheduler.kubeconfig", "kube-scheduler"),
            (CONTROLLER_MANAGER_USER, "kube-controller-manager.kubeconfig", "kube-controller-manager"),
        ):
            self._write_kubeconfig(self.work_dir / file_name, user=user, pair=pair)

    def _write_kubeconfig(self, path: Path, *, user: str, pair: str) -> None:
        pki = self.pki_dir
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "vkubelet-local",
                    "cluster": {
                        "server": self.server_url,
                        "certificate-authority-data": _b64(self.ca_cert_path),
                    },
                }
            ],
            "users": [
                {
                    "name": user,
                    "user": {
                        "client-certificate-data": _b64(pki / f"{pair}.crt"),
                        "client-key-data": _b64(pki / f"{pair}.key"),
                    },
                }
            ],
            "contexts": [{"name": "vkubelet-local", "context": {"cluster": "vkubelet-local", "user": user}}],
            "current-context": "vkubelet-local",
        }
        _write_private(path, yaml.safe_dump(config, sort_keys=False).encode())

    def _stop_processes(self) -> None:
        # Reverse start order: the controllers first, and etcd last (the API server drains to it).
        for process in reversed(self._processes()):
            if process is not None:
                process.stop(self._stop_timeout)

    def _report_failure(self) -> None:
        if self._work_dir is not None:
            print(f"vkubelet: local cluster failed to start; logs kept in {self.log_dir}", file=sys.stderr)


def _probe(url: str, context: ssl.SSLContext) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=2, context=context) as response:
            return None if response.status == 200 else f"HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}"
    except OSError as exc:
        return str(exc)


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as stream:
        stream.write(data)


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode("ascii")
