"""`vkubelet-mock-provider` re-reads its config on SIGHUP and pushes the node to vkubelet."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path

from tests.helpers import close_stream
from vkubelet.adapters.grpc.client import GrpcProvider
from vkubelet.adapters.grpc.config import parse_grpc_config

NODE = "vk-hup"
MOCK = str(Path(sys.executable).with_name("vkubelet-mock-provider"))


async def _line_containing(stream: asyncio.StreamReader, text: str, *, seconds: float = 10.0) -> str:
    async with asyncio.timeout(seconds):
        while line := (await stream.readline()).decode():
            if text in line:
                return line
    raise AssertionError(f"the provider's log ended without a line containing {text!r}")


async def test_sighup_pushes_the_new_capacity_and_a_bad_config_keeps_the_old(tmp_path: Path) -> None:
    config = tmp_path / "mock.json"
    config.write_text(json.dumps({NODE: {"cpu": "4"}}))
    address = f"unix://{tmp_path}/mock.sock"
    process = await asyncio.create_subprocess_exec(
        MOCK, "--listen", address, "--provider-config", str(config), "--nodename", NODE,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stderr is not None
    client = GrpcProvider(parse_grpc_config({"address": address, "connect_timeout": 20}))
    try:
        await client.connect()
        updates = client.node_status_updates()
        first = await asyncio.wait_for(anext(updates), 10)
        assert first.capacity["cpu"] == "4"

        config.write_text(json.dumps({NODE: {"cpu": "four"}}))
        process.send_signal(signal.SIGHUP)
        line = await _line_containing(process.stderr, "SIGHUP: keeping the old config")
        assert "cpu='four'" in line
        assert process.returncode is None

        config.write_text(json.dumps({NODE: {"cpu": "8", "labels": {"size": "big"}}}))
        process.send_signal(signal.SIGHUP)
        grown = await asyncio.wait_for(anext(updates), 10)
        assert grown.capacity["cpu"] == "8" and grown.labels.get("size") == "big"
        await close_stream(updates)
    finally:
        await client.close()
        process.terminate()
        await asyncio.wait_for(process.wait(), 30)
    assert process.returncode == 0
