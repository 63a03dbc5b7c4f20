"""The SSE reader's quick pick of the lines worth a parse misses none its rule wants."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from data_plane.bridge.interception.response import (
    ARGUMENT_MARKER,
    MARKERS,
    marked_lines,
)

_RULE = re.compile(MARKERS, re.MULTILINE)
_RULE_ARGUMENTS = re.compile(MARKERS + b"|" + ARGUMENT_MARKER, re.MULTILINE)

# Pieces of every marker, near misses and filler, so generated blocks hit each branch.
_PIECES = [
    b'usage"',
    b": ",
    b":",
    b" ",
    b"{",
    b'"tool_calls"',
    b'"tool_use"',
    b'"server_tool_use"',
    b"[DONE]",
    b"message_stop",
    b"response.",
    b"completed",
    b"incomplete",
    b"failed",
    b"event:",
    b"error",
    b"\n",
    b'"finish',
    b'"stop',
    b'_reason"',
    b'"',
    b"null",
    b"input_json_delta",
    b"data: ",
    b"x",
    b"tool_",
    b"\r",
    b"\r\n",
    b"event: error",
]


def _acted_on(line: bytes, rule: re.Pattern[bytes]) -> bool:
    """A line the reader does something with: a marker, or an `event:` naming an error."""
    return rule.search(line) is not None or (
        line.startswith(b"event:") and line[6:].strip() == b"error"
    )


@settings(max_examples=3000, deadline=None)
@given(st.lists(st.sampled_from(_PIECES), max_size=20), st.booleans())
def test_marked_lines_hold_every_line_the_reader_acts_on(
    pieces: list[bytes], arguments: bool
) -> None:
    """The lines given the per-line rule are, in order, lines of the block, and among
    them is every line with a marker or an error event."""
    lines = b"".join(pieces) + b"\n"
    rule = _RULE_ARGUMENTS if arguments else _RULE
    marked = marked_lines(lines, arguments)
    every = lines.splitlines()
    it = iter(every)
    assert all(any(line == other for other in it) for line in marked)  # a subsequence
    wanted = [line for line in every if _acted_on(line, rule)]
    it = iter(marked)
    assert all(any(line == other for other in it) for line in wanted)


def test_only_the_marked_lines_of_a_block_are_given_the_rule() -> None:
    """In a block of chat deltas ending with the usage chunk, only the usage and [DONE]
    lines are marked."""
    delta = (
        b'data: {"id":"c1","object":"chat.completion.chunk","model":"m","choices":[{"index":0,'
        b'"delta":{"content":"hi"},"finish_reason":null}]}\n\n'
    )
    usage = b'data: {"id":"c1","choices":[],"usage":{"prompt_tokens":1}}\n\n'
    block = delta * 30 + usage + b"data: [DONE]\n\n"
    assert marked_lines(block, False) == [usage.strip(), b"data: [DONE]"]


def test_a_plain_chat_chunk_is_not_marked() -> None:
    """A chat completion delta with a null finish reason is skipped without a regex or a
    parse; with a finish reason it is read."""
    chunk = (
        b'data: {"id":"c1","object":"chat.completion.chunk","model":"m","choices":[{"index":0,'
        b'"delta":{"content":"hi"},"finish_reason":null}]}\n\n'
    )
    assert marked_lines(chunk, False) == []
    stop = chunk.replace(b"null", b'"stop"')
    assert marked_lines(stop, False) == [stop.strip()]
