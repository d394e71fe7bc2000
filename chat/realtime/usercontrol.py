"""Orders to the push processes about one user, sent on that user's own pub/sub channel.

Every push process with a socket of the user is subscribed to their channel already
(`push.hub`), so an order published there reaches exactly the processes that hold their sockets,
at the cost of one PUBLISH (SPUBLISH on a cluster, to the shard of the user's slot). Events on
the same channel are always JSON objects (their frames start with `{`, built by
`chat.realtime.events`), while an order starts with a NUL byte, which no JSON text can: a message
body is escaped inside its event, so no event can pass for an order, and the hub never hands an
order to a socket as a frame.
"""

from __future__ import annotations

import enum
import uuid

from redis.asyncio import Redis

from chat.infra.redisclient import is_cluster
from chat.realtime.eventbus import channel, publish_command

_PREFIX = "\x00control:"


class Order(enum.Enum):
    # The user was deactivated or erased: close every socket of theirs with 4403.
    DEACTIVATED = "deactivated"


def encode(order: Order) -> str:
    return _PREFIX + order.value


def decode(data: str) -> Order | None:
    """The order a published message carries, or None for an event (or anything else)."""
    if not data.startswith(_PREFIX):
        return None
    try:
        return Order(data[len(_PREFIX) :])
    except ValueError:
        return None


async def deactivated(redis: Redis, user_id: uuid.UUID) -> None:
    """Tell every push process to close `user_id`'s sockets with 4403 (the handshake refuses new
    ones from the database's `deactivated_at`, so call this after that write commits)."""
    command = publish_command(is_cluster(redis))
    await redis.execute_command(command, channel(user_id), encode(Order.DEACTIVATED))  # type: ignore[no-untyped-call]
