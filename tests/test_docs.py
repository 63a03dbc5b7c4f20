"""Documentation that is generated from, or must agree with, the code."""

from __future__ import annotations

import contextlib
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_configuration_reference_is_fresh(tmp_path: Path) -> None:
    """docs/configuration.md is exactly what scripts/gen_config_doc.py generates from the settings code."""
    out = tmp_path / "configuration.md"
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_config_doc.py"), str(out)], check=True
    )
    assert out.read_text() == (ROOT / "docs" / "configuration.md").read_text(), (
        "run: python scripts/gen_config_doc.py"
    )


def test_readme_quick_start_is_exactly_two_commands() -> None:
    """The README's Quick start holds exactly two commands: run the stack, run the tests."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    block = section.split("```sh", 1)[1].split("```", 1)[0]
    commands = [line for line in block.strip().splitlines() if line.strip()]
    assert [c.split("#")[0].strip() for c in commands] == [
        "python3 dev.py up",
        "python3 dev.py test",
    ]


def test_ci_runs_the_readme_test_command() -> None:
    """.ci/run calls the README's test command."""
    assert "python3 dev.py test" in (ROOT / ".ci" / "run").read_text()


def test_every_variable_the_docs_mention_exists_in_code() -> None:
    """Each AIBRIDGE_* variable named in README or docs is read somewhere in the code."""
    code = "\n".join(
        p.read_text()
        for pkg in ("aibridge", "config_service", "data_plane", "console")
        for p in (ROOT / pkg).rglob("*.py")
    )
    docs = (ROOT / "README.md").read_text() + "".join(
        p.read_text() for p in (ROOT / "docs").rglob("*.md")
    )
    names = set(re.findall(r"AIBRIDGE_[A-Z0-9_]*[A-Z0-9]", docs))
    templated = {
        n
        for n in names
        if n.startswith(("AIBRIDGE_PROVIDER_", "AIBRIDGE_BEDROCK_", "AIBRIDGE_TEST_"))
    }
    # Seeding variables are built from a prefix family and a field name.
    missing = sorted(
        n for n in names - templated if n not in code and n.removeprefix("AIBRIDGE_") not in code
    )
    assert not missing


def test_client_pages_show_a_snippet_for_every_language_their_title_names() -> None:
    """A docs/clients page titled "(Python, Node)" has a python and a js block."""
    fence = {"Python": "```python", "Node": "```js"}
    for page in sorted((ROOT / "docs" / "clients").glob("*.md")):
        title = page.read_text().splitlines()[0]
        named = re.search(r"\(([^)]*)\)", title)
        for language in named[1].split(", ") if named else []:
            if language in fence:  # "(aibridgeproxyd)" names no language
                assert fence[language] in page.read_text(), (page.name, language)


def test_anthropic_page_names_the_header_the_sdk_sends() -> None:
    """docs/clients/anthropic-sdk.md says how the installed Anthropic SDK sends api_key."""
    import anthropic
    import httpx2

    sent: list[httpx2.Headers] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        sent.append(request.headers)
        return httpx2.Response(400, json={"type": "error", "error": {"type": "x", "message": "x"}})

    client = anthropic.Anthropic(
        base_url="http://bridge/anthropic",
        api_key="gateway-token",
        http_client=httpx2.Client(transport=httpx2.MockTransport(handler)),
        max_retries=0,
    )
    with contextlib.suppress(anthropic.APIStatusError):
        client.messages.create(
            model="m", max_tokens=1, messages=[{"role": "user", "content": "hi"}]
        )
    page = (ROOT / "docs" / "clients" / "anthropic-sdk.md").read_text()
    if sent[0].get("authorization") == "Bearer gateway-token":
        assert "sends `api_key` as `Authorization: Bearer`" in page
    else:
        assert sent[0].get("x-api-key") == "gateway-token"
        assert "sends `api_key` as `X-Api-Key`" in page
