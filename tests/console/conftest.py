"""Console fixtures: the console app on an httpx ASGI transport, in front of a real
in-process config service (tests/fixtures/services.py), signed in per role."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from aibridge.client import ClientSettings
from config_service.rbac import Role
from console.api import Api
from console.app import Console
from tests.fixtures.services import Service, StartService

BASE = "http://console.test"
CSRF_RE = re.compile(r'name="csrf" value="([^"]+)"')
PROVIDER_KEY = "sk-console-test-provider-key-0123456789abcdef"


def csrf_of(page: str) -> str:
    found = CSRF_RE.search(page)
    assert found, "the page has no CSRF field"
    return found.group(1)


@dataclass
class Browserless:
    """The console app, its config service, and a way to sign a fresh client in."""

    app: Console
    service: Service
    clients: list[httpx.AsyncClient]

    def client(self) -> httpx.AsyncClient:
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app), base_url=BASE, follow_redirects=False
        )
        self.clients.append(client)
        return client

    async def signed_in(self, role: Role) -> httpx.AsyncClient:
        return await self.sign_in(self.service.tokens[role])

    async def sign_in(self, token: str) -> httpx.AsyncClient:
        client = self.client()
        form = await client.get("/signin")
        answer = await client.post("/signin", data={"csrf": csrf_of(form.text), "token": token})
        assert answer.status_code == 303, answer.text
        return client

    async def csrf(self, client: httpx.AsyncClient, path: str = "/usage") -> str:
        page = await client.get(path)
        assert page.status_code == 200, page.text
        return csrf_of(page.text)

    async def create_provider(
        self, client: httpx.AsyncClient, fields: dict[str, Any], csrf: str | None = None
    ) -> httpx.Response:
        """POST the new-provider form: `fields` and a CSRF token (`csrf`, else one read from
        /providers/new)."""
        token = csrf if csrf is not None else await self.csrf(client, "/providers/new")
        return await client.post("/providers", data={"csrf": token, **fields})


MakeConsole = Callable[..., Awaitable[Browserless]]


@pytest.fixture
async def console(start_service: StartService) -> AsyncIterator[Browserless]:
    """A console in front of a config service seeded with one OpenAI provider."""
    service = await start_service(AIBRIDGE_OPENAI_KEY=PROVIDER_KEY)
    client = ClientSettings(service.target, None, None, None, token="")
    app = Console(Api(client), session_ttl=3600)
    made = Browserless(app, service, [])
    yield made
    for c in made.clients:
        await c.aclose()
    await app.api.close()
