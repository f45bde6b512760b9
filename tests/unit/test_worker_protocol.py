"""Batch frame parsing: any split of nsqd's byte stream yields the same frames, in order."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nsq_worker import protocol

MESSAGE_ID = b"0123456789abcdef"
MAX = protocol.max_frame_size(protocol.DEFAULT_MAX_MSG_SIZE)


def _stream() -> tuple[bytes, list[protocol.RawMessage], list[protocol.RawFrame]]:
    messages = [
        (1_700_000_000_000_000_000 + i, i + 1, f"{i:016x}".encode(), b"body-%d" % i * i) for i in range(5)
    ]
    others = [
        (protocol.FRAME_RESPONSE, protocol.HEARTBEAT),
        (protocol.FRAME_ERROR, b"E_FIN_FAILED FIN x failed"),
    ]
    data = (
        protocol.encode_frame(*others[0])
        + b"".join(protocol.encode_message(*m) for m in messages[:3])
        + protocol.encode_frame(*others[1])
        + b"".join(protocol.encode_message(*m) for m in messages[3:])
    )
    return data, messages, others


def test_one_buffer_with_every_kind_of_frame() -> None:
    data, messages, others = _stream()
    got_messages, got_others, used = protocol.split_frames(data, MAX)
    assert got_messages == messages
    assert got_others == others
    assert used == len(data)


@given(st.lists(st.integers(min_value=0, max_value=400), max_size=12))
def test_any_split_of_the_stream_gives_the_same_frames(cuts: list[int]) -> None:
    data, messages, others = _stream()
    points = sorted({min(c, len(data)) for c in cuts})
    chunks = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    got_messages: list[protocol.RawMessage] = []
    got_others: list[protocol.RawFrame] = []
    frames = protocol.FrameBuffer(MAX)
    for chunk in chunks:
        new_messages, new_others = frames.feed(chunk)
        got_messages += new_messages
        got_others += new_others
    assert frames.pending == 0
    assert got_messages == messages
    assert got_others == others


def test_a_partial_frame_is_left_for_the_next_read() -> None:
    frame = protocol.encode_message(1, 1, MESSAGE_ID, b"hello")
    for cut in range(len(frame)):
        assert protocol.split_frames(frame[:cut], MAX) == ([], [], 0)


def test_empty_body_and_attempts_above_32767() -> None:
    frame = protocol.encode_message(5, 40_000, MESSAGE_ID, b"")
    assert protocol.split_frames(frame, MAX) == ([(5, 40_000, MESSAGE_ID, b"")], [], len(frame))


@pytest.mark.parametrize(
    "data",
    [
        (2).to_bytes(4, "big") + (0).to_bytes(4, "big"),  # size smaller than the frame type
        protocol.encode_frame(protocol.FRAME_MESSAGE, b"short"),  # message shorter than its header
        protocol.encode_frame(7, b"what"),  # unknown frame type
        (-5).to_bytes(4, "big", signed=True) + (0).to_bytes(4, "big"),
    ],
)
def test_corrupt_streams_raise(data: bytes) -> None:
    with pytest.raises(protocol.FrameError):
        protocol.split_frames(data, MAX)


def test_a_large_message_split_over_many_reads_is_parsed_once_when_complete() -> None:
    body = bytes(range(256)) * (5 * 4096)  # 5 MiB
    frame = protocol.encode_message(7, 1, MESSAGE_ID, body)
    frames = protocol.FrameBuffer(protocol.max_frame_size(6 * 1024 * 1024))
    chunk = 256 * 1024
    pieces = [frame[i : i + chunk] for i in range(0, len(frame), chunk)]
    for piece in pieces[:-1]:
        assert frames.feed(piece) == ([], [])  # still arriving: nothing parsed, nothing joined
    assert frames.pending == len(frame) - len(pieces[-1])
    messages, others = frames.feed(pieces[-1])
    assert messages == [(7, 1, MESSAGE_ID, body)]
    assert others == []
    assert frames.pending == 0


def test_a_frame_at_the_size_bound_passes_and_one_byte_more_is_refused() -> None:
    limit = 4096
    frames = protocol.FrameBuffer(protocol.max_frame_size(limit))
    exact = protocol.encode_message(1, 1, MESSAGE_ID, b"x" * limit)
    assert frames.feed(exact)[0][0][3] == b"x" * limit
    with pytest.raises(protocol.FrameError, match="NSQ_MAX_MSG_SIZE"):
        frames.feed(protocol.encode_message(1, 1, MESSAGE_ID, b"x" * (limit + 1)))


@pytest.mark.parametrize("header_bytes", [4, 5, 8, 30])
def test_a_corrupt_header_is_refused_before_its_frame_is_buffered(header_bytes: int) -> None:
    """A header announcing 1 GiB fails as soon as its size is readable, not after 1 GiB arrived."""
    frames = protocol.FrameBuffer(protocol.max_frame_size(protocol.DEFAULT_MAX_MSG_SIZE))
    good = protocol.encode_message(1, 1, MESSAGE_ID, b"ok")
    corrupt = (1 << 30).to_bytes(4, "big") + (2).to_bytes(4, "big") + b"\0" * 22
    assert frames.feed(good + corrupt[:3]) == ([(1, 1, MESSAGE_ID, b"ok")], [])
    with pytest.raises(protocol.FrameError, match="larger than"):
        frames.feed(corrupt[3:header_bytes])


def test_commands() -> None:
    assert protocol.fin(MESSAGE_ID) == b"FIN 0123456789abcdef\n"
    assert protocol.req(MESSAGE_ID, 1500) == b"REQ 0123456789abcdef 1500\n"
    assert protocol.req(MESSAGE_ID, -3) == b"REQ 0123456789abcdef 0\n"
    assert protocol.touch(MESSAGE_ID) == b"TOUCH 0123456789abcdef\n"
    assert protocol.rdy(2500) == b"RDY 2500\n"
    with pytest.raises(ValueError, match="negative"):
        protocol.rdy(-1)
    assert protocol.error_code(b"E_FIN_FAILED FIN 0123 failed") == "E_FIN_FAILED"
    assert "E_REQ_FAILED" in protocol.NON_FATAL_ERRORS
    assert "E_INVALID" not in protocol.NON_FATAL_ERRORS
