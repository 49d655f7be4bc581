"""SPDY/3.1: the framer (``frames``), the session (``session``), and the aiohttp upgrade that
hands a connection to it (``upgrade``).

The Kubernetes API server (and ``kubectl`` with ``KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false``)
speaks SPDY/3.1 to the kubelet for exec, attach and port-forward. No maintained Python library
does, so this module implements the parts of the draft spec those clients use:

* frames (spec section 2.2): a control frame is ``C=1 | version(15) | type(16) | flags(8) |
  length(24) | payload``; a data frame is ``C=0 | stream-id(31) | flags(8) | length(24) |
  payload``. Control types: SYN_STREAM 1, SYN_REPLY 2, RST_STREAM 3, SETTINGS 4, PING 6,
  GOAWAY 7, HEADERS 8, WINDOW_UPDATE 9. Unknown control types are ignored, as the spec asks.
* header blocks (2.6.10): ``count(32) | (len(32) name len(32) value)*``, names lower case,
  several values of one name joined by NUL, the whole block deflated with one zlib stream per
  direction per session, primed with the SPDY/3 dictionary, each block ending in a sync flush.
* flow control (2.6.8, and 3.1's session window on stream 0): 64 KiB initial windows.

:class:`FrameParser` and :class:`FrameWriter` are sans-I/O. :class:`SpdySession` multiplexes
streams over a :class:`FrameSink` and is driven by :meth:`SpdySession.feed`; a malformed frame
or a broken zlib stream ends the session with GOAWAY(PROTOCOL_ERROR) and closes the
connection. Nothing raised by a peer's bytes escapes :meth:`SpdySession.feed`.

Peers that do no flow control: Go's spdystream (used by kubectl and the API server) never sends
WINDOW_UPDATE and ignores the ones it receives. Enforcing our send window against such a peer
would stall every stream after 64 KiB, so the send window is tracked from the start but only
enforced once the peer shows it takes part (it sends WINDOW_UPDATE or SETTINGS
INITIAL_WINDOW_SIZE). Symmetrically, receiving past the window is tolerated up to a bounded
per-stream buffer, beyond which the stream is reset with FLOW_CONTROL_ERROR.
"""

from __future__ import annotations

from vkubelet.adapters.kubeletapi.spdy.frames import (
    DEFAULT_MAX_FRAME_LENGTH,
    DEFAULT_WINDOW,
    FLAG_FIN,
    FLAG_SETTINGS_CLEAR,
    FLAG_UNIDIRECTIONAL,
    HEADER_DICTIONARY,
    MAX_DATA_CHUNK,
    MAX_HEADER_BLOCK,
    MAX_STREAM_BUFFER,
    MAX_WINDOW,
    VERSION,
    DataFrame,
    Frame,
    FrameParser,
    FrameType,
    FrameWriter,
    GoAway,
    GoAwayStatus,
    HeaderCompressor,
    HeaderDecompressor,
    HeaderList,
    HeadersFrame,
    Ping,
    RstStatus,
    RstStream,
    Setting,
    SettingsFrame,
    SpdyProtocolError,
    SynReply,
    SynStream,
    WindowUpdate,
    decode_header_block,
    encode_header_block,
    header_value,
)
from vkubelet.adapters.kubeletapi.spdy.session import (
    FrameSink,
    SpdySession,
    SpdyStream,
    StreamReset,
)
from vkubelet.adapters.kubeletapi.spdy.upgrade import (
    is_spdy_upgrade,
    negotiate,
    upgrade,
)

__all__ = [
    "DEFAULT_MAX_FRAME_LENGTH",
    "DEFAULT_WINDOW",
    "FLAG_FIN",
    "FLAG_SETTINGS_CLEAR",
    "FLAG_UNIDIRECTIONAL",
    "HEADER_DICTIONARY",
    "MAX_DATA_CHUNK",
    "MAX_HEADER_BLOCK",
    "MAX_STREAM_BUFFER",
    "MAX_WINDOW",
    "VERSION",
    "DataFrame",
    "Frame",
    "FrameParser",
    "FrameSink",
    "FrameType",
    "FrameWriter",
    "GoAway",
    "GoAwayStatus",
    "HeaderCompressor",
    "HeaderDecompressor",
    "HeaderList",
    "HeadersFrame",
    "Ping",
    "RstStatus",
    "RstStream",
    "Setting",
    "SettingsFrame",
    "SpdyProtocolError",
    "SpdySession",
    "SpdyStream",
    "StreamReset",
    "SynReply",
    "SynStream",
    "WindowUpdate",
    "decode_header_block",
    "encode_header_block",
    "header_value",
    "is_spdy_upgrade",
    "negotiate",
    "upgrade",
]
