"""A token signed with the real key but with claims of the wrong type or range is a 401, never a 500."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from api.deps import Deps
from chat.errors import Unauthorized
from chat.identity.security import Tokens
from tests.support import ApiClient, assert_problem
from tests.support.tokens import ODD_CLAIMS, signed_with


async def test_every_odd_claim_is_401_on_rest(api: ApiClient, deps: Deps) -> None:
    alice = await api.user()
    answers: dict[str, int] = {}
    for claim, value in ODD_CLAIMS:
        token = signed_with(deps.settings, claim, value, user=uuid.UUID(alice.id))
        result = await api.get("/users/me", headers={"Authorization": f"Bearer {token}"})
        answers[f"{claim}={value!r:.30}"] = result.status_code
        if result.status_code == 401:
            assert_problem(result, 401)
            assert result.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    assert set(answers.values()) == {401}, answers


@pytest.mark.parametrize(("claim", "value"), ODD_CLAIMS, ids=[f"{c}={v!r:.20}" for c, v in ODD_CLAIMS])
def test_tokens_refuse_each_odd_claim(claim: str, value: Any, deps: Deps) -> None:
    with pytest.raises(Unauthorized):
        Tokens(deps.settings).verify_access(signed_with(deps.settings, claim, value))
