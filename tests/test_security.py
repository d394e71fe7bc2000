from __future__ import annotations

import uuid

import pytest

from chat.errors import Unauthorized
from chat.security import Passwords, Tokens, hash_refresh_token
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
