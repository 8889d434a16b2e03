"""API tokens: `lpt_` + 32 random bytes (urlsafe base64). Only the sha256 of a token is
stored; tokens are long random secrets, so a fast hash is enough (no password stretching).

Scopes are `ACTION:NAME`, ACTION in publish/yank/admin, NAME a canonical name or `*`.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from .errors import bad_request, forbidden, unauthorized
from .models import Token, User

TOKEN_PREFIX = "lpt_"
ACTIONS = ("publish", "yank", "admin")
_SCOPE = re.compile(r"(publish|yank|admin):(\*|[a-z][a-z0-9-]{0,63})\Z")


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def parse_scopes(scopes: list[str]) -> list[str]:
    out = []
    for scope in scopes:
        if not isinstance(scope, str) or not _SCOPE.match(scope):
            raise bad_request("invalid_scope", f"scope `{str(scope)[:80]}` is not `publish|yank|admin:NAME` (NAME canonical or `*`)")
        out.append(scope)
    if not out:
        raise bad_request("invalid_scope", "a token needs at least one scope")
    return sorted(set(out))


@dataclass(frozen=True)
class Principal:
    user_id: int
    user: str
    token_id: int
    scopes: tuple[str, ...]

    def allows(self, action: str, canonical: str) -> bool:
        return f"{action}:{canonical}" in self.scopes or f"{action}:*" in self.scopes

    def require(self, action: str, canonical: str) -> None:
        if not self.allows(action, canonical):
            raise forbidden(f"token lacks scope `{action}:{canonical}`")

    def covers(self, scope: str) -> bool:
        action, name = scope.split(":", 1)
        return f"{action}:*" in self.scopes or (name != "*" and scope in self.scopes)


def parse_bearer(header: str | None) -> str:
    if not header:
        raise unauthorized()
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip().startswith(TOKEN_PREFIX):
        raise unauthorized("the `Authorization` header must be `Bearer lpt_…`")
    return token.strip()


def authenticate(session: Session, header: str | None) -> Principal:
    token = parse_bearer(header)
    row = session.execute(
        select(Token, User).join(User, Token.user_id == User.id).where(Token.token_hash == hash_token(token))
    ).first()
    if row is None or row.Token.revoked_at is not None:
        raise unauthorized("the API token is unknown or revoked")
    return Principal(row.User.id, row.User.name, row.Token.id, tuple(row.Token.scopes.split()))


def create_user(session: Session, name: str) -> User:
    from llmpatch.manifest import NAME_PATTERN

    if not NAME_PATTERN.match(name):
        raise bad_request("invalid_name", f"user name `{name[:80]}` must be 1-64 ASCII letters, digits, `-` or `_`")
    user = User(name=name)
    session.add(user)
    session.flush()
    return user


def create_token(session: Session, user: User, scopes: list[str], description: str = "") -> tuple[Token, str]:
    secret = new_token()
    token = Token(user_id=user.id, token_hash=hash_token(secret), scopes=" ".join(parse_scopes(scopes)), description=description)
    session.add(token)
    session.flush()
    return token, secret
