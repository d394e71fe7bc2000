"""The hub when its pub/sub connection is lost: everyone restarts, and whoever comes back is live."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from redis import exceptions as redis_errors

from chat.infra.redisclient import create_redis
from chat.realtime.eventbus import channel
from push.hub import Hub
from tests.support.fakesocket import Recorder
from tests.support.settings import make_settings


async def test_a_socket_back_before_the_others_left_is_subscribed_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    redis = create_redis(make_settings(redis_url=f"memory://{uuid.uuid4().hex}"))
    hub = Hub(redis)
    user = uuid.uuid4().hex
    phone, laptop = Recorder(user), Recorder(user)
    await hub.join(phone)
    await hub.join(laptop)
    assert hub._pubsub is not None

    async def lost(*args: Any, **kwargs: Any) -> Any:
        raise redis_errors.ConnectionError("Connection closed by server.")

    monkeypatch.setattr(hub._pubsub, "get_message", lost)
    async with asyncio.timeout(3):
        await phone.restarted.wait()
        await laptop.restarted.wait()
    # The phone reconnects at once; the laptop's old session has not left the hub yet. The phone's
    # new socket must still get a subscription on the new pub/sub connection, or it hears nothing.
    again = Recorder(user)
    await asyncio.wait_for(hub.join(again), 3)
    await redis.publish(channel(user), '{"type":"typing"}')
    async with asyncio.timeout(3):
        while not again.frames:
            await asyncio.sleep(0.01)
    assert again.frames == ['{"type":"typing"}']
    await hub.leave(laptop)  # late leaves of the old sessions do not unsubscribe the new one
    await hub.leave(phone)
    await redis.publish(channel(user), '{"type":"typing"}')
    async with asyncio.timeout(3):
        while len(again.frames) < 2:
            await asyncio.sleep(0.01)
    await hub.close()
    await redis.aclose()
