"""A new pod reads its ConfigMaps and Secrets past the config cache, as the kubelet reads the
objects of a pod it registers; the periodic volume check of running pods still uses the cache.
The fake config source serves stale answers within its TTL, as the adapter's cache may."""

from __future__ import annotations

from typing import Any

from tests.fakes.cluster import Call
from tests.unit.application.test_pod_controller import NS
from tests.unit.application.test_pod_controller_volumes import REFRESH, VolumeHarness, volume_pod

TTL = 30.0  # longer than a few refresh periods, so the checks below all fall within it


def replica(name: str) -> dict[str, Any]:
    """A StatefulSet-like replica: the configmap as a volume and as env, a secret as env."""
    manifest = volume_pod(name, {"name": "cfg", "configMap": {"name": "app"}})
    manifest["spec"]["containers"][0]["envFrom"] = [{"configMapRef": {"name": "app"}}]
    manifest["spec"]["containers"][0]["env"] = [
        {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "pw"}}}
    ]
    return manifest


def reads_of(calls: list[Call], name: str) -> list[bool]:
    """The ``fresh`` argument of each read of ``name``, in order."""
    return [call.args["fresh"] for call in calls if call.args["name"] == name]


async def test_a_new_pod_gets_the_current_config_map_while_running_pods_use_the_cache() -> None:
    h = VolumeHarness()
    h.configs.clock, h.configs.ttl_seconds = h.clock, TTL
    h.configs.add_config_map(NS, "app", {"level": "info"})
    h.configs.add_secret(NS, "db", {"pw": "old"})
    await h.start()
    try:
        first = h.pods.create(replica("web-0"))
        await h.eventually(lambda: h.creates_of(first.ref.uid) == 1, what="web-0 created")
        assert h.files(first, "cfg") == {"level": b"info"}

        # The configmap and the secret are replaced; the cache still holds the old ones.
        h.configs.add_config_map(NS, "app", {"level": "debug"})
        h.configs.add_secret(NS, "db", {"pw": "new"})
        await h.advance(2 * REFRESH + 0.5)
        assert h.files(first, "cfg") == {"level": b"info"}  # the periodic checks honour the cache
        reads_so_far = reads_of(h.configs.calls_to("get_config_map_files"), "app")

        second = h.pods.create(replica("web-1"))
        await h.eventually(lambda: h.creates_of(second.ref.uid) == 1, what="web-1 created")
        assert h.files(second, "cfg") == {"level": b"debug"}
        env = h.provider.pods[second.ref.uid].containers[0]["env"]
        assert {"name": "level", "value": "debug"} in env
        assert {"name": "PASSWORD", "value": "new"} in env
        assert reads_so_far == [True, False, False]  # web-0's create, then two checks
        assert reads_of(h.configs.calls_to("get_config_map"), "app") == [True, True]
        assert reads_of(h.configs.calls_to("get_secret"), "db") == [True, True]

        # The new pod's reads refreshed the cache: the running pod's next check sees them.
        await h.eventually(
            lambda: h.files(first, "cfg") == {"level": b"debug"}, within=REFRESH + 1, what="web-0 updated"
        )
        assert h.creates_of(first.ref.uid) == 1
    finally:
        await h.stop()
