"""Test kit: an AWS event-stream encoder and a fake Bedrock Runtime behind httpx.MockTransport.

The fake verifies every request's SigV4 signature by recomputing it with botocore's
primitives from the request as received and the credentials it knows, and answers 403
`InvalidSignatureException` on any mismatch (as AWS does).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
import struct
import zlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import httpx
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from tests.fixtures.upstream import anthropic_message

REGION = "us-east-1"
ACCESS_KEY = "AKIAFAKEACCESSKEY123"
SECRET_KEY = "fake/secret+key/0123456789abcdefghijKLMN"
ENDPOINT = f"https://bedrock-runtime.{REGION}.amazonaws.com"
SONNET = "global.anthropic.claude-sonnet-4-5-20250929-v1:0"
HAIKU = "global.anthropic.claude-haiku-4-5-20251001-v1:0"

_AUTH_RE = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=(?P<ak>[^/]+)/(?P<date>\d{8})/(?P<region>[^/]+)/"
    r"(?P<service>[^/]+)/aws4_request, "
    r"SignedHeaders=(?P<signed>[^,]+), Signature=(?P<sig>[0-9a-f]{64})$"
)
_PATH_RE = re.compile(r"^/model/(?P<model>[^/]+)/(?P<action>invoke|invoke-with-response-stream)$")


# --- event-stream encoding (AWS spec: prelude, prelude CRC, headers, payload, message CRC) ---


def encode_message(headers: dict[str, str], payload: bytes) -> bytes:
    """One event-stream message with string-typed (type 7) headers."""
    encoded = b""
    for name, value in headers.items():
        n, v = name.encode(), value.encode()
        encoded += struct.pack(">B", len(n)) + n + b"\x07" + struct.pack(">H", len(v)) + v
    total = 4 + 4 + 4 + len(encoded) + len(payload) + 4
    prelude = struct.pack(">II", total, len(encoded))
    prelude += struct.pack(">I", zlib.crc32(prelude))
    message = prelude + encoded + payload
    return message + struct.pack(">I", zlib.crc32(message))


def chunk_frame(event: dict[str, Any]) -> bytes:
    """A Bedrock `chunk` event carrying one Anthropic stream event."""
    raw = json.dumps(event).encode()
    payload = json.dumps({"bytes": base64.b64encode(raw).decode(), "p": "abcdefghij"}).encode()
    headers = {
        ":event-type": "chunk",
        ":content-type": "application/json",
        ":message-type": "event",
    }
    return encode_message(headers, payload)


def exception_frame(name: str, message: str) -> bytes:
    headers = {
        ":exception-type": name,
        ":content-type": "application/json",
        ":message-type": "exception",
    }
    return encode_message(headers, json.dumps({"message": message}).encode())


def anthropic_events(text_parts: tuple[str, ...] = ("Hello", " world")) -> list[dict[str, Any]]:
    """A realistic Anthropic stream as Bedrock delivers it (metrics in message_stop)."""
    message = {
        "id": "msg_bdrk_01",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5-20250929",
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": 25, "output_tokens": 1},
    }
    events: list[dict[str, Any]] = [
        {"type": "message_start", "message": message},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    ]
    for part in text_parts:
        events.append(
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": part},
            }
        )
    events += [
        {"type": "content_block_stop", "index": 0},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": 12},
        },
        {
            "type": "message_stop",
            "amazon-bedrock-invocationMetrics": {
                "inputTokenCount": 25,
                "outputTokenCount": 12,
                "invocationLatency": 812,
                "firstByteLatency": 301,
            },
        },
    ]
    return events


def expected_sse(events: list[dict[str, Any]]) -> bytes:
    """The SSE the bridge must emit for `events` (data verbatim; metrics removed)."""
    out = b""
    for event in events:
        if "amazon-bedrock-invocationMetrics" in event:
            event = {k: v for k, v in event.items() if k != "amazon-bedrock-invocationMetrics"}
            data = json.dumps(event, separators=(",", ":")).encode()
        else:
            data = json.dumps(event).encode()
        out += b"event: " + event["type"].encode() + b"\ndata: " + data + b"\n\n"
    return out


# --- fake Bedrock Runtime ---


class ChunkStream(httpx.AsyncByteStream):
    """A response body delivered in the given chunks; records whether it was closed."""

    def __init__(self, chunks: list[bytes], hang_after: int | None = None) -> None:
        self.chunks = chunks
        self.hang_after = hang_after
        self.closed = False
        self.sent = 0
        self.hanging = False  # the reader is waiting for a chunk that never comes

    async def __aiter__(self) -> AsyncIterator[bytes]:
        import asyncio

        for i, chunk in enumerate(self.chunks):
            if self.hang_after is not None and i >= self.hang_after:
                self.hanging = True
                await asyncio.Event().wait()  # a model that is still thinking
            self.sent += 1
            yield chunk

    async def aclose(self) -> None:
        self.closed = True


@dataclass
class Received:
    model_id: str
    action: str
    body: dict[str, Any]
    access_key: str
    headers: httpx.Headers


Responder = Callable[[Received], httpx.Response]


@dataclass
class FakeBedrock:
    """Bedrock Runtime at `ENDPOINT`: checks SigV4, records requests, answers via `respond`."""

    known: dict[str, tuple[str, str | None]] = field(
        default_factory=lambda: {ACCESS_KEY: (SECRET_KEY, None)}
    )
    region: str = REGION
    respond: Responder | None = None
    received: list[Received] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def handle(self, request: httpx.Request) -> httpx.Response:
        problem = self.verify_signature(request)
        if problem:
            self.rejected.append(problem)
            return aws_error(403, "InvalidSignatureException", problem)
        match = _PATH_RE.match(request.url.raw_path.decode())
        if request.method != "POST" or not match:
            return aws_error(404, "UnknownOperationException", "unknown operation")
        auth = _AUTH_RE.match(request.headers["authorization"])
        assert auth is not None
        got = Received(
            model_id=unquote(match["model"]),
            action=match["action"],
            body=json.loads(request.content),
            access_key=auth["ak"],
            headers=request.headers,
        )
        self.received.append(got)
        assert self.respond is not None, "FakeBedrock.respond not set"
        return self.respond(got)

    def verify_signature(self, request: httpx.Request) -> str | None:
        """None when the request is signed correctly, else what is wrong."""
        auth = _AUTH_RE.match(request.headers.get("authorization", ""))
        if auth is None:
            return "missing or malformed Authorization"
        if auth["ak"] not in self.known:
            return "unknown access key"
        secret, token = self.known[auth["ak"]]
        if (auth["region"], auth["service"]) != (self.region, "bedrock"):
            return f"wrong scope {auth['region']}/{auth['service']}"
        if request.headers.get("x-amz-security-token") != token:
            return "wrong or missing security token"
        signed = auth["signed"].split(";")
        for required in ("host", "x-amz-date", "content-type"):
            if required not in signed:
                return f"{required} not signed"
        if token is not None and "x-amz-security-token" not in signed:
            return "security token not signed"
        amz_date = request.headers.get("x-amz-date", "")
        when = dt.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)
        if abs((dt.datetime.now(dt.UTC) - when).total_seconds()) > 300:
            return "request time too skewed"
        if auth["date"] != amz_date[:8]:
            return "credential date does not match x-amz-date"
        # Recompute from the request exactly as received: path on the wire, signed headers,
        # body bytes.
        aws = AWSRequest(
            method=request.method,
            url=str(request.url),
            data=request.content,
            headers={name: request.headers[name] for name in signed},
        )
        aws.context["timestamp"] = amz_date
        signer = SigV4Auth(Credentials(auth["ak"], secret, token), "bedrock", self.region)
        canonical = signer.canonical_request(aws)
        expected = signer.signature(signer.string_to_sign(aws, canonical), aws)
        if expected != auth["sig"]:
            return "The request signature we calculated does not match the signature you provided"
        return None


def aws_error(status: int, error_type: str, message: str) -> httpx.Response:
    return httpx.Response(
        status,
        headers={
            "x-amzn-ErrorType": f"{error_type}:http://internal.amazon.com/coral/com.amazon.bedrock/",
            "x-amzn-RequestId": "req-err-1",
        },
        json={"message": message},
    )


def message_json(text: str = "Hello world", model: str = "claude-sonnet-4-5") -> dict[str, Any]:
    return anthropic_message(text, model, (10, 3), "msg_bdrk_02")


def json_ok(body: dict[str, Any]) -> httpx.Response:
    return httpx.Response(
        200,
        headers={
            "content-type": "application/json",
            "x-amzn-RequestId": "req-ok-1",
            "X-Amzn-Bedrock-Input-Token-Count": "10",
            "X-Amzn-Bedrock-Output-Token-Count": "3",
            "X-Amzn-Bedrock-Invocation-Latency": "420",
        },
        content=json.dumps(body).encode(),
    )


def stream_ok(stream: ChunkStream) -> httpx.Response:
    return httpx.Response(
        200,
        headers={"content-type": "application/vnd.amazon.eventstream", "x-amzn-RequestId": "r-s"},
        stream=stream,
    )


def static_config(**overrides: Any) -> Any:
    """A BedrockConfig with the fake's static credentials."""
    from aibridge.masking import Secret
    from data_plane.bedrock import BedrockConfig

    values: dict[str, Any] = {
        "region": REGION,
        "model": SONNET,
        "small_fast_model": HAIKU,
        "access_key": Secret(ACCESS_KEY),
        "access_key_secret": Secret(SECRET_KEY),
    }
    values.update(overrides)
    return BedrockConfig(**values)
