"""Which client sent a request, and its session id, from what clients say of themselves.

Detection, first match wins (the record's `client` slug; the raw User-Agent is recorded
beside it, bounded, whatever matched):

- claude-code: User-Agent `claude-cli/2.0.14 (external, cli)`;
- codex: User-Agent `codex_cli_rs/0.46.0 (...)` (also `codex_exec`, `codex_vscode`), or
  an `originator: codex_...` header;
- cursor: a User-Agent that names Cursor, or an `x-cursor-client-version` header;
- copilot: a User-Agent that names Copilot (`GitHubCopilotChat/...`), or a
  `copilot-integration-id` header;
- openai-python, anthropic-typescript, openai-go, ...: the official SDKs, by
  `x-stainless-lang` and a User-Agent `OpenAI/Python 1.x`, `AsyncOpenAI/Python ...`,
  `Anthropic/JS 0.x`;
- other: anything else (the User-Agent tells more).

The SDKs (Stainless-generated) send `x-stainless-lang` (`python`, `js`, `go`, `java`,
`kotlin`, ...; `js` is recorded as typescript, the SDK's language). A header can be forged
by the client that sends it: detection labels a caller's own records, it proves nothing.

Session ids: Claude Code sends `x-claude-code-session-id` (and puts
`..._session_<uuid>` in the body's `metadata.user_id`, read by `session_from_metadata`);
Codex sends `session_id` (older versions `conversation_id`).
"""

from __future__ import annotations

import json
from typing import Any

# The request headers detection reads (the app collects them in its one pass over headers).
HEADERS = frozenset(
    {
        b"user-agent",
        b"x-stainless-lang",
        b"originator",
        b"x-cursor-client-version",
        b"copilot-integration-id",
        b"x-claude-code-session-id",
        b"session_id",
        b"conversation_id",
    }
)
_LANGUAGES = {"js": "typescript", "node": "typescript"}


def detect(headers: dict[bytes, bytes]) -> str:
    """The client's slug (claude-code, codex, openai-python, ... or other)."""
    ua = headers.get(b"user-agent", b"").lower()
    if ua.startswith(b"claude-cli/"):
        return "claude-code"
    if ua.startswith(b"codex") or headers.get(b"originator", b"").lower().startswith(b"codex"):
        return "codex"
    if b"cursor" in ua or b"x-cursor-client-version" in headers:
        return "cursor"
    if b"copilot" in ua or b"copilot-integration-id" in headers:
        return "copilot"
    lang = headers.get(b"x-stainless-lang")
    if lang is not None:
        vendor = ua.split(b"/", 1)[0].removeprefix(b"async")
        if vendor in (b"openai", b"anthropic"):
            lang = lang.strip().lower()
            if not (lang.isalnum() and len(lang) <= 32):  # bytes: ASCII letters and digits
                lang = bytes(c for c in lang if chr(c).isalnum() and c < 128)[:32]
            name = lang.decode()
            return f"{vendor.decode()}-{_LANGUAGES.get(name, name) or 'unknown'}"
    return "other"


def session_from_headers(headers: dict[bytes, bytes]) -> bytes | None:
    for name in (b"x-claude-code-session-id", b"session_id", b"conversation_id"):
        value = headers.get(name)
        if value:
            return value
    return None


def session_from_metadata(doc: dict[str, Any]) -> str:
    """Claude Code's session id in the body's `metadata.user_id`: `user_<hash>_account_
    <uuid>_session_<uuid>`, or (newer versions) a JSON object with a `session_id`."""
    metadata = doc.get("metadata")
    user_id = metadata.get("user_id") if isinstance(metadata, dict) else None
    if not isinstance(user_id, str):
        return ""
    if user_id.startswith("{"):
        try:
            parsed = json.loads(user_id)
        except (ValueError, RecursionError):
            return ""
        session = parsed.get("session_id") if isinstance(parsed, dict) else None
        return session if isinstance(session, str) else ""
    _, found, session = user_id.rpartition("_session_")
    return session if found else ""
