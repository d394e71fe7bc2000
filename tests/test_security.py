from __future__ import annotations

import uuid

import pytest

from chat.errors import Unauthorized
from chat.identity.security import Passwords, Tokens, hash_refresh_token
from tests.support.clock import Clock
from tests.support.settings import make_settings


def test_passwords_are_argon2id_and_verify() -> None:
    passwords = Passwords(make_settings())
    hashed = passwords.hash("correct horse")
    assert hashed.startswith("$argon2id$")
    assert passwords.verify(hashed, "correct horse")
    assert not passwords.verify(hashed, "wrong horse")
    assert not passwords.verify(None, "correct horse")  # unknown user: same work, always false
    assert not passwords.verify("not a hash", "x")


def test_tokens_round_trip_and_reject_others() -> None:
    settings = make_settings()
    tokens = Tokens(settings)
    user = uuid.uuid4()
    assert tokens.verify_access(tokens.issue_access(user)).user_id == user
    other = Tokens(make_settings(secret_key="another-secret-" + "z" * 40))
    with pytest.raises(Unauthorized):
        other.verify_access(tokens.issue_access(user))
    for bad in (None, "", "a.b.c", "x" * 40):
        with pytest.raises(Unauthorized):
            tokens.verify_access(bad)


def test_refresh_tokens_are_stored_hashed() -> None:
    assert len(hash_refresh_token("abc")) == 64 and hash_refresh_token("abc") != "abc"


def test_a_remembered_token_still_expires_and_the_memory_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    from datetime import UTC, datetime, timedelta

    import jwt.api_jwt

    import chat.identity.security

    # The memory's clock and PyJWT's, moved forward past the expiry instead of waited for.
    clock = Clock(monkeypatch)
    clock.patch_time(chat.identity.security)
    clock.patch_datetime(jwt.api_jwt)
    tokens = Tokens(make_settings())
    user = uuid.uuid4()
    # Expires within about a second; verified twice, so remembered.
    token = tokens.issue_access(user, now=datetime.now(UTC) - tokens.access_ttl + timedelta(seconds=1))
    assert tokens.verify_access(token).user_id == user
    assert tokens.verify_access(token).user_id == user
    expires = tokens.verify_access(token).expires_at.timestamp()
    clock.advance(max(0.0, expires - clock.time()) + 0.05)
    with pytest.raises(Unauthorized, match="expired"):
        tokens.verify_access(token)

    monkeypatch.setattr(chat.identity.security, "VERIFIED_TOKENS", 3)
    issued = [tokens.issue_access(uuid.uuid4()) for _ in range(5)]
    for each in issued:
        tokens.verify_access(each)
    assert list(tokens._verified) == issued[-3:]
