"""The process provider's volumes against real processes and real mounts: files written the
kubelet's atomic way, bind-mounted in each container's private mount namespace (subPath,
readOnly), an emptyDir shared by two containers, exec in the same namespace, contents updated
under a running process, removal on delete, and the honest refusal without the privilege.

Most tests need root (mount namespaces); they are skipped otherwise. Every mount target is
under the test's tmp dir. Every wait is a condition polled against a deadline."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import eventually
from tests.integration.test_grpc_provider import connected
from tests.integration.test_process_provider import FakeIO, container_status, make_pod, shell
from vkubelet.adapters.grpc.server import start_server
from vkubelet.adapters.process import nsexec
from vkubelet.adapters.process.provider import ProcessProvider
from vkubelet.adapters.process.volumes import mounts_below
from vkubelet.application.ports.streams import LogOptions
from vkubelet.domain.errors import InvalidInput, NotFound
from vkubelet.domain.pod import Pod, PodRef
from vkubelet.domain.provider import Capability
from vkubelet.domain.volumes import EmptyDirVolume, FileVolume, PodVolumes, VolumeFile

DEADLINE = 10.0
CHECKOUT = Path(__file__).resolve().parents[2]
needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="mount namespaces and bind mounts need root (CAP_SYS_ADMIN)"
)


def config_volume(greeting: bytes = b"v1") -> FileVolume:
    return FileVolume(
        name="config",
        kind="configMap",
        files=(
            VolumeFile(path="app.conf", data=b"key=value\n", mode=0o640),
            VolumeFile(path="greeting", data=greeting, mode=0o644),
            VolumeFile(path="nested/deep.txt", data=b"deep\n", mode=0o600),
        ),
    )


@pytest.fixture
async def provider(tmp_path: Path) -> AsyncIterator[ProcessProvider]:
    made = ProcessProvider(
        root_dir=tmp_path / "root",
        node_name="vk-0",
        backoff_base=0.05,
        backoff_cap=0.2,
        max_grace_seconds=2.0,
        api_server=("192.0.2.10", 6443),
    )
    yield made
    await made.close()


def volume_dir(provider: ProcessProvider, pod: Pod, name: str) -> Path:
    return provider._root / "pods" / pod.ref.uid / "volumes" / name


def mountinfo_lines(point: Path) -> list[str]:
    """This process's mountinfo lines for mount point ``point``."""
    with open("/proc/self/mountinfo") as mountinfo:
        return [line for line in mountinfo if line.split(" ")[4] == str(point.resolve())]


async def output(provider: ProcessProvider, pod: Pod, container: str = "app") -> bytes:
    try:
        chunks = [c async for c in provider.container_logs(pod.ref, container, LogOptions())]
    except InvalidInput:  # not started yet
        return b""
    return b"".join(chunks)


async def output_with(provider: ProcessProvider, pod: Pod, needle: bytes, container: str = "app") -> bytes:
    async def check() -> bytes:
        text = await output(provider, pod, container)
        return text if needle in text else b""

    return bytes(await eventually(check, f"{needle!r} in the output of {container}"))


async def running(provider: ProcessProvider, pod: Pod, container: str = "app") -> None:
    async def check() -> bool:
        return "running" in container_status(await provider.get_pod_status(pod.ref), container)["state"]

    await eventually(check, f"{container} running")


# -- mounts ----------------------------------------------------------------------------------
@needs_root
async def test_a_config_map_volume_is_mounted_read_only_with_its_files_and_modes(
    provider: ProcessProvider, tmp_path: Path
) -> None:
    etc = tmp_path / "host" / "etc" / "app"
    script = (
        f'cat {etc}/app.conf; stat -L -c "%a" {etc}/app.conf {etc}/nested/deep.txt; '
        f"if {{ echo x > {etc}/new; }} 2>/dev/null; then echo WRITABLE; else echo READ-ONLY; fi; "
        "echo done; sleep 3600"
    )
    pod = make_pod(shell(script, volumeMounts=[{"name": "config", "mountPath": str(etc), "readOnly": True}]))
    await provider.create_pod(pod, PodVolumes(files=(config_volume(),)))

    assert await output_with(provider, pod, b"done\n") == b"key=value\n640\n600\nREAD-ONLY\ndone\n"
    # The mount is the container's alone: on the host the mount point is an empty directory.
    assert etc.is_dir() and list(etc.iterdir()) == []
    # On disk, the kubelet's layout: ..data -> ..<timestamp>, top-level names -> ..data/<name>.
    volume = volume_dir(provider, pod, "config")
    version = os.readlink(volume / "..data")
    assert version.startswith("..") and (volume / version).is_dir() and not (volume / version).is_symlink()
    assert {p.name: os.readlink(p) for p in volume.iterdir() if not p.name.startswith("..")} == {
        "app.conf": "..data/app.conf",
        "greeting": "..data/greeting",
        "nested": "..data/nested",
    }
    assert (volume / version / "nested" / "deep.txt").stat().st_mode & 0o7777 == 0o600


@needs_root
async def test_a_sub_path_mounts_one_file_and_a_missing_one_fails_to_start(
    provider: ProcessProvider, tmp_path: Path
) -> None:
    target = tmp_path / "host" / "srv" / "app.conf"
    script = (
        f"test -f {target} && cat {target}; "
        f"if {{ echo x >> {target}; }} 2>/dev/null; then echo WRITABLE; else echo READ-ONLY; fi; "
        "echo done; sleep 3600"
    )
    app = shell(script, volumeMounts=[{"name": "config", "mountPath": str(target), "subPath": "app.conf"}])
    broken = shell(
        "sleep 3600",
        name="broken",
        volumeMounts=[{"name": "config", "mountPath": str(tmp_path / "host" / "x"), "subPath": "missing"}],
    )
    pod = make_pod(app, broken)
    await provider.create_pod(pod, PodVolumes(files=(config_volume(),)))

    # configMap volumes are read-only even without readOnly, as the kubelet mounts them.
    assert await output_with(provider, pod, b"done\n") == b"key=value\nREAD-ONLY\ndone\n"
    assert target.is_file() and target.stat().st_size == 0  # the host sees the empty mount point

    async def start_error() -> Any:
        status = container_status(await provider.get_pod_status(pod.ref), "broken")
        for state in (status["state"], status["lastState"]):
            terminated = state.get("terminated") or {}
            if terminated.get("reason") == "StartError":
                return terminated
        return None

    terminated = await eventually(start_error, "StartError for the missing subPath")
    assert "subPath 'missing' does not exist in volume 'config'" in terminated["message"]


@needs_root
async def test_an_empty_dir_in_memory_is_shared_by_two_containers_and_removed_on_delete(
    provider: ProcessProvider, tmp_path: Path
) -> None:
    written, read = tmp_path / "host" / "w", tmp_path / "host" / "r"
    writer = shell(
        f"echo from-writer > {written}/msg; stat -f -c %T {written}; sleep 3600",
        name="writer",
        volumeMounts=[{"name": "scratch", "mountPath": str(written)}],
    )
    reader = shell(
        f"while [ ! -e {read}/msg ]; do sleep 0.02; done; cat {read}/msg; "
        f"if {{ echo x > {read}/other; }} 2>/dev/null; then echo WRITABLE; else echo READ-ONLY; fi; "
        "echo done; sleep 3600",
        name="reader",
        volumeMounts=[{"name": "scratch", "mountPath": str(read), "readOnly": True}],
    )
    pod = make_pod(writer, reader, grace=1)
    volumes = PodVolumes(empty_dirs=(EmptyDirVolume(name="scratch", medium="Memory", size_limit="16Mi"),))
    await provider.create_pod(pod, volumes)

    assert await output_with(provider, pod, b"done\n", "reader") == b"from-writer\nREAD-ONLY\ndone\n"
    assert await output_with(provider, pod, b"tmpfs\n", "writer") == b"tmpfs\n"
    scratch = volume_dir(provider, pod, "scratch")
    assert (scratch / "msg").read_bytes() == b"from-writer\n"
    assert scratch.stat().st_mode & 0o777 == 0o777
    assert mounts_below(scratch) == [str(scratch.resolve())]
    (line,) = mountinfo_lines(scratch)
    assert " - tmpfs " in line and "size=16384k" in line

    await provider.delete_pod(pod)
    pod_dir = provider._root / "pods" / pod.ref.uid

    async def removed() -> bool:
        return not pod_dir.exists()

    await eventually(removed, "the pod directory to be removed")
    assert mounts_below(pod_dir) == []


@needs_root
async def test_exec_runs_in_the_container_mount_namespace(provider: ProcessProvider, tmp_path: Path) -> None:
    etc = tmp_path / "host" / "etc" / "app"
    pod = make_pod(
        shell(
            "cat app.conf; sleep 3600",
            workingDir=str(etc),  # inside the mount: resolved in the container's namespace
            volumeMounts=[
                {"name": "config", "mountPath": str(etc)},
                {"name": "cache", "mountPath": str(etc / "cache")},  # nested: mounted after its parent
            ],
        )
    )
    # The port's order: the contents first, then the create (which takes them).
    await provider.set_pod_volumes(
        pod.ref, PodVolumes(files=(config_volume(),), empty_dirs=(EmptyDirVolume("cache"),))
    )
    await provider.create_pod(pod)
    assert await output_with(provider, pod, b"key=value\n") == b"key=value\n"

    io = FakeIO()
    command = ["sh", "-c", "pwd; cat greeting; echo; echo made > cache/file"]
    assert await provider.exec_in_container(pod.ref, "app", command, io) == 0
    assert bytes(io.out) == f"{etc}\nv1\n".encode()
    assert (volume_dir(provider, pod, "cache") / "file").read_bytes() == b"made\n"

    tty = FakeIO(stdin=True, tty=True)
    code = await asyncio.wait_for(
        provider.exec_in_container(pod.ref, "app", ["sh", "-c", "test -t 0 && cat nested/deep.txt"], tty),
        DEADLINE,
    )
    assert code == 0 and b"deep" in tty.out

    missing = FakeIO()
    assert await provider.exec_in_container(pod.ref, "app", ["no-such-binary"], missing) == 127
    assert b"no-such-binary" in missing.err

    done = make_pod(
        shell("true", volumeMounts=[{"name": "config", "mountPath": str(etc)}]),
        uid="uid-done",
        restart_policy="Never",
    )
    await provider.create_pod(done, PodVolumes(files=(config_volume(),)))

    async def succeeded() -> bool:
        return bool((await provider.get_pod_status(done.ref))["phase"] == "Succeeded")

    await eventually(succeeded, "the short pod to succeed")
    with pytest.raises(InvalidInput, match="not running"):
        await provider.exec_in_container(done.ref, "app", ["true"], FakeIO())


@needs_root
async def test_update_volumes_swaps_the_contents_under_a_running_process(
    provider: ProcessProvider, tmp_path: Path
) -> None:
    etc, single = tmp_path / "host" / "etc" / "app", tmp_path / "host" / "one" / "greeting"
    watch = (
        f'last=; while :; do cur=$(cat {etc}/greeting); if [ "$cur" != "$last" ]; then echo "seen $cur"; '
        "last=$cur; fi; sleep 0.02; done"
    )
    pod = make_pod(
        shell(
            watch,
            volumeMounts=[
                {"name": "config", "mountPath": str(etc), "readOnly": True},
                {"name": "config", "mountPath": str(single), "subPath": "greeting"},
            ],
        )
    )
    await provider.create_pod(pod, PodVolumes(files=(config_volume(b"v1"),)))
    await output_with(provider, pod, b"seen v1\n")
    volume = volume_dir(provider, pod, "config")
    before = os.readlink(volume / "..data")

    # greeting changes, app.conf goes away, added.txt comes.
    changed = FileVolume(
        name="config",
        kind="configMap",
        files=(
            VolumeFile(path="greeting", data=b"v2"),
            VolumeFile(path="nested/deep.txt", data=b"deep\n", mode=0o600),
            VolumeFile(path="added.txt", data=b"new file\n"),
        ),
    )
    loop = asyncio.get_running_loop()
    started = loop.time()
    await provider.update_volumes(pod.ref, PodVolumes(files=(changed,)))

    async def seen() -> bool:
        return b"seen v2\n" in await output(provider, pod)

    await eventually(
        seen, "the running process to read v2", within=1.0 - (loop.time() - started), interval=0.01
    )
    after = os.readlink(volume / "..data")
    assert after != before and (volume / after).is_dir()
    assert not (volume / before).exists()  # the old version is gone
    visible = sorted(p.name for p in volume.iterdir() if not p.name.startswith(".."))
    assert visible == ["added.txt", "greeting", "nested"]  # app.conf's link was removed
    assert await output(provider, pod) == b"seen v1\nseen v2\n"  # never anything in between

    io = FakeIO()
    command = [
        "sh",
        "-c",
        f"cat {etc}/added.txt; cat {single}; echo; test -e {etc}/app.conf || echo no-app-conf",
    ]
    assert await provider.exec_in_container(pod.ref, "app", command, io) == 0
    # A subPath mount of a file keeps the file it started with, as in the kubelet.
    assert bytes(io.out) == b"new file\nv1\nno-app-conf\n"

    # The same contents again: nothing is rewritten.
    await provider.update_volumes(pod.ref, PodVolumes(files=(changed,)))
    assert os.readlink(volume / "..data") == after
    with pytest.raises(NotFound):
        await provider.update_volumes(PodRef("default", "nope", "uid-unknown"), PodVolumes())


@needs_root
async def test_a_container_with_mounts_gets_exactly_the_environment_of_one_without(
    provider: ProcessProvider, tmp_path: Path
) -> None:
    # The trampoline is Python, whose start-up may add LC_CTYPE: the command must not see it.
    script = "env | sort; echo done; sleep 3600"
    env = [{"name": "LANG", "value": ""}, {"name": "ODD", "value": "a=b c"}]
    pod = make_pod(
        shell(script, env=env),
        shell(
            script,
            name="mounted",
            env=env,
            volumeMounts=[{"name": "scratch", "mountPath": str(tmp_path / "m")}],
        ),
    )
    await provider.create_pod(pod, PodVolumes(empty_dirs=(EmptyDirVolume("scratch"),)))
    plain = await output_with(provider, pod, b"done\n")
    mounted = await output_with(provider, pod, b"done\n", "mounted")
    assert b"ODD=a=b c\n" in plain and b"LC_CTYPE" not in plain
    assert mounted == plain


@needs_root
async def test_over_grpc_the_volumes_set_before_the_create_are_mounted(tmp_path: Path) -> None:
    provider = ProcessProvider(root_dir=tmp_path / "root", node_name="vk-0", max_grace_seconds=1.0)
    server = await start_server(provider, address="127.0.0.1:0", name="process", version="1")
    client = await connected(server.address)
    try:
        assert Capability.VOLUMES in client.capabilities()
        etc = tmp_path / "host" / "etc"
        pod = make_pod(
            shell(f"cat {etc}/greeting; sleep 3600", volumeMounts=[{"name": "config", "mountPath": str(etc)}])
        )
        # A configMap's binaryData key (issue 12): bytes that are not UTF-8 must arrive as they are.
        binary = b"\x89PNG\r\n\x1a\n\x00\xff\xfe\x80\xc3("
        plain = config_volume(b"over grpc\n")
        with_binary = FileVolume(
            plain.name, plain.kind, (*plain.files, VolumeFile("logo.png", binary, 0o444))
        )
        await client.set_pod_volumes(pod.ref, PodVolumes(files=(with_binary,)))
        await client.create_pod(pod)
        assert await output_with(provider, pod, b"\n") == b"over grpc\n"
        on_disk = volume_dir(provider, pod, "config") / "logo.png"
        assert on_disk.read_bytes() == binary and on_disk.stat().st_mode & 0o7777 == 0o444
        seen = FakeIO()
        assert await provider.exec_in_container(pod.ref, "app", ["cat", f"{etc}/logo.png"], seen) == 0
        assert bytes(seen.out) == binary
        await client.set_pod_volumes(pod.ref, PodVolumes(files=(config_volume(b"updated\n"),)))
        io = FakeIO()
        assert await provider.exec_in_container(pod.ref, "app", ["cat", f"{etc}/greeting"], io) == 0
        assert bytes(io.out) == b"updated\n"
    finally:
        await client.close()
        await server.stop(0)
        await provider.close()


# -- environment, refusals, cleanup ----------------------------------------------------------
async def test_the_api_server_replaces_the_service_link_address(
    provider: ProcessProvider, tmp_path: Path
) -> None:
    echo = 'echo "$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT"; sleep 3600'
    pod = make_pod(
        shell(echo),
        # What vkubelet's service links put there: the `kubernetes` Service's cluster address.
        shell(
            echo,
            name="own",
            env=[
                {"name": "KUBERNETES_SERVICE_HOST", "value": "10.0.0.1"},
                {"name": "KUBERNETES_SERVICE_PORT", "value": "443"},
            ],
        ),
    )
    await provider.create_pod(pod)
    assert await output_with(provider, pod, b"\n") == b"192.0.2.10:6443\n"
    assert await output_with(provider, pod, b"\n", "own") == b"192.0.2.10:6443\n"

    without = ProcessProvider(root_dir=tmp_path / "without", node_name="vk-0", max_grace_seconds=1.0)
    try:
        other = make_pod(shell(echo), uid="uid-without")
        await without.create_pod(other)
        assert await output_with(without, other, b"\n") == b":\n"  # no api_server, no variables
    finally:
        await without.close()


async def test_paths_that_leave_the_volume_are_refused_and_nothing_is_written(
    provider: ProcessProvider, tmp_path: Path
) -> None:
    pod = make_pod(shell("sleep 3600"))
    for path in ("../escape", "/abs", "a/../../b", "..data/x", ""):
        bad = PodVolumes(
            files=(FileVolume(name="config", kind="configMap", files=(VolumeFile(path, b"x"),)),)
        )
        with pytest.raises(InvalidInput):
            await provider.create_pod(pod, bad)
    with pytest.raises(InvalidInput):
        await provider.create_pod(pod, PodVolumes(empty_dirs=(EmptyDirVolume(name="../up"),)))
    assert not (provider._root / "pods").exists()
    with pytest.raises(NotFound):
        await provider.get_pod(pod.ref)

    await provider.create_pod(pod, PodVolumes(files=(config_volume(),)))
    volume = volume_dir(provider, pod, "config")

    async def written() -> bool:
        return (volume / "greeting").exists()

    await eventually(written, "the volume to be written")
    escape = PodVolumes(
        files=(FileVolume(name="config", kind="configMap", files=(VolumeFile("../x", b"x"),)),)
    )
    with pytest.raises(InvalidInput):
        await provider.update_volumes(pod.ref, escape)
    assert (volume / "greeting").read_bytes() == b"v1"
    assert not (volume.parent / "x").exists()


async def test_a_mount_of_a_volume_the_provider_was_not_given_says_so(
    provider: ProcessProvider, tmp_path: Path
) -> None:
    pod = make_pod(
        shell("sleep 3600", volumeMounts=[{"name": "data", "mountPath": str(tmp_path / "host" / "data")}]),
        shell("echo ran; sleep 3600", name="plain"),
    )
    await provider.create_pod(pod, PodVolumes(files=(config_volume(),)))
    waiting = container_status(await provider.get_pod_status(pod.ref))["state"]["waiting"]
    assert waiting["reason"] == "CreateContainerConfigError"
    assert "no volume 'data'" in waiting["message"]
    assert await output_with(provider, pod, b"ran\n", "plain") == b"ran\n"


_UNPRIVILEGED = textwrap.dedent(
    """
    import asyncio, json, sys
    from pathlib import Path
    from tests.integration.test_process_provider import make_pod, shell
    from vkubelet.adapters.process.provider import ProcessProvider
    from vkubelet.domain.volumes import FileVolume, PodVolumes, VolumeFile

    async def main():
        root, target = Path(sys.argv[1]), sys.argv[2]
        provider = ProcessProvider(root_dir=root, node_name="vk-0", max_grace_seconds=1.0)
        volumes = PodVolumes(files=(FileVolume("config", "configMap", (VolumeFile("a", b"x"),)),))
        mounted = shell("sleep 3600", volumeMounts=[{"name": "config", "mountPath": target}])
        pod = make_pod(mounted, shell("sleep 3600", name="plain"))
        bare = make_pod(shell("sleep 3600"), uid="uid-bare")
        await provider.create_pod(pod, volumes)
        await provider.create_pod(bare, volumes)
        loop = asyncio.get_running_loop()
        end = loop.time() + 10
        while loop.time() < end:
            pods = [await provider.get_pod_status(p.ref) for p in (pod, bare)]
            states = [{s["name"]: s["state"] for s in status["containerStatuses"]} for status in pods]
            if "running" in states[0]["plain"] and "running" in states[1]["app"]:
                break
            await asyncio.sleep(0.02)
        written = (root / "pods" / "uid-1" / "volumes" / "config" / "a").read_bytes().decode()
        await provider.close()
        print(json.dumps({"states": states, "written": written}))

    asyncio.run(main())
    """
)


async def test_without_the_mount_privilege_a_container_with_mounts_says_why(tmp_path: Path) -> None:
    # Root without CAP_SYS_ADMIN (a non-root run needs no help) cannot make mount namespaces.
    drop = [shutil.which("setpriv") or "setpriv", "--bounding-set", "-sys_admin", "--inh-caps", "-sys_admin"]
    prefix = drop if os.geteuid() == 0 else []
    root, target = tmp_path / "root", tmp_path / "host" / "etc"
    done = await asyncio.create_subprocess_exec(
        *prefix,
        sys.executable,
        "-c",
        _UNPRIVILEGED,
        str(root),
        str(target),
        cwd=CHECKOUT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(done.communicate(), 60)
    assert done.returncode == 0, err.decode()
    result = json.loads(out)
    states, bare = result["states"]
    waiting = states["app"]["waiting"]
    assert waiting["reason"] == "CreateContainerConfigError"
    assert "needs root" in waiting["message"] and "Operation not permitted" in waiting["message"]
    assert "running" in states["plain"]  # its sibling without mounts runs
    assert "running" in bare["app"]  # and so does a pod without mounts
    assert result["written"] == "x"  # the files are written all the same
    assert not target.exists()  # no mount point was made


@needs_root
def test_reap_orphans_unmounts_what_a_previous_provider_left(tmp_path: Path) -> None:
    leftover = tmp_path / "pods" / "old-uid" / "volumes" / "cache"
    leftover.mkdir(parents=True)
    nsexec.mount("tmpfs", str(leftover), "tmpfs", 0, "size=1m")
    try:
        (leftover / "data").write_text("left behind")
        assert mounts_below(tmp_path) == [str(leftover.resolve())]
        ProcessProvider(root_dir=tmp_path, node_name="vk-0").reap_orphans()
        assert mounts_below(tmp_path) == []
        assert not (tmp_path / "pods").exists()
    finally:
        if mounts_below(leftover):
            nsexec.umount(str(leftover), nsexec.MNT_DETACH)
