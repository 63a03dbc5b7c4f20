"""The MITM certificate authority and the per-host leaf certificates it signs.

The CA is loaded from AIBRIDGE_PROXY_CA_CERT_FILE/_KEY_FILE, or generated there (in the
data directory by default) on first start: both files are created with mode 0600 (in a
0700 directory when it is created) and never overwritten. Leaf certificates are ECDSA
P-256 (cheap to generate and to handshake), issued on first use of a host and kept in
memory as ready `SSLContext`s; they are reissued a day before they expire. Only
intercepted hosts get one, so the cache is bounded by the number of providers (and
capped anyway).
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import os
import ssl
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from aibridge.files import write_private
from aibridge.logs import get_logger
from data_plane.errors import CAError

log = get_logger(__name__)

CA_NAME = "AI Bridge Proxy CA"
CA_DAYS = 3650
LEAF_DAYS = 30
RENEW_BEFORE = 86400.0  # seconds
MAX_LEAVES = 1024
# Certificates start an hour back: a client whose clock is a little behind accepts them.
HOUR = datetime.timedelta(hours=1)
SigningKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


# A CA signs certificates and revocation lists, nothing else.
CA_KEY_USAGE = x509.KeyUsage(
    digital_signature=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=True,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)


def builder(
    subject: x509.Name,
    issuer: x509.Name,
    key: SigningKey,
    not_before: datetime.datetime,
    not_after: datetime.datetime,
) -> x509.CertificateBuilder:
    """A certificate of `key` for `subject`, signed by `issuer`, valid from `not_before`
    to `not_after`, with a random serial number; extensions are the caller's."""
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )


def private_pem(key: SigningKey) -> bytes:
    """The unencrypted PKCS#8 PEM of a private key."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@dataclass(frozen=True)
class CertificateAuthority:
    cert: x509.Certificate
    key: SigningKey

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @classmethod
    def load_or_create(cls, cert_path: Path, key_path: Path) -> CertificateAuthority:
        """Load the CA pair, or generate it when neither file exists (blocking)."""
        have_cert, have_key = cert_path.is_file(), key_path.is_file()
        if have_cert != have_key:
            present, missing = (cert_path, key_path) if have_cert else (key_path, cert_path)
            raise CAError(f"proxy CA: {present} exists but {missing} does not; give both or none")
        if not have_cert:
            return cls._create(cert_path, key_path)
        try:
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        except (OSError, ValueError, TypeError) as exc:
            raise CAError(f"proxy CA: cannot load {cert_path} / {key_path}: {exc}") from exc
        if not isinstance(key, SigningKey):
            raise CAError("proxy CA: the key must be an EC or RSA private key")
        return cls(cert, key)

    @classmethod
    def _create(cls, cert_path: Path, key_path: Path) -> CertificateAuthority:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CA_NAME)])
        now = _now()
        cert = (
            builder(name, name, key, now - HOUR, now + datetime.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(CA_KEY_USAGE, critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )
        # O_EXCL: never overwrite a CA someone else just created (or an operator's file).
        write_private(key_path, private_pem(key), os.O_EXCL)
        write_private(cert_path, cert.public_bytes(serialization.Encoding.PEM), os.O_EXCL)
        log.info("generated the proxy CA", cert_file=str(cert_path), key_file=str(key_path))
        return cls(cert, key)

    def issue(self, host: str) -> tuple[bytes, float]:
        """A PEM bundle (leaf certificate + its key) for host, and its expiry (unix time)."""
        key = ec.generate_private_key(ec.SECP256R1())
        try:
            san: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
        except ValueError:
            san = x509.DNSName(host)
        # A CN is limited to 64 characters; clients match on the SAN anyway.
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host[:64])])
        now = _now()
        expires = now + datetime.timedelta(days=LEAF_DAYS)
        cert = (
            builder(subject, self.cert.subject, key, now - HOUR, expires)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName([san]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), False
            )
            .sign(self.key, hashes.SHA256())
        )
        return cert.public_bytes(serialization.Encoding.PEM) + private_pem(key), expires.timestamp()


def server_context(bundle: bytes) -> ssl.SSLContext:
    """A TLS server context for one leaf (blocking: `load_cert_chain` only reads files)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(["http/1.1"])  # h11 speaks HTTP/1.1 only; tell h2 clients
    with tempfile.TemporaryDirectory(prefix="aibridge-leaf-") as tmp:  # mode 0700
        path = Path(tmp) / "leaf.pem"
        write_private(path, bundle, os.O_EXCL)
        ctx.load_cert_chain(path)
    return ctx


class LeafCache:
    """Per-host server contexts, issued once (concurrent first uses share the work)."""

    def __init__(self, ca: CertificateAuthority) -> None:
        self.ca = ca
        self._ready: dict[str, tuple[float, ssl.SSLContext]] = {}
        self._pending: dict[str, asyncio.Future[ssl.SSLContext]] = {}
        self.issued = 0

    def _make(self, host: str) -> tuple[float, ssl.SSLContext]:
        bundle, expires = self.ca.issue(host)
        return expires, server_context(bundle)

    async def context(self, host: str) -> ssl.SSLContext:
        host = host.lower()
        entry = self._ready.get(host)
        if entry is not None and entry[0] - time.time() > RENEW_BEFORE:
            return entry[1]
        pending = self._pending.get(host)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[ssl.SSLContext] = asyncio.get_running_loop().create_future()
        self._pending[host] = future
        try:
            # Key generation and signing take about a millisecond: keep them off the loop.
            expires, ctx = await asyncio.to_thread(self._make, host)
        except BaseException as exc:
            if isinstance(exc, Exception):
                future.set_exception(exc)
                future.exception()  # retrieved: no "never retrieved" warning when unshared
            else:
                future.cancel()
            raise
        finally:
            del self._pending[host]
        if len(self._ready) >= MAX_LEAVES:
            self._ready.pop(next(iter(self._ready)))
        self._ready[host] = (expires, ctx)
        self.issued += 1
        future.set_result(ctx)
        return ctx
