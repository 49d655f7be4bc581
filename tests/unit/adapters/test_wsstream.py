"""The WebSocket channel protocols and the exec option/status helpers, without a network."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
from multidict import MultiDict

from vkubelet.adapters.kubeletapi import remotecommand, wsstream
from vkubelet.adapters.kubeletapi.wsstream import ChannelProtocolError, decode_message, encode_message
from vkubelet.application.ports.streams import TerminalSize
from vkubelet.domain.errors import InvalidInput

V5, V4, V4_B64, V1, B64 = wsstream.EXEC_PROTOCOLS


def test_binary_messages_round_trip() -> None:
    for protocol in (V5, V4, V1, wsstream.NO_SUBPROTOCOL):
        message = encode_message(protocol, 1, b"\x00\xffdata")
        assert message == b"\x01\x00\xffdata"
        assert decode_message(protocol, message) == (1, b"\x00\xffdata")


def test_base64_messages_round_trip() -> None:
    for protocol in (V4_B64, B64):
        message = encode_message(protocol, 3, b"\x00\xffdata")
        assert message == "3AP9kYXRh"
        assert decode_message(protocol, message) == (3, b"\x00\xffdata")
    assert decode_message(V4_B64, "0") == (0, b"")


def test_v5_close_message() -> None:
    assert decode_message(V5, b"\xff\x00") == (wsstream.CLOSE_CHANNEL, b"\x00")


@pytest.mark.parametrize(
    ("protocol", "message", "error"),
    [
        (V4, b"", "no channel byte"),
        (V4, "1abc", "text message"),
        (V4_B64, b"1abc", "binary message"),
        (V4_B64, "", "channel digit"),
        (V4_B64, "xYWJj", "channel digit"),
        (V4_B64, "1a!!", "invalid base64"),
        (V4_B64, "1é", "invalid base64"),
        (V4, b"\xff\x00", "outside v5"),
        (V5, b"\xff", "exactly one"),
        (V5, b"\xff\x00\x01", "exactly one"),
    ],
)
def test_malformed_messages(protocol: wsstream.ChannelProtocol, message: bytes | str, error: str) -> None:
    with pytest.raises(ChannelProtocolError, match=error):
        decode_message(protocol, message)


def test_protocol_choice_is_by_server_preference() -> None:
    supported = wsstream.EXEC_PROTOCOLS
    assert wsstream.choose_protocol(["channel.k8s.io", "v4.channel.k8s.io"], supported) == V4
    assert wsstream.choose_protocol(["v4.base64.channel.k8s.io,v5.channel.k8s.io"], supported) == V5
    assert wsstream.choose_protocol([], supported) is wsstream.NO_SUBPROTOCOL
    assert wsstream.choose_protocol(["v9.channel.k8s.io"], supported) is None
    assert V5.close_messages and V5.json_status and not V1.json_status


def test_exec_options() -> None:
    options = remotecommand.parse_exec_options(
        MultiDict([("command", "sh"), ("command", "-c"), ("input", "1"), ("stderr", "true"), ("tty", "1")]),
        with_command=True,
    )
    # tty with stderr: stderr is dropped (the kubelet's behaviour), not a 400.
    assert options == remotecommand.ExecOptions(True, False, False, True, ("sh", "-c"))
    with pytest.raises(InvalidInput, match="at least one"):
        remotecommand.parse_exec_options(MultiDict([("command", "x"), ("tty", "1")]), with_command=True)
    with pytest.raises(InvalidInput, match="command"):
        remotecommand.parse_exec_options(MultiDict([("output", "1")]), with_command=True)


def test_status_encodings() -> None:
    failure = remotecommand.exit_code_status(7, "error executing command [false]")
    assert json.loads(remotecommand.encode_status(failure, json_status=True)) == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": "command terminated with non-zero exit code: error executing command [false], exit code 7",
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": "7"}]},
    }
    assert remotecommand.encode_status(remotecommand.success_status(), json_status=False) == b""
    assert remotecommand.encode_status(failure, json_status=False).startswith(b"command terminated")


async def test_resize_documents_split_across_chunks() -> None:
    chunks = iter([b'{"Width":80,', b'"Height":24}\n{"Width":1', b'00,"Height":50}{"x":1}\n', b""])

    async def read() -> bytes:
        return next(chunks)

    io = remotecommand.ChannelIO(stdin=False, stdout=True, stderr=False, tty=True, _read_resize=read)
    sizes: AsyncIterator[TerminalSize] = io.resizes()
    assert [size async for size in sizes] == [TerminalSize(80, 24), TerminalSize(100, 50)]


async def test_tty_folds_stderr_into_stdout_and_absent_streams_are_inert() -> None:
    out: list[bytes] = []

    async def write(data: bytes) -> None:
        out.append(data)

    io = remotecommand.ChannelIO(stdin=False, stdout=True, stderr=False, tty=True, _write_stdout=write)
    await io.write_stderr(b"err")
    await io.write_stdout(b"out")
    assert out == [b"err", b"out"]
    assert await io.read_stdin() == b""
