"""Locate, or build once from the Go module proxy, the control-plane binaries.

The binaries live in a cache outside the repository::

    $VKUBELET_BIN_CACHE/                 (default ~/.cache/vkubelet/bin)
        kubernetes-v1.36.3/kube-apiserver
        kubernetes-v1.36.3/kube-scheduler
        kubernetes-v1.36.3/kube-controller-manager
        kubernetes-v1.36.3/kubectl
        etcd-v3.6.16/etcd
        logs/<component>-<version>.log   (the last build's output)

A component is built only when one of its executables is missing. The build writes into a
temporary directory beside the final one and renames it into place, so an interrupted build never
leaves a half-filled cache entry, and a lock file serialises concurrent builds of one component.

The Go wrapper modules (go.mod + go.sum pinning every dependency) are in the repository's
``tools/`` directory, found next to the package or through ``$VKUBELET_TOOLS_DIR``.

``python -m vkubelet.entrypoints.localcluster.binaries`` builds whatever is missing and prints the
paths.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import vkubelet

CACHE_ENV = "VKUBELET_BIN_CACHE"
TOOLS_ENV = "VKUBELET_TOOLS_DIR"
PROGRESS_INTERVAL_SECONDS = 30.0
LOG_TAIL_LINES = 40


@dataclass(frozen=True, slots=True)
class Component:
    """One cache entry: a set of executables built together by one ``go`` command.

    Two recipes exist. With ``module`` set, ``go build`` runs inside the wrapper module
    ``<tools>/<module>`` (its go.mod pins the versions, its replace lines fix upstream's). With
    ``install_ref`` set, ``go install <package>@<install_ref>`` needs no wrapper (modules without
    replace directives, e.g. Jaeger v2 addressed by commit).
    """

    name: str
    version: str
    #: executable name -> Go main package
    executables: Mapping[str, str]
    module: str | None = None
    install_ref: str | None = None
    tags: Sequence[str] = ()
    #: packages whose gitVersion/gitMajor/... variables are stamped (k8s hack/lib/version.sh)
    version_packages: Sequence[str] = ()
    expected_minutes: str = "a few"
    #: built only when asked for by name, not by ``ensure()`` without arguments
    on_demand: bool = False

    @property
    def dir_name(self) -> str:
        return f"{self.name}-{self.version}"

    def ldflags(self, build_date: str) -> str:
        flags = ["-s", "-w"]
        if self.version_packages:
            major, minor = self.version.lstrip("v").split(".")[:2]
            for package in self.version_packages:
                flags += [
                    f"-X {package}.gitVersion={self.version}",
                    f"-X {package}.gitMajor={major}",
                    f"-X {package}.gitMinor={minor}",
                    f"-X {package}.gitTreeState=clean",
                    f"-X {package}.buildDate={build_date}",
                ]
        return " ".join(flags)


# The one table of what we build. docs/control-plane.md explains the versions.
COMPONENTS: dict[str, Component] = {
    component.name: component
    for component in (
        Component(
            name="etcd",
            version="v3.6.16",
            executables={"etcd": "go.etcd.io/etcd/server/v3"},
            module="etcd",
            expected_minutes="1-3",
        ),
        Component(
            name="kubernetes",
            version="v1.36.3",
            executables={
                "kube-apiserver": "k8s.io/kubernetes/cmd/kube-apiserver",
                "kube-controller-manager": "k8s.io/kubernetes/cmd/kube-controller-manager",
                "kube-scheduler": "k8s.io/kubernetes/cmd/kube-scheduler",
                "kubectl": "k8s.io/kubernetes/cmd/kubectl",
            },
            module="k8s",
            tags=("selinux", "notest", "grpcnotrace"),
            version_packages=("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"),
            expected_minutes="5-15",
        ),
        Component(
            # Jaeger's v2 binary (cmd/jaeger: Thrift over HTTP on 14268 and UDP on 6831, OTLP,
            # query API on 16686). The proxy serves no v2 tag (the module path has no /v2) and
            # refuses later commits, so this is v1.76.0, the same commit as v2.13.0. Its go.mod
            # has a replace line, hence the wrapper module tools/jaeger (go.sum committed: some
            # of its modules are missing from the checksum database).
            name="jaeger",
            version="v1.76.0",
            executables={"jaeger": "github.com/jaegertracing/jaeger/cmd/jaeger"},
            module="jaeger",
            expected_minutes="5-10",
            on_demand=True,
        ),
        Component(
            # The Go virtual-kubelet CLI with its built-in mock provider, for bench/compare.py. A
            # wrapper module although upstream has no replace lines: `go install ...@v1.14.1` reads
            # the module's version list for deprecations, and the proxy refuses that list (403).
            name="upstream-vk",
            version="v1.14.1",
            executables={"virtual-kubelet": "github.com/virtual-kubelet/virtual-kubelet/cmd/virtual-kubelet"},
            module="upstream-vk",
            expected_minutes="5",
            on_demand=True,
        ),
        Component(
            # KWOK's standalone controller (fake nodes and pod lifecycle stages), for bench/kwok.py.
            # Upstream has no replace lines; the wrapper module tools/kwok pins its go.sum like
            # upstream-vk's does.
            name="kwok",
            version="v0.8.0",
            executables={"kwok": "sigs.k8s.io/kwok/cmd/kwok"},
            module="kwok",
            expected_minutes="2-5",
            on_demand=True,
        ),
    )
}


class BinaryError(RuntimeError):
    """A control-plane binary is missing and cannot be built."""


class GoNotFoundError(BinaryError):
    pass


class ToolsDirNotFoundError(BinaryError):
    pass


class BuildFailedError(BinaryError):
    def __init__(self, message: str, log_path: Path) -> None:
        super().__init__(message)
        self.log_path = log_path


@dataclass(frozen=True, slots=True)
class Binaries:
    """Paths of the executables the local control plane runs."""

    etcd: Path
    kube_apiserver: Path
    kube_scheduler: Path
    kube_controller_manager: Path
    kubectl: Path


def default_cache_root() -> Path:
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "vkubelet" / "bin"


def default_tools_dir() -> Path:
    configured = os.environ.get(TOOLS_ENV)
    if configured:
        return Path(configured).expanduser()
    # src/ is the package, so its parent is the repository root in a checkout or editable install.
    return Path(vkubelet.__file__).resolve().parent.parent / "tools"


def tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of a text file, or a note when it cannot be read."""
    try:
        with path.open("rb") as stream:
            stream.seek(0, os.SEEK_END)
            size = stream.tell()
            stream.seek(max(0, size - 64 * 1024))
            text = stream.read().decode("utf-8", errors="replace")
    except OSError as exc:
        return f"(cannot read {path}: {exc})"
    return "\n".join(text.splitlines()[-lines:])


def _is_executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def _elapsed(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


@dataclass
class BinaryCache:
    """Finds the cached executables and builds the missing ones."""

    root: Path = field(default_factory=default_cache_root)
    tools_dir: Path = field(default_factory=default_tools_dir)
    progress: TextIO | None = None  # None = sys.stderr at the time of writing
    components: Mapping[str, Component] = field(default_factory=lambda: COMPONENTS)

    def path(self, component: str, executable: str) -> Path:
        """Where ``executable`` of ``component`` lives in the cache (built or not)."""
        return self.root / self.components[component].dir_name / executable

    def is_cached(self, component: str) -> bool:
        spec = self.components[component]
        return all(_is_executable(self.path(component, exe)) for exe in spec.executables)

    def ensure(self, *names: str) -> dict[str, Path]:
        """Build what is missing; return executable name -> path for the named components.

        Without names, every component that is not ``on_demand``.
        """
        selected = names or tuple(n for n, c in self.components.items() if not c.on_demand)
        paths: dict[str, Path] = {}
        for name in selected:
            if name not in self.components:
                raise BinaryError(f"unknown component {name!r}; known: {', '.join(self.components)}")
            if not self.is_cached(name):
                self._build_locked(self.components[name])
            paths.update({exe: self.path(name, exe) for exe in self.components[name].executables})
        return paths

    def binaries(self) -> Binaries:
        """The control plane's executables, built first when missing."""
        paths = self.ensure("etcd", "kubernetes")
        return Binaries(
            etcd=paths["etcd"],
            kube_apiserver=paths["kube-apiserver"],
            kube_scheduler=paths["kube-scheduler"],
            kube_controller_manager=paths["kube-controller-manager"],
            kubectl=paths["kubectl"],
        )

    # -- building -----------------------------------------------------------------------------

    def _say(self, message: str) -> None:
        stream = self.progress or sys.stderr
        print(f"vkubelet: {message}", file=stream, flush=True)

    def _build_locked(self, spec: Component) -> None:
        go = self._find_go(spec)
        workdir = self._build_dir(spec)
        self.root.mkdir(parents=True, exist_ok=True)
        with self._lock(spec):
            if self.is_cached(spec.name):  # another process built it while we waited
                return
            self._build(spec, go, workdir)

    def _find_go(self, spec: Component) -> str:
        go = shutil.which("go")
        if go is None:
            missing = "\n".join(f"  {self.path(spec.name, exe)}" for exe in spec.executables)
            raise GoNotFoundError(
                f"cannot build {spec.name} {spec.version}: the Go toolchain (`go`) is not on PATH.\n"
                f"These binaries are missing from the cache ({CACHE_ENV}={self.root}):\n{missing}\n"
                "Fix: install Go >= 1.26 (https://go.dev/dl/) and put its bin directory on PATH, e.g.\n"
                "  export PATH=$PATH:/usr/local/go/bin\n"
                f"or point {CACHE_ENV} at a directory that already holds the built binaries."
            )
        return go

    def _build_dir(self, spec: Component) -> Path | None:
        if spec.module is None:
            return None
        module_dir = self.tools_dir / spec.module
        if not (module_dir / "go.mod").is_file():
            raise ToolsDirNotFoundError(
                f"cannot build {spec.name} {spec.version}: its Go wrapper module "
                f"{module_dir / 'go.mod'} does not exist.\n"
                f"The wrapper modules live in the tools/ directory of a vkubelet checkout; set "
                f"{TOOLS_ENV} to that directory (or {CACHE_ENV} to a cache holding the binaries)."
            )
        return module_dir

    @contextlib.contextmanager
    def _lock(self, spec: Component) -> Iterator[None]:
        lock_path = self.root / f".{spec.dir_name}.lock"
        with lock_path.open("w") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self._say(f"waiting for another process that is building {spec.dir_name} ({lock_path})")
                fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _command(self, spec: Component, go: str, out_dir: Path) -> list[str]:
        build_date = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        flags = ["-trimpath", "-ldflags", spec.ldflags(build_date)]
        if spec.tags:
            flags += [f"-tags={','.join(spec.tags)}"]
        if spec.install_ref is not None:
            packages = [f"{package}@{spec.install_ref}" for package in spec.executables.values()]
            return [go, "install", *flags, *packages]
        if len(spec.executables) == 1:
            ((exe, package),) = spec.executables.items()
            return [go, "build", *flags, "-o", str(out_dir / exe), package]
        # One invocation for several mains shares the compile of their common packages; go names
        # each output after the last element of its package path.
        return [go, "build", *flags, "-o", f"{out_dir}/", *spec.executables.values()]

    def _build(self, spec: Component, go: str, module_dir: Path | None) -> None:
        final_dir = self.root / spec.dir_name
        log_dir = self.root / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        log_path = log_dir / f"{spec.dir_name}.log"
        tmp_dir = Path(tempfile.mkdtemp(prefix=f".{spec.dir_name}.tmp-", dir=self.root))
        env = dict(os.environ, GOTOOLCHAIN="local", CGO_ENABLED="0", GOWORK="off", GOBIN=str(tmp_dir))
        command = self._command(spec, go, tmp_dir)
        cwd = module_dir or tmp_dir
        self._say(
            f"building {spec.name} {spec.version} ({', '.join(spec.executables)}) with Go; "
            f"first run only, expect {spec.expected_minutes} min on 2 cores"
        )
        self._say(f"  build log: {log_path}")
        started = time.monotonic()
        try:
            with log_path.open("w") as log:
                log.write(f"$ cd {cwd} && {' '.join(command)}\n")
                log.flush()
                process = subprocess.Popen(
                    command, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
                )
                try:
                    while True:
                        try:
                            returncode = process.wait(timeout=PROGRESS_INTERVAL_SECONDS)
                            break
                        except subprocess.TimeoutExpired:
                            self._say(
                                f"  still building {spec.dir_name}: {_elapsed(time.monotonic() - started)} "
                                f"elapsed (log: {log_path})"
                            )
                finally:
                    if process.poll() is None:  # interrupted (Ctrl-C): do not leave go running
                        process.kill()
                        process.wait()
            took = time.monotonic() - started
            if returncode != 0:
                raise BuildFailedError(
                    f"building {spec.name} {spec.version} failed (go exited with {returncode} after "
                    f"{_elapsed(took)}).\nFull log: {log_path}\nLast lines:\n{tail(log_path)}",
                    log_path,
                )
            missing = [exe for exe in spec.executables if not _is_executable(tmp_dir / exe)]
            if missing:
                raise BuildFailedError(
                    f"building {spec.name} {spec.version} produced no {', '.join(missing)} in {tmp_dir}; "
                    f"log: {log_path}",
                    log_path,
                )
            if final_dir.exists():  # a stale, incomplete entry: replace it
                shutil.rmtree(final_dir)
            os.rename(tmp_dir, final_dir)
            with log_path.open("a") as log:
                log.write(f"\n{spec.dir_name} build took {took:.0f}s\n")
            self._say(f"built {spec.dir_name} in {_elapsed(took)} -> {final_dir}")
        finally:
            if tmp_dir.exists():
                shutil.rmtree(tmp_dir, ignore_errors=True)


def ensure_binaries(cache: BinaryCache | None = None) -> Binaries:
    """The control plane's executables from the default cache, built when missing."""
    return (cache or BinaryCache()).binaries()


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m vkubelet.entrypoints.localcluster.binaries",
        description=f"Build the missing control-plane binaries into the cache (${CACHE_ENV}).",
    )
    parser.add_argument(
        "components",
        nargs="*",
        help=f"components to ensure (default: all but on-demand ones); known: {', '.join(COMPONENTS)}",
    )
    args = parser.parse_args(argv)
    try:
        paths = BinaryCache().ensure(*args.components)
    except BinaryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
