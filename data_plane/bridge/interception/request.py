"""What a request body says for the record: the prompt (the last user message).

Read from the body the app has parsed already (never parsed again here), for the three
API shapes: chat completions and Anthropic messages (`messages`, a message's `content` a
string or a list of text parts), OpenAI Responses (`input`, a string or a list of items).
The last user message that holds text is the prompt: a message holding only tool
results (an agent's loop) says nothing a person wrote.
"""

from __future__ import annotations

from typing import Any

_TEXT_PARTS = frozenset({"text", "input_text"})


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    return "\n".join(
        part["text"]
        for part in content
        if isinstance(part, dict)
        and part.get("type") in _TEXT_PARTS
        and isinstance(part.get("text"), str)
    )


def last_user_message(doc: dict[str, Any]) -> str:
    """The text of the last user message that has any, else ""."""
    items = doc.get("messages")
    if items is None:
        items = doc.get("input")
        if isinstance(items, str):
            return items
    if not isinstance(items, list):
        return ""
    for item in reversed(items):
        if isinstance(item, dict) and item.get("role") == "user":
            text = _text(item.get("content"))
            if text:
                return text
    return ""
