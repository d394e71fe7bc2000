"""Orders on a user's channel (`chat.realtime.usercontrol`): the hub acts on them and never relays
them, and no event, whatever its message body says, passes for one."""

from __future__ import annotations

import asyncio
import uuid

from chat.infra.redisclient import create_redis
from chat.realtime import usercontrol
from chat.realtime.eventbus import RedisPublisher
from push.hub import Hub
from tests.support.messages import message_created
from tests.support.settings import make_settings


class Recorder:
    def __init__(self, user_id: str) -> None:
        self.user_id = user_id
        self.frames: list[str] = []
        self.closed = asyncio.Event()

    def offer(self, frame: str) -> None:
        self.frames.append(frame)

    def restart(self) -> None:
        raise AssertionError("not restarted")

    def deactivated(self) -> None:
        self.closed.set()


def test_an_order_reads_back_and_nothing_else_does() -> None:
    order = usercontrol.encode(usercontrol.Order.DEACTIVATED)
    assert usercontrol.decode(order) is usercontrol.Order.DEACTIVATED
    for other in ('{"type":"typing"}', "deactivated", "\x00control:", "\x00control:nope", ""):
        assert usercontrol.decode(other) is None


async def test_a_body_spelling_an_order_is_an_event_and_the_order_closes_only_its_user() -> None:
    redis = create_redis(make_settings(redis_url=f"memory://{uuid.uuid4().hex}"))
    hub = Hub(redis)
    bob, alice = uuid.uuid4(), uuid.uuid4()
    phone, laptop, other = Recorder(str(bob)), Recorder(str(bob)), Recorder(str(alice))
    for subscriber in (phone, laptop, other):
        await hub.join(subscriber)
    try:
        forged = message_created(alice, 1, usercontrol.encode(usercontrol.Order.DEACTIVATED))
        await RedisPublisher(redis, stream_maxlen=100).publish(forged, [bob])
        await usercontrol.deactivated(redis, bob)
        async with asyncio.timeout(3):
            await phone.closed.wait()
            await laptop.closed.wait()
        # The event arrived as a frame (before the order), and the order itself as none.
        for socket in (phone, laptop):
            [frame] = socket.frames
            assert frame.startswith('{"event_id":') and "control:deactivated" in frame
        assert not other.closed.is_set() and not other.frames
    finally:
        await hub.close()
        await redis.aclose()
