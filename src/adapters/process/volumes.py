"""A pod's volumes on this host, under ``<pod-dir>/volumes/<volume-name>/``.

File-backed volumes (configMap, secret, downwardAPI, projected) are written the way the
kubelet's AtomicWriter writes them::

    <volume>/..2025_01_31_12_00_00.123456789/<the files>   one timestamped dir per version
    <volume>/..data -> ..2025_01_31_12_00_00.123456789     swapped with rename(): atomic
    <volume>/<top-level name> -> ..data/<top-level name>   what a reader opens

An update writes a new timestamped dir, points a temporary ``..data_tmp`` at it and renames it
over ``..data`` (one atomic step: a reader resolving a path sees the old or the new version,
never a mix), then adds the new top-level links, removes those no longer in the volume and
removes the old dir. Contents equal to what is on disk are not rewritten. File modes are the
given ones (not subject to the umask); directories are 0755.

An emptyDir is a directory, mode 0777 as the kubelet makes it; with medium ``Memory`` and the
privilege to mount, a tmpfs of ``size_limit`` (no limit given: the tmpfs default, half of RAM).
Where it cannot mount, the directory stays on disk and a note says so.

The mounts into containers are planned here too (:func:`parse_mounts` when the pod is created,
:func:`bind_mounts` before each start): a ``subPath`` is resolved on this host, symlinks
included, and must stay inside its volume; a missing one is created in an emptyDir (as the
kubelet does) and refused in a file-backed volume. File-backed volumes are always mounted
read-only, as the kubelet mounts them.

Nothing here writes outside the volume directory: volume names and file paths are checked again
(absolute paths, ``..``, names the writer uses itself) even though the domain checked them.
"""

from __future__ import annotations

import errno
import logging
import os
import posixpath
import shutil
import stat
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from vkubelet.adapters.process import nsexec
from vkubelet.adapters.process.spawn import BindMount
from vkubelet.domain.env import expand
from vkubelet.domain.errors import InvalidInput
from vkubelet.domain.quantity import ceil_value, parse_quantity
from vkubelet.domain.volumes import EmptyDirVolume, FileVolume, PodVolumes, VolumeFile

log = logging.getLogger(__name__)

DATA_LINK = "..data"
_DATA_TMP = "..data_tmp"
_LINK_TMP = "..link_tmp"
_DIR_MODE = 0o755
_EMPTY_DIR_MODE = 0o777
MEMORY = "Memory"
_MEDIA = ("", MEMORY)


# -- checks ----------------------------------------------------------------------------------
def check_volumes(volumes: PodVolumes) -> None:
    """Raise InvalidInput unless every name and path stays inside its volume directory."""
    names: set[str] = set()
    for name in [v.name for v in volumes.files] + [v.name for v in volumes.empty_dirs]:
        _check_name(name)
        if name in names:
            raise InvalidInput(f"volume {name!r} is given twice")
        names.add(name)
    for volume in volumes.files:
        _payload(volume)
    for empty in volumes.empty_dirs:
        if empty.size_limit:
            _size_bytes(empty)


def _check_name(name: str) -> None:
    if not name or "/" in name or "\0" in name or name.startswith("."):
        raise InvalidInput(f"volume name {name!r} cannot be a directory name")


def _parts(path: str, *, what: str) -> tuple[str, ...]:
    if not path or path.startswith("/") or "\0" in path:
        raise InvalidInput(f"{what} {path!r} must be a relative path")
    parts = tuple(path.split("/"))
    if any(part in ("", ".", "..") for part in parts):
        raise InvalidInput(f"{what} {path!r} must not contain '..', '.' or empty elements")
    return parts


def _payload(volume: FileVolume) -> dict[tuple[str, ...], VolumeFile]:
    payload: dict[tuple[str, ...], VolumeFile] = {}
    for file in volume.files:
        what = f"file of volume {volume.name!r}"
        parts = _parts(file.path, what=what)
        if parts[0].startswith(".."):
            raise InvalidInput(f"{what} {file.path!r} must not start with '..'")
        if not 0 <= file.mode <= 0o7777:
            raise InvalidInput(f"{what} {file.path!r}: mode {file.mode:o} is not a file mode")
        if parts in payload:
            raise InvalidInput(f"{what} {file.path!r} is given twice")
        payload[parts] = file
    for parts in payload:
        for depth in range(1, len(parts)):
            if parts[:depth] in payload:
                raise InvalidInput(
                    f"volume {volume.name!r}: {'/'.join(parts[:depth])!r} is a file and a directory"
                )
    return payload


def _size_bytes(volume: EmptyDirVolume) -> int:
    try:
        return max(0, ceil_value(parse_quantity(volume.size_limit or "0")))
    except (InvalidInput, ValueError) as error:
        raise InvalidInput(f"emptyDir {volume.name!r}: size limit {volume.size_limit!r}: {error}") from error


# -- writing ---------------------------------------------------------------------------------
def materialise(root: Path, volumes: PodVolumes, *, moment: datetime, mount_tmpfs: bool) -> dict[str, str]:
    """Bring every volume under ``root`` up to ``volumes`` (checked by :func:`check_volumes`).

    Returns the volumes that could not be set up, with why; the others are done. Idempotent.
    """
    failed: dict[str, str] = {}
    root.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
    for volume in volumes.files:
        try:
            write_atomically(root / volume.name, volume, moment=moment)
        except OSError as error:
            failed[volume.name] = f"writing volume {volume.name!r}: {error}"
    for empty in volumes.empty_dirs:
        try:
            _empty_dir(root / empty.name, empty, mount_tmpfs=mount_tmpfs)
        except OSError as error:
            failed[empty.name] = f"emptyDir {empty.name!r}: {error}"
    return failed


def write_atomically(directory: Path, volume: FileVolume, *, moment: datetime) -> bool:
    """Write ``volume``'s files into ``directory`` as described above; False when they were
    already there."""
    payload = _payload(volume)
    directory.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
    data_link = directory / DATA_LINK
    current = os.readlink(data_link) if data_link.is_symlink() else None
    top = sorted({parts[0] for parts in payload})
    if current is not None and _holds(directory / current, payload):
        _link_visible(directory, top)
        return False
    version = Path(tempfile.mkdtemp(prefix=f"..{moment:%Y_%m_%d_%H_%M_%S}.", dir=directory))
    try:
        version.chmod(_DIR_MODE)
        for parts, file in sorted(payload.items()):
            _write_file(version, parts, file)
        temporary = directory / _DATA_TMP
        if os.path.lexists(temporary):
            temporary.unlink()
        temporary.symlink_to(version.name)
        temporary.rename(data_link)  # the swap: atomic
    except BaseException:
        shutil.rmtree(version, ignore_errors=True)
        raise
    _link_visible(directory, top)
    for entry in os.scandir(directory):
        if entry.name.startswith(".."):
            if entry.name not in (DATA_LINK, version.name) and entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)  # the old version (and any left over)
        elif entry.name not in top and entry.is_symlink():
            os.unlink(entry.path)  # no longer in the volume
    return True


def _write_file(version: Path, parts: tuple[str, ...], file: VolumeFile) -> None:
    parent = version
    for part in parts[:-1]:
        parent = parent / part
        if not parent.is_dir():
            parent.mkdir()
            parent.chmod(_DIR_MODE)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(parent / parts[-1], flags, 0o600)
    try:
        view = memoryview(file.data)
        while view:
            view = view[os.write(fd, view) :]
        os.fchmod(fd, file.mode)
    finally:
        os.close(fd)


def _holds(version: Path, payload: Mapping[tuple[str, ...], VolumeFile]) -> bool:
    """Whether the version dir holds exactly ``payload`` (same files, bytes and modes)."""
    found: dict[tuple[str, ...], tuple[int, bytes]] = {}
    try:
        for parent, dirs, files in os.walk(version, onerror=_raise):
            base = Path(parent).relative_to(version).parts
            for name in dirs:
                if Path(parent, name).is_symlink():
                    return False
            for name in files:
                path = Path(parent, name)
                info = path.lstat()
                if not stat.S_ISREG(info.st_mode):
                    return False
                found[(*base, name)] = (stat.S_IMODE(info.st_mode), path.read_bytes())
    except OSError:
        return False
    wanted = {parts: (file.mode, file.data) for parts, file in payload.items()}
    return found == wanted


def _raise(error: OSError) -> None:
    raise error


def _link_visible(directory: Path, names: Iterable[str]) -> None:
    for name in names:
        link = directory / name
        wanted = f"{DATA_LINK}/{name}"
        if link.is_symlink() and os.readlink(link) == wanted:
            continue
        if link.is_dir() and not link.is_symlink():
            shutil.rmtree(link)
        temporary = directory / _LINK_TMP
        if os.path.lexists(temporary):
            temporary.unlink()
        temporary.symlink_to(wanted)
        temporary.rename(link)


def _empty_dir(directory: Path, volume: EmptyDirVolume, *, mount_tmpfs: bool) -> None:
    if volume.medium not in _MEDIA:
        raise OSError(errno.EINVAL, f"medium {volume.medium!r} is not supported (only disk and Memory)")
    if directory.is_dir():
        return  # already set up: its contents are the pod's
    directory.mkdir(parents=True)
    directory.chmod(_EMPTY_DIR_MODE)
    if volume.medium != MEMORY:
        return
    if not mount_tmpfs:
        log.warning(
            "process: emptyDir %s (medium Memory) is a directory on disk: no mount privilege", directory
        )
        return
    size = _size_bytes(volume)
    options = f"mode={_EMPTY_DIR_MODE:o}" + (f",size={size}" if size else "")
    try:
        nsexec.mount("tmpfs", str(directory), "tmpfs", nsexec.MS_NOSUID | nsexec.MS_NODEV, options)
    except OSError as error:
        log.warning("process: emptyDir %s (medium Memory) is a directory on disk: %s", directory, error)


# -- mounts into containers ------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class VolumeMount:
    """One of a container's ``volumeMounts``, checked: ``sub_path`` is () for the whole volume."""

    volume: str
    target: str
    sub_path: tuple[str, ...]
    read_only: bool


def parse_mounts(
    spec: Mapping[str, Any], *, env: Mapping[str, str], volumes: PodVolumes
) -> tuple[tuple[VolumeMount, ...], str]:
    """The container's mounts, parents first; or () and why they cannot be made."""
    file_backed = {volume.name for volume in volumes.files}
    known = file_backed | {volume.name for volume in volumes.empty_dirs}
    mounts = []
    for index, raw in enumerate(spec.get("volumeMounts") or ()):
        if not isinstance(raw, Mapping):
            return (), f"volumeMounts[{index}] is not an object"
        name = str(raw.get("name") or "")
        path = str(raw.get("mountPath") or "")
        label = f"volumeMounts[{index}] ({name!r} at {path!r})"
        if name not in known:
            return (), (
                f"{label}: the process provider was given no volume {name!r}; it can mount "
                "configMap, secret, downwardAPI, projected and emptyDir volumes"
            )
        if not path.startswith("/"):
            return (), f"{label}: mountPath must be an absolute path"
        target = "/" + posixpath.normpath(path).lstrip("/")
        if target == "/":
            return (), f"{label}: cannot mount over /"
        sub_path, sub_path_expr = str(raw.get("subPath") or ""), str(raw.get("subPathExpr") or "")
        if sub_path and sub_path_expr:
            return (), f"{label}: subPath and subPathExpr are mutually exclusive"
        if sub_path_expr:
            sub_path = expand(sub_path_expr, env.get)
        if sub_path.startswith("/") or ".." in sub_path.split("/") or "\0" in sub_path:
            return (), f"{label}: subPath {sub_path!r} must be a relative path without '..'"
        parts = tuple(part for part in sub_path.split("/") if part not in ("", "."))
        read_only = bool(raw.get("readOnly")) or name in file_backed
        mounts.append(VolumeMount(volume=name, target=target, sub_path=parts, read_only=read_only))
    mounts.sort(key=lambda mount: len(Path(mount.target).parts))  # stable: parents first
    return tuple(mounts), ""


def bind_mounts(mounts: Sequence[VolumeMount], *, root: Path, volumes: PodVolumes) -> list[BindMount]:
    """Where each mount comes from on this host, resolved now (before a start). A subPath
    missing from an emptyDir is created; OSError when one cannot be used."""
    empty_dirs = {volume.name for volume in volumes.empty_dirs}
    binds = []
    for mount in mounts:
        directory = root / mount.volume
        if not directory.is_dir():
            raise OSError(errno.ENOENT, f"volume {mount.volume!r} is not set up")
        source = _inside(directory, mount, create=mount.volume in empty_dirs) if mount.sub_path else directory
        binds.append(BindMount(source=source, target=mount.target, read_only=mount.read_only))
    return binds


def _inside(directory: Path, mount: VolumeMount, *, create: bool) -> Path:
    """The resolved subPath; every step (symlinks followed) stays inside the volume."""
    base = directory.resolve()
    current = base
    for part in mount.sub_path:
        step = current / part
        if not os.path.lexists(step):
            if not create:
                raise OSError(
                    errno.ENOENT,
                    f"subPath {'/'.join(mount.sub_path)!r} does not exist in volume {mount.volume!r}",
                )
            step.mkdir()
            step.chmod(stat.S_IMODE(base.stat().st_mode))
        step = step.resolve()
        if step != base and base not in step.parents:
            raise OSError(
                errno.EACCES, f"subPath {'/'.join(mount.sub_path)!r} leaves volume {mount.volume!r}"
            )
        current = step
    return current


# -- removal ---------------------------------------------------------------------------------
def mounts_below(path: Path) -> list[str]:
    """Mount points of this process's namespace at or below ``path``."""
    top = os.path.realpath(path)
    found = []
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        fields = line.split(" ")
        if len(fields) < 5:
            continue
        point = _unescape(fields[4])
        if point == top or point.startswith(top.rstrip("/") + "/"):
            found.append(point)
    return found


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo
    out, index = [], 0
    while index < len(field):
        if field[index] == "\\" and field[index + 1 : index + 4].isdigit() and index + 4 <= len(field):
            out.append(chr(int(field[index + 1 : index + 4], 8)))
            index += 4
        else:
            out.append(field[index])
            index += 1
    return "".join(out)


def remove_directory(path: Path) -> bool:
    """Unmount everything at or below ``path`` (deepest first), then remove it. When a mount
    stays (no privilege), nothing is removed, so nothing is deleted through a mount; False."""
    for point in sorted(mounts_below(path), key=len, reverse=True):
        try:
            nsexec.umount(point, nsexec.MNT_DETACH)
        except OSError as error:
            log.warning("process: cannot unmount %s: %s", point, error)
    left = mounts_below(path)
    if left:
        log.error("process: not removing %s: still mounted there: %s", path, ", ".join(left))
        return False
    shutil.rmtree(path, ignore_errors=True)
    return True
