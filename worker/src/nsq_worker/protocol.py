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
# A message frame's size beyond its body: the frame type (4) and the message header (26).
MESSAGE_OVERHEAD: Final = 4 + _MESSAGE.size
# nsqd's --max-msg-size default: the largest body nsqd accepts, so the largest it can deliver.
DEFAULT_MAX_MSG_SIZE: Final = 1024 * 1024

RawMessage = tuple[int, int, bytes, bytes]
"""timestamp (ns), attempts, id, body"""
RawFrame = tuple[int, bytes]
"""frame type, payload: responses and errors"""


class FrameError(ValueError):
    """The byte stream from nsqd cannot be framed: the connection must be dropped."""


def max_frame_size(max_msg_size: int) -> int:
    """The largest frame nsqd can send when it refuses bodies above `max_msg_size`."""
    return max_msg_size + MESSAGE_OVERHEAD


def split_frames(data: bytes, max_size: int) -> tuple[list[RawMessage], list[RawFrame], int]:
    """Every complete frame at the start of `data`: (messages, other frames, bytes consumed).

    A frame header announcing more than `max_size` bytes raises FrameError at once, even when the
    frame itself has not arrived: a corrupt stream must not make the reader buffer a gigabyte.
    """
    messages: list[RawMessage] = []
    others: list[RawFrame] = []
    unpack_header = _HEADER.unpack_from
    unpack_message = _MESSAGE.unpack_from
    pos = 0
    end = len(data)
    while end - pos >= 8:
        size, frame_type = unpack_header(data, pos)
        if size < 4 or size > max_size:
            raise FrameError(_bad_size(size, max_size))
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


def _bad_size(size: int, max_size: int) -> str:
    if size < 4:
        return f"impossible frame size {size}"
    return (
        f"a frame of {size} bytes is larger than the {max_size} that max_msg_size allows "
        f"(NSQ_MAX_MSG_SIZE; set it to nsqd's --max-msg-size)"
    )


_NOTHING: tuple[list[RawMessage], list[RawFrame]] = ([], [])
_SIZE = struct.Struct(">i")


class FrameBuffer:
    """Turns the chunks a socket returns into frames, in time linear in the bytes received.

    A frame split over many reads is kept as a list of chunks and joined once, when its last byte
    has arrived: a 5 MiB message read 256 KiB at a time is copied a constant number of times, not
    once per read. The announced size is checked against `max_size` as soon as the header arrives.
    """

    __slots__ = ("_chunks", "_have", "_need", "max_size")

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self._chunks: list[bytes] = []
        self._have = 0
        self._need = 0

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame held."""
        return self._have

    def feed(self, chunk: bytes) -> tuple[list[RawMessage], list[RawFrame]]:
        """Every frame that `chunk` completes: (messages, other frames). Raises FrameError."""
        if self._chunks:
            self._chunks.append(chunk)
            self._have += len(chunk)
            if self._have < self._need:
                return _NOTHING
            data = b"".join(self._chunks)
            self._chunks = []
            self._have = 0
        else:
            data = chunk
        messages, others, used = split_frames(data, self.max_size)
        if used < len(data):
            rest = data[used:]
            self._chunks = [rest]
            self._have = len(rest)
            self._need = self._needed(rest)
        return messages, others

    def _needed(self, rest: bytes) -> int:
        """Bytes the partial frame at the start of `rest` needs in all (its header's size first)."""
        if len(rest) < 4:
            return 4  # then the size is known, and checked
        size: int = _SIZE.unpack_from(rest)[0]
        if size < 4 or size > self.max_size:
            raise FrameError(_bad_size(size, self.max_size))
        return 4 + size


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
