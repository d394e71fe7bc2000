"""Server keys at the use-case level: only a hash is stored, a revoked key is refused on its next
call, and `last_used_at` is written at most once a minute per key and process, not per call."""

from __future__ import annotations

import hashlib

import pytest
from sqlalchemy import select

from api.deps import Deps
from chat.errors import Conflict, NotFound, Unauthorized
from chat.models import ServerKey
from chat.usecases import server_keys
from chat.usecases.server_keys import ServerKeys


async def stored(deps: Deps, name: str) -> ServerKey:
    async with deps.sessions() as session:
        row: ServerKey = (await session.scalars(select(ServerKey).where(ServerKey.name == name))).one()
    return row


async def test_a_key_is_kept_as_its_sha256_only_and_names_are_unique(deps: Deps, unique: str) -> None:
    key = await server_keys.create(deps.sessions, f"k-{unique}")
    row = await stored(deps, f"k-{unique}")
    assert row.key_hash == hashlib.sha256(key.encode()).hexdigest() and key not in row.key_hash
    with pytest.raises(Conflict):
        await server_keys.create(deps.sessions, f"k-{unique}")
    assert await ServerKeys(deps.sessions).verify(key) == f"k-{unique}"
    with pytest.raises(Unauthorized):
        await ServerKeys(deps.sessions).verify(key[:-1])


async def test_last_used_at_is_written_once_a_minute_per_process(deps: Deps, unique: str) -> None:
    key = await server_keys.create(deps.sessions, f"u-{unique}")
    assert (await stored(deps, f"u-{unique}")).last_used_at is None
    process = ServerKeys(deps.sessions)
    await process.verify(key)
    first = (await stored(deps, f"u-{unique}")).last_used_at
    assert first is not None
    for _ in range(5):
        await process.verify(key)
    assert (await stored(deps, f"u-{unique}")).last_used_at == first  # no write per call
    await ServerKeys(deps.sessions).verify(key)  # another process notes its own first use
    later = (await stored(deps, f"u-{unique}")).last_used_at
    assert later is not None and later > first


async def test_a_revoked_key_is_refused_on_its_next_call(deps: Deps, unique: str) -> None:
    key = await server_keys.create(deps.sessions, f"r-{unique}")
    process = ServerKeys(deps.sessions)
    await process.verify(key)
    await server_keys.revoke(deps.sessions, f"r-{unique}")
    with pytest.raises(Unauthorized):
        await process.verify(key)
    with pytest.raises(NotFound):
        await server_keys.revoke(deps.sessions, f"r-{unique}")
    [info] = [k for k in await server_keys.list_keys(deps.sessions) if k.name == f"r-{unique}"]
    assert info.revoked_at is not None and info.last_used_at is not None
