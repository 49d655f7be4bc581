"""The provider's connection lifecycle is wired by the container, not discovered with getattr:
only the gRPC provider has a link to wait for and lose."""

from __future__ import annotations

from pathlib import Path

from vkubelet.adapters.grpc.client import GrpcProvider
from vkubelet.application.connection import AlwaysConnected
from vkubelet.entrypoints.cli_args import RunCommand, parse_command_line
from vkubelet.entrypoints.container import Backends


def backends(tmp_path: Path, *argv: str) -> Backends:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\n")
    command = parse_command_line(
        ["--nodename", "vk-wiring", "--kubeconfig", str(kubeconfig), *argv],
        {"HOME": str(tmp_path)},
        providers=("mock", "process", "grpc"),
    )
    assert isinstance(command, RunCommand)
    return Backends(
        settings=command.settings, internal_ip="127.0.0.1", api_server_url="https://127.0.0.1:6443"
    )


async def test_an_in_process_provider_is_always_connected(tmp_path: Path) -> None:
    wired = backends(tmp_path, "--provider", "mock")
    connection = wired.provider_connection()
    assert isinstance(connection, AlwaysConnected)
    await connection.connect()  # returns at once: nothing to wait for


async def test_the_grpc_provider_is_its_own_connection(tmp_path: Path) -> None:
    config = tmp_path / "grpc.yaml"
    config.write_text("address: unix:///nonexistent/provider.sock\n")
    wired = backends(tmp_path, "--provider", "grpc", "--provider-config", str(config))
    provider = wired.pod_provider()
    assert isinstance(provider, GrpcProvider)
    assert wired.provider_connection() is provider

    async def hook() -> None:
        return None

    provider.add_reconnect_hook(hook)
    assert provider.on_reconnect == [hook]
    await provider.close()
