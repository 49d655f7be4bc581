"""Issue 13 end to end: `kubectl cp` to and from a process-provider pod.

kubectl cp is an exec of `tar` in the container (tar reads stdin on the way in, writes stdout on
the way out), so it rides the same exec stream as `kubectl exec`. The pod is scheduled (no
nodeName) and carries its ServiceAccount token volume; the bytes are compared by sha256 and
byte for byte.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.pods import namespace_with_ready_pod
from tests.e2e.vkubelet_process import VkubeletProcess, process_provider_daemon

NODE = "vk-e2e-cp"
POD = "box"


daemon = process_provider_daemon(NODE, {"cpu": "2", "memory": "4Gi", "pods": "10"})


@pytest.fixture
def namespace(control_plane: Any, daemon: VkubeletProcess) -> Iterator[str]:
    with namespace_with_ready_pod(control_plane, prefix="cp", node=NODE, pod=POD) as name:
        yield name


def exec_in(control_plane: Any, namespace: str, script: str) -> str:
    return str(control_plane.kubectl("exec", "-n", namespace, POD, "--", "sh", "-c", script).stdout)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_a_nested_directory_copied_in_arrives_byte_for_byte(
    control_plane: Any, namespace: str, tmp_path: Path
) -> None:
    source = tmp_path / "payload"
    (source / "deep" / "er").mkdir(parents=True)
    files = {
        "top.bin": os.urandom(4096),
        "deep/mid.bin": os.urandom(3000),
        "deep/er/leaf.bin": os.urandom(7777),
    }
    for relative, data in files.items():
        (source / relative).write_bytes(data)
    target = f"/tmp/vk-e2e-cp-{uuid.uuid4().hex[:8]}"
    exec_in(control_plane, namespace, f"mkdir -p {target}")

    control_plane.kubectl("cp", str(source), f"{namespace}/{POD}:{target}/payload")

    for relative, data in files.items():
        summed = exec_in(control_plane, namespace, f"sha256sum {target}/payload/{relative}")
        assert summed.split()[0] == sha256(data), relative
    listing = exec_in(control_plane, namespace, f"cd {target}/payload && find . -type f | sort").split()
    assert listing == sorted(f"./{relative}" for relative in files)


def test_a_file_made_in_the_pod_copies_out_byte_for_byte(
    control_plane: Any, namespace: str, tmp_path: Path
) -> None:
    made = f"/tmp/vk-e2e-cp-{uuid.uuid4().hex[:8]}.bin"
    exec_in(control_plane, namespace, f"head -c 5000 /dev/urandom > {made}")
    in_pod = exec_in(control_plane, namespace, f"sha256sum {made}").split()[0]

    local = tmp_path / "out.bin"
    control_plane.kubectl("cp", f"{namespace}/{POD}:{made}", str(local))

    data = local.read_bytes()
    assert len(data) == 5000
    assert sha256(data) == in_pod
    # And back in again under a new name: the round trip keeps every byte.
    control_plane.kubectl("cp", str(local), f"{namespace}/{POD}:{made}.back")
    assert exec_in(control_plane, namespace, f"cmp {made} {made}.back && echo same") == "same\n"
