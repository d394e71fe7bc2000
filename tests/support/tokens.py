"""Access tokens signed with the deployment's real key whose claims are of the wrong type or range:
each must be refused like a forged one (401, or 4401 on the socket), never a 5xx."""

from __future__ import annotations

import time
import uuid
from typing import Any

import jwt

from chat.settings import Settings

ODD_CLAIMS: list[tuple[str, Any]] = [
    ("exp", "soon"),
    ("exp", 1e300),  # past what a timestamp can hold
    ("exp", 10**19),
    ("exp", 10**400),  # not even a float
    ("exp", 1e18),
    ("exp", 253402300800),  # year 10000
    ("exp", [1]),
    ("exp", {"at": 1}),
    ("exp", None),
    ("exp", True),
    ("exp", float("inf")),
    ("exp", float("nan")),
    ("exp", "2000000000"),
    ("iat", "now"),
    ("iat", 1e300),
    ("iat", -1e300),
    ("iat", [1]),
    ("iat", None),
    ("iat", True),
    ("iat", float("nan")),
    ("sub", 123),
    ("sub", [1]),
    ("sub", {"id": 1}),
    ("sub", None),
    ("sub", "not a uuid"),
    ("sub", "x" * 10_000),
    ("type", ["access"]),
    ("type", 1),
    ("type", None),
    ("type", "refresh"),
    ("jti", [1]),
    ("jti", 1),
    ("nbf", "later"),
    ("nbf", 1e300),
]


def signed_with(settings: Settings, claim: str, value: Any, user: uuid.UUID | None = None) -> str:
    """A token the deployment's own key signed, with one claim replaced by `value`."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": str(user or uuid.uuid4()),
        "iat": now,
        "exp": now + 600,
        "jti": uuid.uuid4().hex,
        "type": "access",
    }
    claims[claim] = value
    return jwt.encode(claims, settings.secret_key.get_secret_value(), algorithm=settings.algorithm)


async def new_user(database_url: str) -> uuid.UUID:
    """A user row of its own, for tests that sign tokens themselves: the push handshake and the api
    look the token's user up (a token of no user is refused)."""
    from sqlalchemy import insert
    from sqlalchemy.ext.asyncio import create_async_engine

    from chat.models import User

    user = uuid.uuid4()
    engine = create_async_engine(database_url)
    try:
        async with engine.begin() as conn:
            name = f"t{user.hex[:12]}"
            await conn.execute(
                insert(User).values(
                    id=user, username=name, username_key=name, display_name=name, password_hash="-"
                )
            )
    finally:
        await engine.dispose()
    return user
