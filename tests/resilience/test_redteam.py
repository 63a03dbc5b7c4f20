"""Red-team findings on issue #11 as merged: real processes on loopback.

Each test reproduces one defect found by attacking the merged result. Those whose fix is
not small are marked `xfail(strict=True)`: they fail today, and turn into an unexpected
pass (a failure) once fixed, so the mark has to go with the fix.
"""

from __future__ import annotations

import asyncio
import base64
import sqlite3
from pathlib import Path

import grpc
import grpc.aio
import httpx

from aibridge.config.v1 import config_service_pb2 as cs
from aibridge.config.v1 import provider_pb2 as pb
from aibridge.config.v1 import token_admin_service_pb2 as tpb
from aibridge.config.v1 import token_pb2
from tests.fixtures.upstream import FakeUpstream
from tests.fixtures.waits import eventually
from tests.resilience.harness import (
    ADMIN_MD,
    BRIDGE_MD,
    Admin,
    Procs,
    proxy_address,
    proxy_with_member,
)
from tests.resilience.test_dos_bridge import start_stack


def _copy_database(source: Path, target: Path) -> None:
    """SQLite's online backup: what a restore from a backup file does to the live database."""
    with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
        src.backup(dst)


async def test_revocation_after_a_database_restore_takes_effect(
    procs: Procs, tmp_path: Path
) -> None:
    """After the database is restored to an older backup, a token revoked there is refused at once and leaves the data-plane snapshot."""
    database = tmp_path / "aibridge.db"
    service = await asyncio.to_thread(procs.config_service, f"sqlite:///{database}")
    admin = Admin(str(service.ready["target"]))
    try:
        owner = await admin.create_token("second-owner", token_pb2.ROLE_OWNER)
        await admin.create_token("alice")
        _copy_database(database, tmp_path / "backup.db")
        for i in range(3):  # the revision moves on past the backup's
            await admin.create_provider(
                f"p{i}",
                pb.PROVIDER_TYPE_OPENAI,
                "https://api.openai.com/v1",
                [f"sk-{i}" + "a" * 24],
            )
        _copy_database(tmp_path / "backup.db", database)  # the restore
        listed = await admin.tokens.ListTokens(tpb.ListTokensRequest(), metadata=ADMIN_MD)
        for token in listed.tokens:
            if token.principal_name in ("second-owner", "alice"):
                await admin.tokens.RevokeToken(
                    tpb.RevokeTokenRequest(id=token.id), metadata=ADMIN_MD
                )
        owner_md = (("authorization", f"Bearer {owner}"),)

        async def owner_refused() -> bool:
            try:
                await admin.tokens.ListTokens(tpb.ListTokensRequest(), metadata=owner_md)
            except grpc.aio.AioRpcError as exc:
                return exc.code() == grpc.StatusCode.UNAUTHENTICATED
            return False

        await eventually(owner_refused, within=5)
        snapshot = await admin.snapshot(BRIDGE_MD)
        assert [t.principal_name for t in snapshot.gateway_tokens] == []
    finally:
        await admin.close()


async def test_one_member_cannot_hold_the_whole_body_budget(
    procs: Procs, upstream: FakeUpstream, sqlite_url: str
) -> None:
    """Four connections of one member that declare 32 MiB bodies and send none do not lock every other client out of the bridge."""
    stack = await start_stack(procs, upstream, sqlite_url, 1024)
    held = []
    for _ in range(4):  # 4 x 32 MiB: the default 128 MiB budget, reserved as declared
        reader, writer = await asyncio.open_connection(stack.host, stack.port)
        writer.write(
            b"POST /dos/v1/chat/completions HTTP/1.1\r\nhost: bridge\r\n"
            + f"authorization: Bearer {stack.member}\r\ncontent-length: {32 * 2**20}\r\n\r\n".encode()
        )
        await writer.drain()
        held.append((reader, writer))
    try:
        async with httpx.AsyncClient(timeout=10) as http:

            async def served() -> bool:
                answer = await http.post(
                    f"http://{stack.host}:{stack.port}/dos/v1/chat/completions",
                    headers={"authorization": f"Bearer {stack.member}"},
                    json={"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]},
                )
                return answer.status_code == 200

            # Before: 503 body_buffer_full for as long as the four sockets stay open.
            await eventually(served, within=15, every=0.5)
    finally:
        for _, writer in held:
            writer.close()


async def test_proxy_request_bodies_are_bounded_in_total(
    procs: Procs, upstream: FakeUpstream, sqlite_url: str
) -> None:
    """Sixteen authenticated 31 MiB uploads held one byte short of complete grow the proxy's RSS by less than 256 MiB (a 128 MiB budget's worth and slack)."""
    proxy, token = await proxy_with_member(procs, sqlite_url)
    host, port = proxy_address(proxy).rsplit(":", 1)
    auth = base64.b64encode(f"u:{token}".encode()).decode()
    baseline = proxy.rss_kib()
    size = 31 * 2**20 + 1  # the last byte is never sent
    chunk = b" " * 2**20

    async def upload() -> asyncio.StreamWriter:
        _reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(
            f"POST {upstream.url}/v1/chat/completions HTTP/1.1\r\nhost: upstream\r\n"
            f"proxy-authorization: Basic {auth}\r\ncontent-length: {size}\r\n\r\n".encode()
        )
        try:
            for _ in range(size // len(chunk)):
                writer.write(chunk)
                await writer.drain()
        except ConnectionError:
            pass  # refused (413/503) and closed: what a bounded proxy may do
        return writer

    writers = await asyncio.gather(*(upload() for _ in range(16)))
    try:
        peak = 0

        def settled() -> bool:
            nonlocal peak
            previous, peak = peak, proxy.rss_kib()
            return peak == previous

        await eventually(settled, within=30, every=1.0)
        grown_mib = (peak - baseline) / 1024
        print(f"proxy body bombs: RSS +{grown_mib:.0f} MiB for 16 x 31 MiB held")
        assert grown_mib < 256, f"proxy RSS grew {grown_mib:.0f} MiB"
    finally:
        for writer in writers:
            writer.close()


async def test_reports_within_the_bounds_do_not_break_list_subscribers(
    procs: Procs, sqlite_url: str
) -> None:
    """Three subscribers reporting as much as ReportStatus accepts leave ListSubscribers answering with a default client."""
    service = await asyncio.to_thread(procs.config_service, sqlite_url)
    admin = Admin(str(service.ready["target"]))
    streams = [
        admin.config.WatchProviders(cs.WatchProvidersRequest(node_id=f"n{i}"), metadata=BRIDGE_MD)
        for i in range(3)
    ]
    try:
        for stream in streams:
            await stream.read()  # the first snapshot: the stream is registered
        errors = [cs.ProviderError(provider_name=f"p{i}", message="e" * 2000) for i in range(1000)]
        for i in range(3):
            await admin.config.ReportStatus(
                cs.ReportStatusRequest(node_id=f"n{i}", version="1", applied=False, errors=errors),
                metadata=BRIDGE_MD,
                timeout=10,
            )
        assert set(await admin.subscribers()) == {"n0", "n1", "n2"}
    finally:
        for stream in streams:
            stream.cancel()
        await admin.close()
