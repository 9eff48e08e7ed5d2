"""ESL (FreeSWITCH Event Socket) wire protocol, client side: pure codec + asyncio connections."""

from .codec import (
    MAX_CONTENT_LENGTH,
    ApiResponse,
    AuthRequest,
    CommandReply,
    DisconnectNotice,
    Event,
    Frame,
    FrameParser,
    LogData,
    Message,
    RudeRejection,
    UnknownMessage,
    decode,
    encode_command,
    encode_execute,
    encode_hangup,
    encode_sendmsg,
    url_decode,
)
from .connection import ESLConnection
from .errors import (
    AccessDenied,
    AuthError,
    ChannelHungUp,
    CommandError,
    ConnectionLost,
    ESLError,
    FrameTooLarge,
    ProtocolError,
    ReplyTimeout,
)
from .inbound import InboundClient
from .outbound import OutboundServer, OutboundSession

__all__ = [
    "MAX_CONTENT_LENGTH", "ApiResponse", "AuthRequest", "CommandReply", "DisconnectNotice", "Event",
    "Frame", "FrameParser", "LogData", "Message", "RudeRejection", "UnknownMessage", "decode",
    "encode_command", "encode_execute", "encode_hangup", "encode_sendmsg", "url_decode",
    "ESLConnection", "InboundClient", "OutboundServer", "OutboundSession",
    "AccessDenied", "AuthError", "ChannelHungUp", "CommandError", "ConnectionLost", "ESLError",
    "FrameTooLarge", "ProtocolError", "ReplyTimeout",
]
