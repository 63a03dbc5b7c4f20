"""The MITM CA: generated once with a private key file, leaves issued per host and cached."""

from __future__ import annotations

import asyncio
import ssl
import stat
from pathlib import Path

import pytest
from cryptography import x509

from data_plane.errors import CAError
from data_plane.proxy.ca import CertificateAuthority, LeafCache


def test_generated_once_with_a_private_key(tmp_path: Path) -> None:
    """Absent files are generated (key mode 0600) and loaded unchanged on the next start."""
    cert, key = tmp_path / "data" / "ca.pem", tmp_path / "data" / "ca-key.pem"
    first = CertificateAuthority.load_or_create(cert, key)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    again = CertificateAuthority.load_or_create(cert, key)
    assert again.pem == first.pem == cert.read_bytes()
    basic = first.cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert basic.ca


def test_half_a_pair_is_an_error(tmp_path: Path) -> None:
    """A certificate without its key (or the reverse) is refused, never overwritten."""
    cert, key = tmp_path / "ca.pem", tmp_path / "ca-key.pem"
    cert.write_text("x")
    with pytest.raises(CAError, match="give both or none"):
        CertificateAuthority.load_or_create(cert, key)
    assert cert.read_text() == "x"


def test_leaf_verifies_for_names_and_addresses(tmp_path: Path) -> None:
    """A leaf carries the host as DNS or IP SAN and chains to the CA."""
    ca = CertificateAuthority.load_or_create(tmp_path / "c.pem", tmp_path / "k.pem")
    for host, kind in (("api.example.com", x509.DNSName), ("127.0.0.1", x509.IPAddress)):
        bundle, _expires = ca.issue(host)
        leaf = x509.load_pem_x509_certificate(bundle)
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert [str(v) for v in san.get_values_for_type(kind)] == [host]  # type: ignore[arg-type]
        leaf.verify_directly_issued_by(ca.cert)


async def test_leaf_cache_issues_once_per_host(tmp_path: Path) -> None:
    """Concurrent first uses of a host share one issuance; other hosts get their own."""
    ca = CertificateAuthority.load_or_create(tmp_path / "c.pem", tmp_path / "k.pem")
    cache = LeafCache(ca)
    contexts = await asyncio.gather(*(cache.context("API.example.com") for _ in range(5)))
    assert all(c is contexts[0] for c in contexts)
    assert await cache.context("api.example.com") is contexts[0]
    assert cache.issued == 1
    other = await cache.context("other.example.com")
    assert other is not contexts[0] and cache.issued == 2
    assert isinstance(other, ssl.SSLContext)
