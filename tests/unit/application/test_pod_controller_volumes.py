"""Issue 12 in the sync core: a provider with the VOLUMES capability gets every pod's resolved
volumes before the create and again when they change; a missing mandatory source is a
FailedMount event and a retry, not a started pod. Fake clock, hand-written fakes."""

from __future__ import annotations

from typing import Any

import pytest
from tests.fakes.cluster import FakeTokenIssuer
from tests.fakes.provider import FakeProvider
from tests.unit.application.test_pod_controller import NS, Harness

from vkubelet.application.pod_controller import PodController, PodControllerSettings
from vkubelet.application.volumes import VolumeResolver
from vkubelet.domain.backoff import Backoff
from vkubelet.domain.errors import InvalidInput, Transient
from vkubelet.domain.pod import Pod
from vkubelet.domain.volumes import PodVolumes

REFRESH = 5.0

# What the ServiceAccount admission plugin adds to every pod (expirationSeconds 3607).
KUBE_API_ACCESS = {
    "name": "kube-api-access-abcde",
    "projected": {
        "defaultMode": 0o644,
        "sources": [
            {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
            {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
            {
                "downwardAPI": {
                    "items": [
                        {
                            "path": "namespace",
                            "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"},
                        }
                    ]
                }
            },
        ],
    },
}


def volume_pod(name: str, *volumes: dict[str, Any]) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "serviceAccountName": "app",
            "containers": [{"name": "c", "image": "nginx", "command": ["sleep", "1"]}],
            "volumes": list(volumes),
        },
    }


class VolumeHarness(Harness):
    def __init__(self, *, takes_volumes: bool = True, native_kinds: frozenset[str] = frozenset()) -> None:
        super().__init__(streaming=True)
        self.provider = FakeProvider(streaming=True, volumes=takes_volumes, native_volume_kinds=native_kinds)
        self.tokens = FakeTokenIssuer(self.clock)
        self.configs.config_maps[(NS, "kube-root-ca.crt")] = {"ca.crt": "-----BEGIN CERTIFICATE-----\n"}
        environment = self.controller._environment
        self.controller = PodController(
            pods=self.pods,
            provider=self.provider,
            environment=environment,
            events=self.events,
            clock=self.clock,
            settings=PodControllerSettings(
                node_name="vk-node",
                workers=4,
                backoff=Backoff(base=0.05, cap=5),
                volume_refresh_period=REFRESH,
            ),
            volumes=VolumeResolver(
                configs=self.configs, tokens=self.tokens, provider=self.provider, clock=self.clock
            ),
        )

    def files(self, pod: Pod, volume: str) -> dict[str, bytes]:
        volumes: PodVolumes = self.provider.volumes[pod.ref.uid]
        (found,) = [v for v in volumes.files if v.name == volume]
        return {f.path: f.data for f in found.files}

    def reasons(self, pod: Pod) -> list[str]:
        return self.events.reasons_for(pod.ref.uid)


@pytest.fixture
async def harness() -> Any:
    h = VolumeHarness()
    await h.start()
    yield h
    await h.stop()


async def test_volumes_reach_the_provider_before_the_create(harness: VolumeHarness) -> None:
    harness.configs.config_maps[(NS, "app-config")] = {"app.yaml": "debug: true"}
    pod = harness.pods.create(
        volume_pod("web", {"name": "cfg", "configMap": {"name": "app-config"}}, KUBE_API_ACCESS)
    )
    await harness.eventually(lambda: harness.creates_of(pod.ref.uid) == 1, what="created")
    assert harness.provider.calls["set_pod_volumes"] == 1
    assert harness.files(pod, "cfg") == {"app.yaml": b"debug: true"}
    access = harness.files(pod, "kube-api-access-abcde")
    assert access["token"] == b"token-1-web"
    assert access["ca.crt"].startswith(b"-----BEGIN CERTIFICATE-----")
    assert access["namespace"] == NS.encode()
    ((ref, service_account, audiences, expiration),) = harness.tokens.issued
    assert (ref.uid, service_account, audiences, expiration) == (pod.ref.uid, "app", (), 3607)


async def test_a_missing_mandatory_config_map_is_a_failed_mount_until_it_appears(
    harness: VolumeHarness,
) -> None:
    pod = harness.pods.create(volume_pod("waits", {"name": "cfg", "configMap": {"name": "later"}}))
    await harness.eventually(lambda: "FailedMount" in harness.reasons(pod), what="FailedMount event")
    await harness.advance(10)
    assert harness.creates_of(pod.ref.uid) == 0  # never started without its volume
    message = next(e.message for e in harness.events.events if e.reason == "FailedMount")
    assert 'configmap "later" not found' in message and '"cfg"' in message

    harness.configs.config_maps[(NS, "later")] = {"k": "v"}
    await harness.eventually(
        lambda: harness.creates_of(pod.ref.uid) == 1, within=120, what="created once it exists"
    )
    assert harness.files(pod, "cfg") == {"k": b"v"}


async def test_an_optional_missing_config_map_mounts_nothing_and_starts(harness: VolumeHarness) -> None:
    pod = harness.pods.create(
        volume_pod("opt", {"name": "cfg", "configMap": {"name": "absent", "optional": True}})
    )
    await harness.eventually(lambda: harness.creates_of(pod.ref.uid) == 1, what="created")
    assert harness.files(pod, "cfg") == {}
    assert "FailedMount" not in harness.reasons(pod)


async def test_an_edited_config_map_is_sent_again_and_an_unchanged_one_is_not(harness: VolumeHarness) -> None:
    harness.configs.config_maps[(NS, "app-config")] = {"level": "info"}
    pod = harness.pods.create(volume_pod("web", {"name": "cfg", "configMap": {"name": "app-config"}}))
    await harness.eventually(lambda: harness.creates_of(pod.ref.uid) == 1, what="created")
    await harness.advance(3 * REFRESH)
    assert harness.provider.calls["set_pod_volumes"] == 1  # nothing changed: nothing sent

    harness.configs.config_maps[(NS, "app-config")] = {"level": "debug"}
    await harness.eventually(
        lambda: harness.files(pod, "cfg") == {"level": b"debug"}, within=REFRESH + 1, what="new contents"
    )
    assert harness.provider.calls["set_pod_volumes"] == 2
    assert harness.creates_of(pod.ref.uid) == 1  # the pod was not recreated


async def test_tokens_are_refreshed_at_eighty_percent_of_their_lifetime(harness: VolumeHarness) -> None:
    harness.tokens.lifetime = 1000.0
    pod = harness.pods.create(volume_pod("web", KUBE_API_ACCESS))
    await harness.eventually(lambda: harness.creates_of(pod.ref.uid) == 1, what="created")
    await harness.advance(790, step=REFRESH)
    assert len(harness.tokens.issued) == 1  # checked every 5 s, but not yet due
    await harness.eventually(lambda: len(harness.tokens.issued) == 2, within=20, step=REFRESH)
    await harness.eventually(
        lambda: harness.files(pod, "kube-api-access-abcde")["token"] == b"token-2-web", what="new token sent"
    )


async def test_a_provider_without_the_capability_gets_no_volumes() -> None:
    h = VolumeHarness(takes_volumes=False)
    await h.start()
    try:
        pod = h.pods.create(
            volume_pod("web", {"name": "cfg", "configMap": {"name": "absent"}}, KUBE_API_ACCESS)
        )
        await h.eventually(lambda: h.creates_of(pod.ref.uid) == 1, what="created without volumes")
        assert h.tokens.issued == [] and h.provider.volumes == {}
        assert "FailedMount" not in h.reasons(pod)
    finally:
        await h.stop()


def unsupported(h: VolumeHarness, pod: Pod) -> list[str]:
    return [e.message for e in h.events.for_uid(pod.ref.uid) if e.reason == "UnsupportedVolume"]


async def test_without_the_capability_each_non_native_volume_is_one_warning_before_the_create() -> None:
    h = VolumeHarness(takes_volumes=False, native_kinds=frozenset({"persistentVolumeClaim"}))
    h.provider.inject_failure("create_pod", Transient("provider busy"))  # the create is retried
    await h.start()
    try:
        pod = h.pods.create(
            volume_pod(
                "web",
                {"name": "cfg", "configMap": {"name": "absent"}},
                KUBE_API_ACCESS,
                {"name": "data", "persistentVolumeClaim": {"claimName": "pvc"}},
            )
        )
        await h.eventually(lambda: h.creates_of(pod.ref.uid) == 1, what="created without volumes")
        await h.advance(10)  # more syncs, and the periodic reconcile
        assert unsupported(h, pod) == [
            'volume "cfg" of kind configMap is not mounted: '
            "the provider does not take volume contents (no volumes capability)",
            'volume "kube-api-access-abcde" of kind projected is not mounted: '
            "the provider does not take volume contents (no volumes capability)",
        ]
        reasons = h.reasons(pod)
        assert reasons.index("UnsupportedVolume") < reasons.index("ProviderCreateFailed")
        assert all(
            e.type == "Warning" for e in h.events.for_uid(pod.ref.uid) if e.reason == "UnsupportedVolume"
        )
        assert h.provider.calls["create_pod"] == 2 and h.tokens.issued == []
    finally:
        await h.stop()


async def test_without_the_capability_native_volumes_get_no_event() -> None:
    h = VolumeHarness(takes_volumes=False, native_kinds=frozenset({"persistentVolumeClaim", "emptyDir"}))
    await h.start()
    try:
        pod = h.pods.create(
            volume_pod(
                "native",
                {"name": "data", "persistentVolumeClaim": {"claimName": "pvc"}},
                {"name": "scratch", "emptyDir": {}},
            )
        )
        await h.eventually(lambda: h.creates_of(pod.ref.uid) == 1, what="created")
        assert unsupported(h, pod) == []
    finally:
        await h.stop()


async def test_native_kinds_are_not_warned_about_and_other_unsupported_kinds_are() -> None:
    h = VolumeHarness(native_kinds=frozenset({"hostPath"}))
    await h.start()
    try:
        pod = h.pods.create(
            volume_pod(
                "mixed",
                {"name": "host", "hostPath": {"path": "/var/log"}},
                {"name": "disk", "csi": {"driver": "x"}},
                {"name": "scratch", "emptyDir": {}},
            )
        )
        await h.eventually(lambda: h.creates_of(pod.ref.uid) == 1, what="created")
        assert unsupported(h, pod) == ['volume "disk" of kind csi cannot be handed to the provider']
        assert [v.name for v in h.provider.volumes[pod.ref.uid].empty_dirs] == ["scratch"]
        checks = h.provider.calls["set_pod_volumes"]
        await h.advance(REFRESH * 3)  # periodic checks of unchanged contents: nothing new to say
        assert unsupported(h, pod) == ['volume "disk" of kind csi cannot be handed to the provider']
        assert h.provider.calls["set_pod_volumes"] == checks
    finally:
        await h.stop()


async def test_a_refresh_batch_rotates_through_the_pods() -> None:
    h = VolumeHarness()
    h.controller._settings = PodControllerSettings(
        node_name="vk-node", workers=4, backoff=Backoff(base=0.05, cap=5), volume_refresh_period=REFRESH,
        volume_refresh_batch=1,
    )  # fmt: skip
    await h.start()
    try:
        pods = []
        for index in range(3):
            h.configs.config_maps[(NS, f"cfg-{index}")] = {"v": "1"}
            pods.append(
                h.pods.create(volume_pod(f"p{index}", {"name": "cfg", "configMap": {"name": f"cfg-{index}"}}))
            )
        await h.eventually(lambda: all(h.creates_of(p.ref.uid) == 1 for p in pods), what="all created")
        for index in range(3):
            h.configs.config_maps[(NS, f"cfg-{index}")] = {"v": "2"}

        def updated() -> int:
            return sum(h.files(p, "cfg") == {"v": b"2"} for p in pods)

        await h.advance(REFRESH + 0.5)
        assert updated() == 1  # one pod per period
        await h.eventually(lambda: updated() == 3, within=3 * REFRESH + 1, what="every pod checked in turn")
    finally:
        await h.stop()


# -- binaryData --------------------------------------------------------------------------------

PNG = b"\x89PNG\r\n\x1a\n\x00\xff"  # not UTF-8


def bare_pod(*volumes: dict[str, Any]) -> Pod:
    """A pod for the resolver alone (no controller, no API)."""
    manifest = volume_pod("web", *volumes)
    manifest["metadata"]["uid"] = "uid-web"
    return Pod.from_manifest(manifest)


async def test_config_map_binary_data_reaches_the_provider_byte_exact_and_env_sees_only_data(
    harness: VolumeHarness,
) -> None:
    harness.configs.add_config_map(NS, "assets", {"mode": "prod"}, binary_data={"logo.png": PNG})
    manifest = volume_pod(
        "web",
        {"name": "all", "configMap": {"name": "assets"}},
        {"name": "one", "configMap": {"name": "assets", "items": [{"key": "logo.png", "path": "l.png"}]}},
        {"name": "proj", "projected": {"sources": [{"configMap": {"name": "assets"}}]}},
    )
    manifest["spec"]["containers"][0]["envFrom"] = [{"configMapRef": {"name": "assets"}}]
    pod = harness.pods.create(manifest)
    await harness.eventually(lambda: harness.creates_of(pod.ref.uid) == 1, what="created")
    assert harness.files(pod, "all") == {"mode": b"prod", "logo.png": PNG}
    assert harness.files(pod, "one") == {"l.png": PNG}
    assert harness.files(pod, "proj") == {"mode": b"prod", "logo.png": PNG}
    env = harness.provider.pods[pod.ref.uid].containers[0]["env"]
    assert {"name": "mode", "value": "prod"} in env
    assert not any(var["name"] == "logo.png" for var in env)  # the kubelet's env reads data only


async def test_the_resolver_reads_config_maps_through_the_files_view_once_each() -> None:
    h = VolumeHarness()
    h.configs.add_config_map(NS, "assets", {"mode": "prod"}, binary_data={"logo.png": PNG})
    resolver = VolumeResolver(configs=h.configs, tokens=h.tokens, provider=h.provider, clock=h.clock)
    pod = bare_pod(
        {"name": "a", "configMap": {"name": "assets"}},
        {"name": "b", "projected": {"sources": [{"configMap": {"name": "assets"}}]}},
    )
    resolution = await resolver.resolve(pod)
    assert resolution.volumes is not None, resolution.failure
    assert {v.name: {f.path: f.data for f in v.files} for v in resolution.volumes.files} == {
        "a": {"mode": b"prod", "logo.png": PNG},
        "b": {"mode": b"prod", "logo.png": PNG},
    }
    assert [call.args for call in h.configs.calls_to("get_config_map_files")] == [
        {"namespace": NS, "name": "assets", "fresh": False}
    ]
    assert h.configs.calls_to("get_config_map") == []


async def test_a_bad_binary_data_value_is_a_failed_mount_naming_the_key() -> None:
    h = VolumeHarness()
    h.configs.add_config_map(NS, "assets", {})
    # What the adapter raises for binaryData that is not base64.
    bad = InvalidInput(f"configmap {NS}/assets: binaryData['logo.png'] is not valid base64")
    h.configs.inject_failure("get_config_map_files", bad, times=None, name="assets")
    resolver = VolumeResolver(configs=h.configs, tokens=h.tokens, provider=h.provider, clock=h.clock)
    pod = bare_pod({"name": "a", "configMap": {"name": "assets", "optional": True}})
    resolution = await resolver.resolve(pod)
    assert resolution.failure is not None and resolution.failure.reason == "FailedMount"
    assert "binaryData['logo.png'] is not valid base64" in resolution.failure.message
