"""sharing_unchanged: an equal spec is held once across the copies of one pod."""

from __future__ import annotations

from typing import Any

from vkubelet.domain.pod import Pod, sharing_unchanged


def pod(uid: str = "u1", *, version: str = "1", image: str = "app:1") -> Pod:
    manifest: dict[str, Any] = {
        "metadata": {"namespace": "ns", "name": "web", "uid": uid, "resourceVersion": version},
        "spec": {"containers": [{"name": "app", "image": image}]},
        "status": {"phase": "Running" if version != "1" else "Pending"},
    }
    return Pod.from_manifest(manifest)


def test_an_equal_spec_is_taken_from_the_previous_copy() -> None:
    previous, new = pod(version="1"), pod(version="2")
    shared = sharing_unchanged(new, previous)
    assert shared.manifest["spec"] is previous.manifest["spec"]
    assert shared.manifest == new.manifest  # same content: metadata and status are the new ones
    assert shared.ref == new.ref
    assert new.manifest["spec"] is not previous.manifest["spec"]  # the input is left alone


def test_a_changed_spec_is_kept() -> None:
    previous, new = pod(version="1"), pod(version="2", image="app:2")
    assert sharing_unchanged(new, previous) is new


def test_nothing_is_shared_with_another_incarnation_or_without_a_previous_copy() -> None:
    new = pod(version="2")
    assert sharing_unchanged(new, pod("u2", version="1")) is new
    assert sharing_unchanged(new, None) is new
