"""The node's InternalIP: what the API server's node proxy will dial."""

from __future__ import annotations

import logging

import pytest

from vkubelet.application.settings import NodeSettings, Settings
from vkubelet.entrypoints import cli


def _settings(internal_ip: str | None) -> Settings:
    return Settings(node=NodeSettings(name="vk-0", provider="mock", internal_ip=internal_ip))


def test_an_explicit_address_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "primary_host_ip", lambda: "192.0.2.7")
    assert cli.node_ip(_settings("198.18.0.9")) == "198.18.0.9"


def test_without_one_the_host_address_on_the_default_route(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(cli, "primary_host_ip", lambda: "192.0.2.7")
    with caplog.at_level(logging.WARNING):
        assert cli.node_ip(_settings(None)) == "192.0.2.7"
    assert caplog.records == []


def test_a_loopback_only_host_is_warned_about(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(cli, "primary_host_ip", lambda: "127.0.0.1")
    with caplog.at_level(logging.WARNING):
        assert cli.node_ip(_settings(None)) == "127.0.0.1"
    (record,) = caplog.records
    assert "node proxy refuses" in record.getMessage() and "VKUBELET_POD_IP" in record.getMessage()
