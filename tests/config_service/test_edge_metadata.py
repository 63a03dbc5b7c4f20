"""Metadata no gRPC client library sends, on a raw HTTP/2 connection to a real config service."""

from __future__ import annotations

import socket
import time

import h2.config
import h2.connection
import h2.events

from tests.fixtures.services import StartProcess

# Bytes of a token that are not UTF-8: a client's mistake, or an attacker's.
NOT_UTF8_TOKEN = b"Bearer leaked-SECRET-\xff\xfe-0123456789"


def grpc_status(port: int, headers: list[tuple[bytes, bytes]]) -> bytes:
    """The grpc-status a unary call with `headers` (and an empty message) is answered."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        conn = h2.connection.H2Connection(
            h2.config.H2Configuration(
                client_side=True, header_encoding=None, validate_outbound_headers=False
            )
        )
        conn.initiate_connection()
        stream = conn.get_next_available_stream_id()
        conn.send_headers(
            stream,
            [
                (b":method", b"POST"),
                (b":scheme", b"http"),
                (b":path", b"/aibridge.config.v1.ConfigService/GetProviderSnapshot"),
                (b":authority", b"localhost"),
                (b"content-type", b"application/grpc"),
                (b"te", b"trailers"),
                *headers,
            ],
        )
        conn.send_data(stream, b"\x00\x00\x00\x00\x00", end_stream=True)
        sock.sendall(conn.data_to_send())
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            data = sock.recv(65536)
            assert data, "closed without an answer"
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.TrailersReceived | h2.events.ResponseReceived):
                    found = dict(event.headers).get(b"grpc-status")
                    if found is not None:
                        return found
            sock.sendall(conn.data_to_send())
    raise AssertionError("no grpc-status within 5 s")


def test_a_token_that_is_not_utf8_is_refused_and_never_logged(
    start_process: StartProcess,
) -> None:
    """An authorization value that is not UTF-8 is UNAUTHENTICATED, every time, and neither its bytes nor a traceback reach the log (grpcio logs the raw value)."""
    proc = start_process()
    for _ in range(3):
        assert grpc_status(proc.port, [(b"authorization", NOT_UTF8_TOKEN)]) == b"16"
    proc.stop()
    output = "\n".join(proc.lines)
    assert "leaked-SECRET" not in output
    assert "Traceback" not in output
