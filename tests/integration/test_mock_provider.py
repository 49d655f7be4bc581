"""The in-process mock provider: config, lifecycle, pod and node status streams, stats and
metrics."""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.clock import FakeClock
from tests.helpers import close_stream
from vkubelet.adapters.mock.provider import (
    CONTAINER_DELETED_REASON,
    POD_DELETED_REASON,
    MockProvider,
)
from vkubelet.adapters.node_config import MockConfigError, MockNodeConfig, load_mock_config
from vkubelet.adapters.system import host_architecture
from vkubelet.domain.errors import InvalidInput, NotFound, NotSupported, Permanent
from vkubelet.domain.pod import Pod, PodRef, format_time
from vkubelet.domain.provider import Capability, NodeAddress, NodeCondition, NodeTemplate, Taint
from vkubelet.domain.volumes import EmptyDirVolume, FileVolume, PodVolumes, VolumeFile


def make_pod(
    name: str = "web",
    *,
    namespace: str = "default",
    uid: str = "uid-1",
    containers: tuple[str, ...] = ("app",),
    init_containers: tuple[str, ...] = (),
    image: str = "nginx:1.27",
) -> Pod:
    spec: dict[str, Any] = {
        "nodeName": "vk-0",
        "containers": [{"name": c, "image": image} for c in containers],
    }
    if init_containers:
        spec["initContainers"] = [{"name": c, "image": "busybox"} for c in init_containers]
    return Pod.from_manifest(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"namespace": namespace, "name": name, "uid": uid, "labels": {"app": name}},
            "spec": spec,
            "status": {"phase": "Pending", "qosClass": "BestEffort"},
        }
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def provider(clock: FakeClock) -> MockProvider:
    return MockProvider(node_name="vk-0", internal_ip="192.0.2.10", clock=clock)


async def next_update(provider: MockProvider) -> Pod:
    stream = provider.pod_status_updates()
    return await asyncio.wait_for(anext(stream), timeout=1)


def write_config(tmp_path: Path, document: object) -> Path:
    path = tmp_path / "mock.json"
    path.write_text(json.dumps(document))
    return path


# -- config -------------------------------------------------------------------------------------
def test_config_file_without_the_node_names_it_and_the_keys_present(tmp_path: Path) -> None:
    path = write_config(tmp_path, {"vk-1": {"cpu": "2"}, "vk-2": {}})
    with pytest.raises(MockConfigError) as caught:
        load_mock_config(path, node_name="vk-0")
    message = str(caught.value)
    assert "'vk-0'" in message
    assert "'vk-1'" in message and "'vk-2'" in message
    assert str(path) in message


def test_no_config_path_gives_the_defaults() -> None:
    config = load_mock_config(None, node_name="vk-0")
    assert config.capacity == {"cpu": "20", "memory": "100Gi", "pods": "20"}
    assert config.architecture == host_architecture()
    assert config.operating_system == "linux"
    assert load_mock_config("", node_name="vk-0") == config


def test_upstream_config_with_absent_keys_takes_defaults(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        {
            "vk-0": {
                "cpu": "2",
                "others": {"nvidia.com/gpu": "1"},
                "providerID": "mock://vk-0",
                "labels": {"zone": "a"},
                "taints": [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}],
                "architecture": "arm64",
                "operatingSystem": "windows",
            }
        },
    )
    config = load_mock_config(path, node_name="vk-0")
    assert config.capacity == {"cpu": "2", "memory": "100Gi", "pods": "20", "nvidia.com/gpu": "1"}
    assert config.provider_id == "mock://vk-0"
    assert config.labels == {"zone": "a"}
    assert config.taints == (Taint("dedicated", "gpu", "NoSchedule"),)
    assert config.architecture == "arm64"
    assert config.operating_system == "windows"


@pytest.mark.parametrize("value", ["lots", "-2", "2Gb", "1.2.3"])
def test_invalid_quantity_names_the_key_and_value(tmp_path: Path, value: str) -> None:
    path = write_config(tmp_path, {"vk-0": {"memory": value}})
    with pytest.raises(MockConfigError) as caught:
        load_mock_config(path, node_name="vk-0")
    assert "memory" in str(caught.value) and value in str(caught.value)


@pytest.mark.parametrize("value", ["2", "500m", "32Gi", "1.5", "1e3", "128"])
def test_valid_quantities_are_accepted(value: str) -> None:
    from vkubelet.adapters.node_config import parse_mock_config

    assert parse_mock_config({"vk-0": {"cpu": value}}, node_name="vk-0").cpu == value


def test_unparsable_json_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text("{not json")
    with pytest.raises(MockConfigError, match=r"broken\.json"):
        load_mock_config(path, node_name="vk-0")


def test_bad_taint_effect_is_rejected(tmp_path: Path) -> None:
    path = write_config(tmp_path, {"vk-0": {"taints": [{"key": "k", "effect": "Sometimes"}]}})
    with pytest.raises(MockConfigError, match="Sometimes"):
        load_mock_config(path, node_name="vk-0")


async def test_node_template_comes_from_the_config() -> None:
    config = MockNodeConfig(
        cpu="4",
        memory="8Gi",
        pods="50",
        others={"example.com/fpga": "2"},
        provider_id="mock://x",
        labels={"zone": "a"},
        taints=(Taint("k", "v", "NoExecute"),),
        architecture="arm64",
        operating_system="linux",
    )
    provider = MockProvider(node_name="vk-0", config=config, internal_ip="192.0.2.10")
    template = await provider.node_template()
    assert template.capacity == {"cpu": "4", "memory": "8Gi", "pods": "50", "example.com/fpga": "2"}
    assert template.allocatable is None
    assert [(a.type, a.address) for a in template.addresses] == [("InternalIP", "192.0.2.10")]
    assert template.labels == {"zone": "a"}
    assert template.taints == (Taint("k", "v", "NoExecute"),)
    assert (template.architecture, template.operating_system, template.provider_id) == (
        "arm64",
        "linux",
        "mock://x",
    )
    assert template.conditions == ()
    await provider.ping()


def test_capabilities_exclude_container_streams(provider: MockProvider) -> None:
    assert provider.capabilities() == frozenset(
        {
            Capability.POD_STATUS_STREAM,
            Capability.NODE_STATUS_STREAM,
            Capability.STATS_SUMMARY,
            Capability.METRICS_RESOURCE,
            Capability.KILL_CONTAINER,
        }
    )


# -- the node status stream ---------------------------------------------------------------------
async def next_within(stream: Any, seconds: float = 5.0) -> NodeTemplate:
    item: NodeTemplate = await asyncio.wait_for(anext(stream), seconds)
    return item


async def test_node_stream_sends_the_current_template_then_each_change() -> None:
    provider = MockProvider(node_name="vk-0", config=MockNodeConfig(cpu="4", memory="8Gi", pods="10"))
    stream = provider.node_status_updates()
    assert await next_within(stream) == await provider.node_template()

    taint = Taint("example.com/gpu", "true", "NoSchedule")
    condition = NodeCondition("example.com/Quota", "True", "QuotaLow", "low")
    changed = provider.update_node(
        capacity={"cpu": "8", "memory": "8Gi", "pods": "10"}, taints=[taint], conditions=[condition]
    )

    pushed = await next_within(stream)
    assert pushed == changed == await provider.node_template()
    assert pushed.capacity["cpu"] == "8"
    assert pushed.taints == (taint,)
    assert pushed.conditions == (condition,)
    # The parts not named are kept as they were.
    assert pushed.addresses == (NodeAddress("InternalIP", "127.0.0.1"),)
    assert pushed.labels == {}
    await close_stream(stream)


async def test_node_stream_gives_a_slow_reader_the_latest_template_to_every_reader(
    clock: FakeClock,
) -> None:
    provider = MockProvider(node_name="vk-0", clock=clock)
    first, second = provider.node_status_updates(), provider.node_status_updates()
    await next_within(first)
    await next_within(second)

    for cpu in ("5", "6", "7"):
        provider.update_node(capacity={"cpu": cpu, "memory": "1Gi", "pods": "10"})

    assert (await next_within(first)).capacity["cpu"] == "7"
    assert (await next_within(second)).capacity["cpu"] == "7"
    waiting = asyncio.ensure_future(anext(first))
    await clock.settle()  # every runnable task ran: the mock does no I/O
    assert not waiting.done()  # nothing new: the stream waits for the next change
    provider.update_node(allocatable={"cpu": "6", "memory": "1Gi", "pods": "10"})
    assert (await asyncio.wait_for(waiting, 5)).allocatable == {"cpu": "6", "memory": "1Gi", "pods": "10"}


async def test_close_ends_the_node_stream_and_refuses_changes() -> None:
    provider = MockProvider(node_name="vk-0")
    stream = provider.node_status_updates()
    await next_within(stream)
    waiting = asyncio.ensure_future(anext(stream))
    await provider.close()
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(waiting, 5)
    assert [t async for t in provider.node_status_updates()] == []
    with pytest.raises(Permanent, match="closed"):
        provider.update_node(capacity={"cpu": "1"})


async def test_update_node_rejects_an_empty_capacity() -> None:
    provider = MockProvider(node_name="vk-0")
    before = await provider.node_template()
    with pytest.raises(InvalidInput, match="capacity"):
        provider.update_node(capacity={})
    assert await provider.node_template() == before


# -- lifecycle ----------------------------------------------------------------------------------
async def test_create_reports_running_and_ready(provider: MockProvider, clock: FakeClock) -> None:
    pod = make_pod(containers=("app", "sidecar"), init_containers=("setup",))
    await provider.create_pod(pod)

    stored = await provider.get_pod(pod.ref)
    status = stored.status
    assert status["phase"] == "Running"
    assert status["hostIP"] == "192.0.2.10"
    assert status["podIP"].startswith("10.") and status["podIPs"] == [{"ip": status["podIP"]}]
    assert status["startTime"] == format_time(clock.now())
    assert status["qosClass"] == "BestEffort"  # the API server's fields are kept
    conditions = {c["type"]: c["status"] for c in status["conditions"]}
    assert conditions == {
        "PodScheduled": "True",
        "Initialized": "True",
        "ContainersReady": "True",
        "Ready": "True",
    }
    containers = status["containerStatuses"]
    assert [c["name"] for c in containers] == ["app", "sidecar"]
    for c in containers:
        assert c["ready"] is True and c["started"] is True and c["restartCount"] == 0
        assert c["containerID"] == f"mock://uid-1/{c['name']}"
        assert c["image"] == "nginx:1.27" and c["imageID"].startswith("nginx:1.27@sha256:")
        assert "running" in c["state"]
    (init,) = status["initContainerStatuses"]
    assert init["state"]["terminated"]["reason"] == "Completed"
    assert init["state"]["terminated"]["exitCode"] == 0

    update = await next_update(provider)
    assert update.ref == pod.ref and update.status == status


async def test_pod_ip_is_deterministic_and_unique(clock: FakeClock) -> None:
    first = MockProvider(node_name="vk-0", clock=clock)
    second = MockProvider(node_name="vk-0", clock=clock)
    ips = set()
    for index in range(50):
        pod = make_pod(f"p{index}", uid=f"uid-{index}")
        await first.create_pod(pod)
        await second.create_pod(pod)
        a = (await first.get_pod_status(pod.ref))["podIP"]
        b = (await second.get_pod_status(pod.ref))["podIP"]
        assert a == b
        ips.add(a)
    assert len(ips) == 50


async def test_create_of_an_existing_uid_is_a_no_op(provider: MockProvider, clock: FakeClock) -> None:
    pod = make_pod()
    await provider.create_pod(pod)
    before = await provider.get_pod(pod.ref)
    await clock.advance(30)
    await provider.create_pod(make_pod(image="other:2"))
    assert await provider.get_pod(pod.ref) == before
    assert len(await provider.list_pods()) == 1
    await next_update(provider)
    stream = provider.pod_status_updates()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(anext(stream), timeout=0.05)


async def test_update_replaces_spec_and_keeps_status(provider: MockProvider, clock: FakeClock) -> None:
    pod = make_pod()
    await provider.create_pod(pod)
    created = await provider.get_pod(pod.ref)
    await clock.advance(10)

    changed = make_pod(image="nginx:1.28")
    manifest = dict(changed.manifest)
    manifest["metadata"] = {**manifest["metadata"], "labels": {"app": "web", "tier": "front"}}
    await provider.update_pod(Pod(pod.ref, manifest))

    updated = await provider.get_pod(pod.ref)
    assert updated.labels == {"app": "web", "tier": "front"}
    assert updated.containers[0]["image"] == "nginx:1.28"
    assert updated.status["podIP"] == created.status["podIP"]
    assert updated.status["startTime"] == created.status["startTime"]
    (container,) = updated.status["containerStatuses"]
    assert container["image"] == "nginx:1.28" and container["restartCount"] == 1

    stream = provider.pod_status_updates()
    assert (await anext(stream)).status["containerStatuses"][0]["image"] == "nginx:1.27"
    assert (await anext(stream)).status["containerStatuses"][0]["image"] == "nginx:1.28"


async def test_update_of_an_unknown_pod_is_not_found(provider: MockProvider) -> None:
    with pytest.raises(NotFound):
        await provider.update_pod(make_pod())


async def test_delete_reports_a_terminal_status(provider: MockProvider, clock: FakeClock) -> None:
    pod = make_pod(containers=("a", "b"))
    await provider.create_pod(pod)
    started = format_time(clock.now())
    await clock.advance(5)
    await provider.delete_pod(pod)

    with pytest.raises(NotFound):
        await provider.get_pod(pod.ref)
    with pytest.raises(NotFound):
        await provider.get_pod_status(pod.ref)
    assert await provider.list_pods() == []

    stream = provider.pod_status_updates()
    assert (await anext(stream)).status["phase"] == "Running"
    final = await anext(stream)
    assert final.ref == pod.ref
    assert final.status["phase"] == "Succeeded"
    assert final.status["reason"] == POD_DELETED_REASON
    for container in final.status["containerStatuses"]:
        terminated = container["state"]["terminated"]
        assert terminated["reason"] == CONTAINER_DELETED_REASON
        assert terminated["exitCode"] == 0
        assert terminated["startedAt"] == started
        assert terminated["finishedAt"] == format_time(clock.now())
        assert container["ready"] is False
    ready = next(c for c in final.status["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False"


async def test_delete_of_a_pod_whose_containers_are_not_running_does_not_crash(
    provider: MockProvider,
) -> None:
    pod = make_pod()
    await provider.create_pod(pod)
    # A status that is not Running (the case that crashed upstream's mock).
    stored = provider._pods[pod.ref.uid]
    stored.manifest["status"]["containerStatuses"][0]["state"] = {"waiting": {"reason": "ContainerCreating"}}
    await provider.delete_pod(pod)
    stream = provider.pod_status_updates()
    await anext(stream)
    terminated = (await anext(stream)).status["containerStatuses"][0]["state"]["terminated"]
    assert terminated["reason"] == CONTAINER_DELETED_REASON
    assert "startedAt" not in terminated


async def test_delete_get_and_status_of_unknown_pods_are_not_found(provider: MockProvider) -> None:
    pod = make_pod()
    with pytest.raises(NotFound):
        await provider.delete_pod(pod)
    with pytest.raises(NotFound):
        await provider.get_pod(pod.ref)
    with pytest.raises(NotFound):
        await provider.get_pod_status(pod.ref)
    await provider.create_pod(pod)
    await provider.delete_pod(pod)
    with pytest.raises(NotFound):
        await provider.delete_pod(pod)  # a second delete: already gone


async def test_status_stream_preserves_order(provider: MockProvider) -> None:
    pods = [make_pod(f"p{i}", uid=f"uid-{i}") for i in range(5)]
    for pod in pods:
        await provider.create_pod(pod)
    await provider.delete_pod(pods[2])
    stream = provider.pod_status_updates()
    seen = [(p.ref.name, p.status["phase"]) for p in [await anext(stream) for _ in range(6)]]
    assert seen == [(f"p{i}", "Running") for i in range(5)] + [("p2", "Succeeded")]


async def test_close_ends_the_status_stream(provider: MockProvider) -> None:
    await provider.create_pod(make_pod())
    await provider.close()
    received = [pod async for pod in provider.pod_status_updates()]
    assert len(received) == 1


async def test_pods_with_the_same_name_but_different_uids_do_not_collide(provider: MockProvider) -> None:
    old, new = make_pod(uid="uid-old"), make_pod(uid="uid-new", image="nginx:2")
    await provider.create_pod(old)
    await provider.create_pod(new)
    assert {p.ref.uid for p in await provider.list_pods()} == {"uid-old", "uid-new"}
    await provider.delete_pod(old)
    remaining = await provider.get_pod(new.ref)
    assert remaining.containers[0]["image"] == "nginx:2"
    with pytest.raises(NotFound):
        await provider.get_pod(old.ref)


async def test_namespace_name_pairs_with_dashes_do_not_collide(provider: MockProvider) -> None:
    first = make_pod("c", namespace="a-b", uid="uid-1")
    second = make_pod("b-c", namespace="a", uid="uid-2")
    await provider.create_pod(first)
    await provider.create_pod(second)
    refs = {(p.ref.namespace, p.ref.name) for p in await provider.list_pods()}
    assert refs == {("a-b", "c"), ("a", "b-c")}


async def test_changes_store_new_pods_and_leave_handed_out_ones_untouched(provider: MockProvider) -> None:
    # No defensive copies (manifests are immutable by rule): instead every change stores a new
    # pod, so what a caller got earlier keeps showing what it showed.
    pod = make_pod()
    before = copy.deepcopy(pod.manifest)
    await provider.create_pod(pod)
    assert pod.manifest == before  # the caller's pod is not touched (only a new status is added)
    running = await provider.get_pod(pod.ref)
    listed = await provider.list_pods()
    running_status = copy.deepcopy(running.manifest)
    await provider.delete_pod(pod)
    assert running.manifest == running_status and running.status["phase"] == "Running"
    assert listed[0].manifest == running_status


# -- stats and metrics --------------------------------------------------------------------------
def _samples(families: Any, name: str) -> list[tuple[Mapping[str, str], float]]:
    family = next(f for f in families if f.name == name)
    return [(s.labels, s.value) for s in family.samples]


async def test_stats_summary_is_deterministic_and_sums_pods() -> None:
    async def summary_after_a_minute() -> Mapping[str, Any]:
        clock = FakeClock()
        provider = MockProvider(node_name="vk-0", clock=clock)
        await provider.create_pod(make_pod("web", containers=("a", "b", "c")))
        await provider.create_pod(make_pod("db", uid="uid-2", containers=("pg",)))
        await clock.advance(60)
        return await provider.stats_summary()

    summary = await summary_after_a_minute()
    assert summary == await summary_after_a_minute()

    assert summary["node"]["nodeName"] == "vk-0"
    pods = {p["podRef"]["name"]: p for p in summary["pods"]}
    assert pods["web"]["podRef"] == {"name": "web", "namespace": "default", "uid": "uid-1"}
    assert [c["name"] for c in pods["web"]["containers"]] == ["a", "b", "c"]
    for pod in pods.values():
        for field in ("usageNanoCores", "usageCoreNanoSeconds"):
            assert pod["cpu"][field] == sum(c["cpu"][field] for c in pod["containers"])
        for field in ("usageBytes", "workingSetBytes"):
            assert pod["memory"][field] == sum(c["memory"][field] for c in pod["containers"])
        for c in pod["containers"]:
            assert c["cpu"]["usageCoreNanoSeconds"] == c["cpu"]["usageNanoCores"] * 60
            assert c["memory"]["usageBytes"] >= c["memory"]["workingSetBytes"] > 0
    node = summary["node"]
    assert node["memory"]["workingSetBytes"] == sum(p["memory"]["workingSetBytes"] for p in pods.values())
    assert node["cpu"]["usageCoreNanoSeconds"] == sum(p["cpu"]["usageCoreNanoSeconds"] for p in pods.values())


async def test_node_cpu_counter_never_goes_backwards(provider: MockProvider, clock: FakeClock) -> None:
    pod = make_pod()
    await provider.create_pod(pod)
    await clock.advance(100)
    before = (await provider.stats_summary())["node"]["cpu"]["usageCoreNanoSeconds"]
    await provider.delete_pod(pod)
    after = (await provider.stats_summary())["node"]["cpu"]["usageCoreNanoSeconds"]
    assert after >= before > 0


async def test_metrics_use_kubelet_names_and_match_the_summary(
    provider: MockProvider, clock: FakeClock
) -> None:
    await provider.create_pod(make_pod("web", containers=("a", "b", "c")))
    await clock.advance(60)
    families = await provider.metrics_resource()
    summary = await provider.stats_summary()

    types = {f.name: f.type for f in families}
    assert types == {
        "node_cpu_usage_seconds_total": "counter",
        "node_memory_working_set_bytes": "gauge",
        "pod_cpu_usage_seconds_total": "counter",
        "pod_memory_working_set_bytes": "gauge",
        "container_cpu_usage_seconds_total": "counter",
        "container_memory_working_set_bytes": "gauge",
        "container_start_time_seconds": "gauge",
        "scrape_error": "gauge",
    }
    assert _samples(families, "scrape_error") == [({}, 0.0)]
    (pod_summary,) = summary["pods"]
    assert _samples(families, "pod_cpu_usage_seconds_total") == [
        ({"namespace": "default", "pod": "web"}, pod_summary["cpu"]["usageCoreNanoSeconds"] / 1e9)
    ]
    assert _samples(families, "pod_memory_working_set_bytes") == [
        ({"namespace": "default", "pod": "web"}, pod_summary["memory"]["workingSetBytes"])
    ]
    containers = _samples(families, "container_cpu_usage_seconds_total")
    assert [list(labels) for labels, _ in containers] == [["container", "namespace", "pod"]] * 3
    assert [labels["container"] for labels, _ in containers] == ["a", "b", "c"]
    assert all(labels["pod"] == "web" for labels, _ in containers)
    for (_, value), entry in zip(containers, pod_summary["containers"], strict=True):
        assert value == entry["cpu"]["usageCoreNanoSeconds"] / 1e9
    starts = _samples(families, "container_start_time_seconds")
    assert {value for _, value in starts} == {(clock.now().timestamp() - 60)}
    (node_cpu,) = _samples(families, "node_cpu_usage_seconds_total")
    assert node_cpu == ({}, summary["node"]["cpu"]["usageCoreNanoSeconds"] / 1e9)


async def test_pod_ref_identity_is_the_uid_for_lookups(provider: MockProvider) -> None:
    pod = make_pod()
    await provider.create_pod(pod)
    assert (await provider.get_pod(PodRef("default", "web", "uid-1"))).ref == pod.ref
    with pytest.raises(NotFound):
        await provider.get_pod(PodRef("default", "web", "uid-other"))


# -- the "volumes" key: a benchmarking and testing aid -------------------------------------------
def _volumes(data: bytes) -> PodVolumes:
    return PodVolumes(
        files=(FileVolume("config", "configMap", (VolumeFile("app.conf", data),)),),
        empty_dirs=(EmptyDirVolume("scratch"),),
    )


async def test_the_volumes_key_declares_volumes_and_keeps_the_last_contents(tmp_path: Path) -> None:
    path = write_config(tmp_path, {"vk-0": {"volumes": True}})
    config = load_mock_config(path, node_name="vk-0")
    assert config.volumes is True
    provider = MockProvider(node_name="vk-0", config=config, clock=FakeClock())
    assert Capability.VOLUMES in provider.capabilities()
    pod = make_pod()
    # vkubelet hands the volumes over before the create: kept for a pod not created yet.
    await provider.set_pod_volumes(pod.ref, _volumes(b"v1"))
    await provider.create_pod(pod)
    await provider.set_pod_volumes(pod.ref, _volumes(b"v2"))
    assert provider.pod_volumes(pod.ref) == _volumes(b"v2")
    assert provider.pod_volumes(PodRef("default", "web", "uid-other")) is None
    await provider.delete_pod(pod)
    assert provider.pod_volumes(pod.ref) is None


async def test_without_the_volumes_key_set_pod_volumes_is_not_supported(
    provider: MockProvider, tmp_path: Path
) -> None:
    assert load_mock_config(write_config(tmp_path, {"vk-0": {}}), node_name="vk-0").volumes is False
    assert Capability.VOLUMES not in provider.capabilities()
    with pytest.raises(NotSupported):
        await provider.set_pod_volumes(make_pod().ref, _volumes(b"v1"))
    assert provider.pod_volumes(make_pod().ref) is None


def test_the_volumes_key_must_be_a_boolean(tmp_path: Path) -> None:
    path = write_config(tmp_path, {"vk-0": {"volumes": "yes"}})
    with pytest.raises(MockConfigError, match="volumes must be true or false"):
        load_mock_config(path, node_name="vk-0")


def test_native_volume_kinds_default_to_none_and_are_declared_as_configured(tmp_path: Path) -> None:
    assert MockProvider(node_name="vk-0").native_volume_kinds() == frozenset()
    path = write_config(tmp_path, {"vk-0": {"nativeVolumeKinds": ["persistentVolumeClaim", "hostPath"]}})
    config = load_mock_config(path, node_name="vk-0")
    assert config.native_volume_kinds == {"persistentVolumeClaim", "hostPath"}
    assert MockProvider(node_name="vk-0", config=config).native_volume_kinds() == config.native_volume_kinds


@pytest.mark.parametrize(
    ("value", "words"),
    [
        (["hostPath", "pvc"], "nativeVolumeKinds: 'pvc' is not a volume kind"),
        (["hostpath", "Secret"], "nativeVolumeKinds: 'Secret', 'hostpath' are not volume kinds"),
        ("hostPath", "nativeVolumeKinds must be an array of volume kinds"),
        ([1], "nativeVolumeKinds must be an array of volume kinds"),
    ],
)
def test_native_volume_kinds_must_be_volume_kinds(tmp_path: Path, value: object, words: str) -> None:
    path = write_config(tmp_path, {"vk-0": {"nativeVolumeKinds": value}})
    with pytest.raises(MockConfigError) as caught:
        load_mock_config(path, node_name="vk-0")
    message = str(caught.value)
    assert words in message and str(path) in message and "'vk-0'" in message
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        assert "persistentVolumeClaim" in message  # the valid names are listed
