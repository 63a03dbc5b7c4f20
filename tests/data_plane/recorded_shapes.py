"""Answers in the shapes the real APIs send them (fields, order and usage details as
recorded from OpenAI chat completions and Responses and Anthropic Messages), with tool
calls and cache / reasoning token counts, for the interception-record tests.

Each `*_TOKENS` is what the record must say: (input, output, cache read, cache write,
reasoning).
"""

from __future__ import annotations

import json
from typing import Any

from tests.fixtures.upstream import Reply, json_reply, sse, stream_reply

CHAT_MODEL = "gpt-4.1-2025-04-14"
RESPONSES_MODEL = "gpt-5-codex"
ANTHROPIC_MODEL = "claude-sonnet-4-20250514"
TOOL_ARGUMENTS = '{"location":"Paris, France"}'

CHAT_USAGE = {
    "prompt_tokens": 82,
    "completion_tokens": 17,
    "total_tokens": 99,
    "prompt_tokens_details": {"cached_tokens": 64, "audio_tokens": 0},
    "completion_tokens_details": {
        "reasoning_tokens": 5,
        "audio_tokens": 0,
        "accepted_prediction_tokens": 0,
        "rejected_prediction_tokens": 0,
    },
}
CHAT_TOKENS = (82, 17, 64, 0, 5)


def chat_completion() -> Reply:
    return json_reply(
        {
            "id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
            "object": "chat.completion",
            "created": 1741569952,
            "model": CHAT_MODEL,
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [
                            {
                                "id": "call_abc123",
                                "type": "function",
                                "function": {"name": "get_weather", "arguments": TOOL_ARGUMENTS},
                            }
                        ],
                        "refusal": None,
                        "annotations": [],
                    },
                    "logprobs": None,
                    "finish_reason": "tool_calls",
                }
            ],
            "usage": CHAT_USAGE,
            "service_tier": "default",
            "system_fingerprint": "fp_b3f1157249",
        }
    )


def _chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1741569952,
        "model": CHAT_MODEL,
        "service_tier": "default",
        "system_fingerprint": "fp_b3f1157249",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        "usage": None,  # with include_usage every chunk carries a null usage but the last
    }


def chat_stream() -> Reply:
    pieces = ['{"loca', 'tion":"Par', 'is, France"}']
    chunks = [
        _chunk(
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "call_abc123",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": ""},
                    }
                ],
                "refusal": None,
            }
        ),
        *(_chunk({"tool_calls": [{"index": 0, "function": {"arguments": p}}]}) for p in pieces),
        _chunk({}, "tool_calls"),
        _chunk({}) | {"choices": [], "usage": CHAT_USAGE},
    ]
    return stream_reply(sse([*((None, c) for c in chunks), (None, "[DONE]")]))


RESPONSES_USAGE = {
    "input_tokens": 1200,
    "input_tokens_details": {"cached_tokens": 1024},
    "output_tokens": 300,
    "output_tokens_details": {"reasoning_tokens": 256},
    "total_tokens": 1500,
}
RESPONSES_TOKENS = (1200, 300, 1024, 0, 256)


def _response(status: str, output: list[dict[str, Any]], usage: Any) -> dict[str, Any]:
    return {
        "id": "resp_68af4",
        "object": "response",
        "created_at": 1756315696,
        "status": status,
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": 'You are Codex. Never print "model": "not-this-one".',
        "max_output_tokens": None,
        "model": RESPONSES_MODEL,
        "output": output,
        "parallel_tool_calls": False,
        "reasoning": {"effort": "medium", "summary": "auto"},
        "store": False,
        "tool_choice": "auto",
        "tools": [{"type": "function", "name": "shell", "parameters": {"type": "object"}}],
        "usage": usage,
    }


_CALL = {
    "id": "fc_68af4",
    "type": "function_call",
    "status": "completed",
    "arguments": TOOL_ARGUMENTS,
    "call_id": "call_shell_1",
    "name": "shell",
}
_OUTPUT = [
    {"id": "rs_68af4", "type": "reasoning", "summary": []},
    _CALL,
]


def responses_blocking() -> Reply:
    return json_reply(_response("completed", _OUTPUT, RESPONSES_USAGE))


def responses_events() -> list[tuple[str, dict[str, Any]]]:
    created = _response("in_progress", [], None)
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": created},
        {"type": "response.in_progress", "response": created},
        {
            "type": "response.output_item.added",
            "output_index": 1,
            "item": _CALL | {"arguments": ""},
        },
        {
            "type": "response.function_call_arguments.delta",
            "item_id": "fc_68af4",
            "output_index": 1,
            "delta": TOOL_ARGUMENTS,
        },
        {"type": "response.output_item.done", "output_index": 1, "item": _CALL},
        {
            "type": "response.completed",
            "response": _response("completed", _OUTPUT, RESPONSES_USAGE),
        },
    ]
    return [(e["type"], e | {"sequence_number": i}) for i, e in enumerate(events)]


def responses_stream() -> Reply:
    return stream_reply(sse(responses_events()))


ANTHROPIC_TOKENS = (12, 89, 10240, 2048, 0)
_PIECES = ['{"location":', ' "Paris, Fr', 'ance"}']
ANTHROPIC_STREAM_ARGUMENTS = "".join(_PIECES)


def anthropic_blocking() -> Reply:
    return json_reply(
        {
            "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
            "type": "message",
            "role": "assistant",
            "model": ANTHROPIC_MODEL,
            "content": [
                {"type": "text", "text": "Let me check the weather."},
                {
                    "type": "tool_use",
                    "id": "toolu_01A09q90qw90lq917835lq9",
                    "name": "get_weather",
                    "input": json.loads(TOOL_ARGUMENTS),
                },
            ],
            "stop_reason": "tool_use",
            "stop_sequence": None,
            "usage": {
                "input_tokens": 12,
                "cache_creation_input_tokens": 2048,
                "cache_read_input_tokens": 10240,
                "output_tokens": 89,
                "service_tier": "standard",
            },
        }
    )


def anthropic_events() -> list[tuple[str, dict[str, Any]]]:
    usage = {
        "input_tokens": 12,
        "cache_creation_input_tokens": 2048,
        "cache_read_input_tokens": 10240,
        "output_tokens": 1,
        "service_tier": "standard",
    }
    message = {
        "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
        "type": "message",
        "role": "assistant",
        "model": ANTHROPIC_MODEL,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": usage,
    }
    tool = {"type": "tool_use", "id": "toolu_01A09q90qw90lq917835lq9", "name": "get_weather"}
    return [
        ("message_start", {"type": "message_start", "message": message}),
        (
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        ),
        ("ping", {"type": "ping"}),
        (
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": "Let me check the weather."},
            },
        ),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        (
            "content_block_start",
            {"type": "content_block_start", "index": 1, "content_block": tool | {"input": {}}},
        ),
        *(
            (
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 1,
                    "delta": {"type": "input_json_delta", "partial_json": p},
                },
            )
            for p in ["", *_PIECES]
        ),
        ("content_block_stop", {"type": "content_block_stop", "index": 1}),
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                "usage": {"output_tokens": 89},
            },
        ),
        ("message_stop", {"type": "message_stop"}),
    ]


def anthropic_stream() -> Reply:
    return stream_reply(sse(anthropic_events()))
