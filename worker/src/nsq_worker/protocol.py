"""The NSQ TCP protocol's hot half: batch frame parsing and the per-message commands.

gnsq reads a frame with `read(4)` then `read(size)` and builds each command with joins and checks.
Here one `recv` is parsed into many frames with `struct.unpack_from`, and FIN/REQ/TOUCH are single
byte concatenations, because those run once per message. The rare commands (IDENTIFY, SUB, PUB,
AUTH) keep using gnsq.protocol, which validates names.
"""

from __future__ import annotations

import struct
from typing import Final

FRAME_RESPONSE: Final = 0
FRAME_ERROR: Final = 1
FRAME_MESSAGE: Final = 2

HEARTBEAT: Final = b"_heartbeat_"
OK: Final = b"OK"
CLOSE_WAIT: Final = b"CLOSE_WAIT"

# A frame's size counts its 4-byte type; a message frame then holds timestamp(8) attempts(2) id(16).
_HEADER = struct.Struct(">iI")
_MESSAGE = struct.Struct(">qH16s")
_MESSAGE_MIN_SIZE: Final = 4 + _MESSAGE.size
_BODY_OFFSET: Final = 8 + _MESSAGE.size
# nsqd's --max-msg-size defaults to 1 MiB; anything near this bound is a corrupt stream, not a message.
MAX_FRAME_SIZE: Final = 1 << 30

RawMessage = tuple[int, int, bytes, bytes]
"""timestamp (ns), attempts, id, body"""
RawFrame = tuple[int, bytes]
"""frame type, payload: responses and errors"""


class FrameError(ValueError):
    """The byte stream from nsqd cannot be framed: the connection must be dropped."""


def split_frames(data: bytes) -> tuple[list[RawMessage], list[RawFrame], int]:
    """Every complete frame at the start of `data`: (messages, other frames, bytes consumed).

    The caller keeps `data[consumed:]` (a partial frame) and prepends it to the next read.
    """
    messages: list[RawMessage] = []
    others: list[RawFrame] = []
    unpack_header = _HEADER.unpack_from
    unpack_message = _MESSAGE.unpack_from
    pos = 0
    end = len(data)
    while end - pos >= 8:
        size, frame_type = unpack_header(data, pos)
        if size < 4 or size > MAX_FRAME_SIZE:
            raise FrameError(f"impossible frame size {size} at offset {pos}")
        stop = pos + 4 + size
        if stop > end:
            break
        if frame_type == FRAME_MESSAGE:
            if size < _MESSAGE_MIN_SIZE:
                raise FrameError(f"message frame of {size} bytes is shorter than its header")
            timestamp, attempts, message_id = unpack_message(data, pos + 8)
            messages.append((timestamp, attempts, message_id, data[pos + _BODY_OFFSET : stop]))
        elif frame_type <= FRAME_ERROR:
            others.append((frame_type, data[pos + 8 : stop]))
        else:
            raise FrameError(f"unknown frame type {frame_type}")
        pos = stop
    return messages, others, pos


def encode_frame(frame_type: int, payload: bytes) -> bytes:
    """One frame as nsqd writes it (tests and tools build streams with this)."""
    return _HEADER.pack(len(payload) + 4, frame_type) + payload


def encode_message(timestamp: int, attempts: int, message_id: bytes, body: bytes) -> bytes:
    """One message frame as nsqd writes it."""
    return encode_frame(FRAME_MESSAGE, _MESSAGE.pack(timestamp, attempts, message_id) + body)


def fin(message_id: bytes) -> bytes:
    return b"FIN " + message_id + b"\n"


def req(message_id: bytes, delay_ms: int) -> bytes:
    return b"REQ " + message_id + b" " + str(max(0, int(delay_ms))).encode() + b"\n"


def touch(message_id: bytes) -> bytes:
    return b"TOUCH " + message_id + b"\n"


def rdy(count: int) -> bytes:
    if count < 0:
        raise ValueError("RDY count cannot be negative")
    return b"RDY " + str(count).encode() + b"\n"


NOP: Final = b"NOP\n"
CLS: Final = b"CLS\n"


def error_code(payload: bytes) -> str:
    """The E_* code of an error frame's payload ("E_FIN_FAILED FIN ... failed ...")."""
    return payload.split(b" ", 1)[0].decode("ascii", "replace")


# Errors after which nsqd keeps the connection open (see nsqd protocol_v2: NewClientErr, not Fatal).
NON_FATAL_ERRORS: Final = frozenset({"E_FIN_FAILED", "E_REQ_FAILED", "E_TOUCH_FAILED"})
