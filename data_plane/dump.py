"""Request/response dumps for debugging, secrets masked, confined to the dump directory.

Written by both daemons (the bridge, and the proxy when it hands requests over).
Layout: `<dir>/<provider>/<model, "/" → "-">/<unix-ms>-<id>.req.txt` and `.resp.txt`,
and `.req_error.txt` (the error) when the upstream could not be reached or broke off, as
Coder's dumper does; passthrough calls go under `<dir>/<provider>/passthrough/`. Every
path component is sanitized and the final path is checked to lie inside the directory.
I/O failures only log a warning: a dump never fails a request.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from aibridge.files import write_private
from aibridge.logs import get_logger
from aibridge.masking import mask_secret

log = get_logger(__name__)

REQUEST_SECRETS = frozenset(
    {
        "authorization",
        "x-api-key",
        "api-key",
        "x-auth-token",
        "cookie",
        "proxy-authorization",
        "x-amz-security-token",
        "x-aibridge-token",
    }
)
RESPONSE_SECRETS = frozenset({"set-cookie", "www-authenticate", "proxy-authenticate"})
# A dump keeps at most this much of a response body in memory (a long stream would
# otherwise grow the daemon without bound); the rest is counted, not kept.
MAX_DUMP_BODY = 8 * 1024 * 1024
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def safe_component(value: str) -> str:
    """A single, harmless path component: no separators, no leading dots, never empty."""
    cleaned = _UNSAFE.sub("-", value.replace("/", "-").replace("\\", "-"))[:128]
    return cleaned.lstrip(".") or "_"


def _title(name: str) -> str:
    return "-".join(part.capitalize() for part in name.split("-"))


def _headers(headers: Iterable[tuple[str, str]], secrets: frozenset[str]) -> str:
    lines = []
    for name, value in sorted(headers, key=lambda h: h[0].lower()):
        shown = mask_secret(value) if name.lower() in secrets else value
        lines.append(f"{_title(name)}: {shown}\r\n")
    return "".join(lines)


def _write_atomically(path: Path, data: bytes) -> None:
    """Write then rename, so nobody reading the dump directory sees a half-written file."""
    partial = path.with_name(path.name + ".partial")
    write_private(partial, data)  # 0600 in 0700 directories: dumps hold prompts and answers
    partial.replace(path)


def _pretty(body: bytes) -> bytes:
    try:
        return json.dumps(json.loads(body), indent=2, ensure_ascii=False).encode()
    except (ValueError, RecursionError):  # RecursionError: deeply nested JSON
        return body


class BodyCapture:
    """The first MAX_DUMP_BODY bytes of a streamed response body, and a count of the rest."""

    def __init__(self) -> None:
        self._kept = bytearray()
        self._dropped = 0

    def feed(self, chunk: bytes) -> None:
        room = max(0, MAX_DUMP_BODY - len(self._kept))
        self._kept += chunk[:room]
        self._dropped += len(chunk) - len(chunk[:room])

    def body(self) -> bytes:
        if self._dropped:
            return bytes(self._kept) + f"\n[... {self._dropped} more bytes not dumped]\n".encode()
        return bytes(self._kept)


@dataclass
class Exchange:
    """One request/response pair to dump."""

    provider: str
    model: str | None  # None: passthrough
    request_id: str
    method: str
    target: str
    request_headers: list[tuple[str, str]]
    request_body: bytes
    status: int = 0
    response_headers: list[tuple[str, str]] | None = None
    response_body: bytes = b""
    error: str = ""  # a transport error towards the upstream, if any


class Dumper:
    def __init__(self, base: Path) -> None:
        self.base = base.resolve()

    def paths(self, ex: Exchange) -> tuple[Path, Path, Path]:
        folder = "passthrough" if ex.model is None else (ex.model or "unknown")
        stem = f"{int(time.time() * 1000)}-{safe_component(ex.request_id)}"
        directory = self.base / safe_component(ex.provider) / safe_component(folder)
        if not directory.resolve().is_relative_to(self.base):
            raise ValueError(f"dump path escapes {self.base}")
        return (
            directory / f"{stem}.req.txt",
            directory / f"{stem}.resp.txt",
            directory / f"{stem}.req_error.txt",
        )

    def _write(self, ex: Exchange) -> None:
        """The response and error files first, the request file last: whoever sees a
        `.req.txt` (each file appears whole, by rename) sees the whole exchange."""
        req_path, resp_path, error_path = self.paths(ex)
        if ex.response_headers is not None:
            head = _headers(ex.response_headers, RESPONSE_SECRETS)
            _write_atomically(
                resp_path, f"HTTP/1.1 {ex.status}\r\n{head}\r\n".encode() + ex.response_body
            )
        if ex.error:
            _write_atomically(error_path, ex.error.encode() + b"\n")
        body = _pretty(ex.request_body)
        headers = [(k, v) for k, v in ex.request_headers if k.lower() != "content-length"]
        headers.append(("content-length", str(len(body))))
        _write_atomically(
            req_path,
            f"{ex.method} {ex.target} HTTP/1.1\r\n{_headers(headers, REQUEST_SECRETS)}\r\n".encode()
            + body
            + b"\n",
        )

    async def dump(self, ex: Exchange) -> None:
        try:
            await asyncio.to_thread(self._write, ex)
        except (OSError, ValueError) as exc:
            log.warning(
                "api dump failed", provider=ex.provider, request_id=ex.request_id, error=str(exc)
            )
