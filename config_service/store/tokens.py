"""Principals and their tokens: create (secret shown once), list, revoke, bootstrap, lookup.

Only the SHA-256 of a token is stored. Every generated token carries 256 random bits,
and a bootstrap token from the environment must pass `weak_token_problem`, so an
unsalted hash is no help to an offline guesser. A bridge or proxy token (which reads
plaintext keys, or follows every change) is never minted over the API: only by the
bootstrap settings or `aibridge tokens create --local`, which needs the database itself.

Principals named `env:<role>` belong to the bootstrap tokens of the environment
(AIBRIDGE_ADMIN/BRIDGE/PROXY_TOKEN): at start-up the env token is ensured and any other
live token of that principal is revoked, so rotating an env token retires the old one.
"""

from __future__ import annotations

import itertools
import math
import re
import secrets
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from aibridge.masking import sha256_hex
from config_service.db.models import Principal, Token, utcnow
from config_service.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from config_service.rbac import SYSTEM, Action, Role, Subject, allowed, authorize
from config_service.store.database import Database
from config_service.text import check_text, check_uuid

TOKEN_PREFIX = "aib_"  # noqa: S105 - a prefix, not a secret
_PRINCIPAL_NAME_MAX = 200
DAEMON_ROLES = frozenset({Role.BRIDGE, Role.PROXY})
MIN_TOKEN_LENGTH = 32
MIN_TOKEN_BITS = 128


@dataclass(frozen=True)
class TokenView:
    id: str
    principal_id: str
    principal_name: str
    role: Role
    hint: str
    created_at: datetime
    revoked_at: datetime | None


def new_token_secret() -> str:
    """A random token: 32 bytes of entropy, prefixed so scanners recognise it."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def _spread_bits(symbols: Sequence[object]) -> float:
    """len x log2(distinct symbols): never more than a random string of them carries."""
    distinct = len(set(symbols))
    return len(symbols) * math.log2(distinct) if distinct > 1 else 0.0


# A word: a lowercase run of 3+ letters with a vowel, optionally capitalized (so a camel-
# cased phrase splits into its words). A random string rarely holds long ones.
_WORD = re.compile(r"[A-Z]?[a-z]{2,}")
_VOWEL = re.compile(r"[aeiouy]")
_WORD_LETTER_BITS = 2.0  # English text carries less; a diceware word about 3 per letter


def _alphabet_bits(value: str) -> float:
    """log2 of the alphabet the value draws from: the character classes it uses."""
    size = (
        26 * any(c.islower() for c in value)
        + 26 * any(c.isupper() for c in value)
        + 10 * any(c.isdigit() for c in value)
        + 33 * any(not c.isalnum() for c in value)
    )
    return math.log2(max(size, 2))


def _passphrase_bits(value: str) -> float:
    """The bits of `value` read as words between other characters: a word counts 2 bits
    per letter (plus one when capitalized), a word seen before only log2 of the words
    before it, a separator seen before nothing, any other character the bits of the
    value's alphabet."""
    per_char = _alphabet_bits(value)
    words: list[str] = []
    separators: set[str] = set()
    bits = 0.0

    def others(chunk: str) -> float:
        total = 0.0
        for ch in chunk:
            if ch.isalnum() or ch not in separators:
                total += per_char
                if not ch.isalnum():
                    separators.add(ch)
        return total

    position = 0
    for match in _WORD.finditer(value):
        bits += others(value[position : match.start()])
        position = match.end()
        word = match.group()
        if not _VOWEL.search(word.lower()):
            bits += per_char * len(word)  # not a word: as random as its letters
            continue
        if word.lower() in words:
            bits += math.log2(len(set(words)) + 1)
        else:
            bits += _WORD_LETTER_BITS * len(word) + (0.0 if word.islower() else 1.0)
        words.append(word.lower())
    return bits + others(value[position:])


def token_strength(value: str) -> tuple[float, str]:
    """The estimated bits of a chosen token and the estimate that gave them (the least).

    None of the estimates overstates a random string: length x log2(distinct characters);
    the same over the steps between neighbouring characters (a run such as
    `abcdefghijklmnopqrstuvwxyz012345` has few distinct steps); the bits of its
    zlib-compressed form (a repeated pattern such as `abab...` compresses to almost
    nothing); and the value read as a passphrase (words at 2 bits a letter, a repeated
    word almost nothing), so `correct horse battery staple ...` counts what a word-list
    attack needs, not what its length suggests.
    """
    steps = [ord(b) - ord(a) for a, b in itertools.pairwise(value)]
    compressed = 8 * (len(zlib.compress(value.encode(), 9)) - len(zlib.compress(b"", 9)))
    estimates = {
        "distinct characters": _spread_bits(value),
        "a run of neighbouring characters": _spread_bits(steps),
        "a repeated pattern": float(compressed),
        "dictionary words": _passphrase_bits(value),
    }
    weakest = min(estimates, key=estimates.__getitem__)
    return estimates[weakest], weakest


def weak_token_problem(name: str, value: str) -> str | None:
    """Why a chosen token is too weak to stand in for a generated one, or None.

    The one strength rule for operator-chosen tokens: at least MIN_TOKEN_LENGTH characters
    and MIN_TOKEN_BITS bits by `token_strength`. The message names the variable, the
    length, the bits and the estimate that found them; never the value.
    """
    bits, weakest = token_strength(value)
    if len(value) >= MIN_TOKEN_LENGTH and bits >= MIN_TOKEN_BITS:
        return None
    reason = (
        f"only {len(value)} characters"
        if len(value) < MIN_TOKEN_LENGTH
        else f"about {bits:.0f} bits, counted as {weakest}"
    )
    return (
        f"{name}: too weak ({reason}; at least {MIN_TOKEN_LENGTH} characters and "
        f"{MIN_TOKEN_BITS} bits are required, and words, runs and repeats count little): "
        "generate one with `openssl rand -base64 32`"
    )


def _hint(secret: str) -> str:
    return secret[: len(TOKEN_PREFIX) + 4]


def _view(token: Token, principal: Principal) -> TokenView:
    return TokenView(
        id=token.id,
        principal_id=principal.id,
        principal_name=principal.name,
        role=Role(principal.role),
        hint=token.hint,
        created_at=token.created_at,
        revoked_at=token.revoked_at,
    )


def _principal(session: Session, name: str, role: Role) -> Principal:
    principal = session.execute(
        select(Principal).where(Principal.name == name)
    ).scalar_one_or_none()
    if principal is None:
        principal = Principal(name=name, role=role.value, created_at=utcnow())
        session.add(principal)
        session.flush()
    elif principal.role != role.value:
        raise FailedPrecondition(
            f"principal {name!r} has role {principal.role}, not {role.value}; "
            "a principal has exactly one role: use another principal name"
        )
    return principal


def _insert_token(session: Session, principal: Principal, secret: str) -> Token:
    token = Token(
        principal_id=principal.id,
        token_hash=sha256_hex(secret),
        hint=_hint(secret),
        created_at=utcnow(),
    )
    session.add(token)
    session.flush()
    return token


def create_token(
    db: Database, subject: Subject, principal_name: str, role: Role
) -> tuple[TokenView, str]:
    """Create a token (and its principal when new); return it with the secret, shown once."""
    authorize(subject, Action.MANAGE_TOKENS)
    name = check_text("principal_name", principal_name, _PRINCIPAL_NAME_MAX).strip()
    if not name or name != principal_name:
        raise InvalidArgument(
            "principal_name", f"must be 1-{_PRINCIPAL_NAME_MAX} characters without padding"
        )
    if name.startswith("env:") and not subject.is_system:
        raise InvalidArgument("principal_name", "names starting with 'env:' are reserved")
    if role in DAEMON_ROLES and not allowed(subject, Action.MINT_DAEMON_TOKENS):
        raise PermissionDenied(
            f"{role.value} tokens are not created over the API (a bridge token reads every "
            f"plaintext provider key): set AIBRIDGE_{role.value.upper()}_TOKEN on the config "
            f"service, or run `aibridge tokens create --local --role {role.value}` where the "
            "database is reachable (audited)"
        )
    secret = new_token_secret()
    with db.write() as session:
        principal = _principal(session, name, role)
        token = _insert_token(session, principal, secret)
        revision = db.bump_revision(session)
        view = _view(token, principal)
        db.audit(
            session,
            subject,
            "token.create",
            "token",
            token.id,
            name,
            revision,
            after={"principal": name, "role": role.value, "hint": token.hint},
        )
    return view, secret


def list_tokens(db: Database, subject: Subject, include_revoked: bool = False) -> list[TokenView]:
    authorize(subject, Action.MANAGE_TOKENS)
    with db.read() as session:
        query = select(Token, Principal).join(Principal)
        if not include_revoked:
            query = query.where(Token.revoked_at.is_(None))
        views = [_view(t, p) for t, p in session.execute(query).all()]
    # Sorted here, by code point: SQL ORDER BY would follow the database's collation.
    return sorted(views, key=lambda v: (v.principal_name, v.created_at, v.id))


def revoke_token(db: Database, subject: Subject, token_id: str) -> TokenView:
    """Revoke a token; revoking an already revoked token is a no-op returning it."""
    authorize(subject, Action.MANAGE_TOKENS)
    token_id = check_uuid("id", token_id, "a token id (a UUID, as `aibridge tokens list` shows)")
    with db.write() as session:
        row = session.execute(
            select(Token, Principal).join(Principal).where(Token.id == token_id)
        ).one_or_none()
        if row is None:  # the caller's value is not echoed: it may be a secret pasted here
            raise NotFound("token not found: no token has that id")
        token, principal = row
        if token.revoked_at is None:
            token.revoked_at = utcnow()
            revision = db.bump_revision(session)
            db.audit(
                session,
                subject,
                "token.revoke",
                "token",
                token.id,
                principal.name,
                revision,
                before={"hint": token.hint, "revoked": False},
                after={"hint": token.hint, "revoked": True},
            )
        return _view(token, principal)


def lookup(db: Database, token_hash: str) -> Subject | None:
    """The subject owning a live token with this hash, or None."""
    with db.read() as session:
        row = session.execute(
            select(Token, Principal)
            .join(Principal)
            .where(Token.token_hash == token_hash, Token.revoked_at.is_(None))
        ).one_or_none()
    if row is None:
        return None
    token, principal = row
    return Subject(principal.id, principal.name, Role(principal.role), token.id)


BOOTSTRAP_PRINCIPALS = {Role.OWNER: "env:admin", Role.BRIDGE: "env:bridge", Role.PROXY: "env:proxy"}


def bootstrap(db: Database, tokens: dict[Role, str]) -> list[str]:
    """Ensure the env bootstrap tokens exist; return a log line per change (no secrets)."""
    changes: list[str] = []
    wanted = {role: secret for role, secret in tokens.items() if secret}
    if not wanted:
        return changes
    try:
        with db.write() as session:
            touched = False
            for role, secret in wanted.items():
                principal = _principal(session, BOOTSTRAP_PRINCIPALS[role], role)
                digest = sha256_hex(secret)
                existing = session.execute(
                    select(Token).where(Token.token_hash == digest)
                ).scalar_one_or_none()
                if existing is not None and existing.principal_id != principal.id:
                    raise FailedPrecondition(
                        f"the {role.value} bootstrap token is already used by another principal"
                    )
                if existing is None:
                    _insert_token(session, principal, secret)
                    changes.append(f"created {role.value} bootstrap token for {principal.name}")
                    touched = True
                elif existing.revoked_at is not None:
                    changes.append(
                        f"the {role.value} bootstrap token was revoked; it stays revoked "
                        f"(set a new AIBRIDGE_*_TOKEN to replace it)"
                    )
                others = session.execute(
                    select(Token).where(
                        Token.principal_id == principal.id,
                        Token.token_hash != digest,
                        Token.revoked_at.is_(None),
                    )
                ).scalars()
                for old in others:
                    old.revoked_at = utcnow()
                    changes.append(f"revoked the previous {role.value} bootstrap token {old.hint}")
                    touched = True
            if touched:
                revision = db.bump_revision(session)
                db.audit(
                    session,
                    SYSTEM,
                    "token.bootstrap",
                    "token",
                    "-",
                    "env",
                    revision,
                    after={"changes": changes},
                )
    except IntegrityError as exc:  # two replicas bootstrapping at once: the other won
        raise FailedPrecondition("bootstrap tokens changed concurrently; restart") from exc
    return changes
