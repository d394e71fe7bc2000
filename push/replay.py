"""A reconnecting client's replay: everything after its `last_event_id`, then `ready`.

Without rooms it is one stream, the user's own, read after the client's position: ids are that
stream's, so the replay is exact. With rooms (`chat.realtime.rooms`) the user's stream and each of
their rooms' streams are read and merged by event id. The stream the position came from is read
after it exactly. Entries of different streams are not written in id order (a room entry can be
published before a user entry of the same millisecond, and on a cluster the streams live on nodes
whose clocks differ), so every other stream is read from `resume_overlap_ms` before the position's
millisecond (0 on one Redis: from that millisecond): a few events may come twice, and clients
de-duplicate by `event_id`, as the contract says. Nothing is missed.
"""

from __future__ import annotations

import heapq
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis

from chat.realtime import rooms as room_streams
from chat.realtime.eventbus import EVENT_FIELD, stream_key
from chat.realtime.events import frame as event_frame
from chat.realtime.events import untraced
from push import frames

CHUNK = 500
Bounded = Callable[[Awaitable[Any]], Awaitable[Any]]
Position = tuple[int, int]
Read = tuple[str, str, bool]  # a stream's key, the id to read from, whether it is a room's
Entry = tuple[Position, str, str]  # the event id as clients see it, parsed and as text; the frame


@dataclass(slots=True)
class Replayed:
    count: int = 0
    last_sent: Position | None = None  # the user's own stream (no rooms)
    sent: set[str] = field(default_factory=set)  # every event id sent (with rooms)
    newest: str | None = None
    rooms: bool = False

    def is_new(self, event_id: str | None) -> bool:
        """Whether a live frame held back during the replay still has to go."""
        if self.rooms:
            return event_id is None or event_id not in self.sent
        position = frames.parse_id(event_id)
        return position is None or self.last_sent is None or position > self.last_sent


async def replay(
    redis: Redis,
    send: Callable[[str], Awaitable[None]],
    bounded: Bounded,
    user_id: str,
    rooms: list[str],
    last_event_id: str | None,
    overlap_ms: int,
) -> Replayed:
    if rooms:
        return await _merged(redis, send, bounded, user_id, rooms, last_event_id, overlap_ms)
    key = stream_key(user_id)
    done = Replayed()
    if last_event_id is not None:
        start = frames.parse_id(last_event_id)
        if start is None or await bounded(trimmed_after(redis, key, start)):
            await send(frames.RESYNC_REQUIRED)
        else:
            done.last_sent = start
            cursor = f"({start[0]}-{start[1]}"
            while True:
                entries = await bounded(redis.xrange(key, min=cursor, max="+", count=CHUNK))
                for entry_id, fields in entries:
                    frame, _ = untraced(event_frame(entry_id, fields[EVENT_FIELD]).decode())
                    await send(frame)
                    done.last_sent = frames.parse_id(entry_id)
                    done.count += 1
                if len(entries) < CHUNK:
                    break
                cursor = "(" + entries[-1][0].decode()
    newest = await bounded(redis.xrevrange(key, count=1))
    done.newest = newest[0][0].decode() if newest else None
    return done


async def _merged(
    redis: Redis,
    send: Callable[[str], Awaitable[None]],
    bounded: Bounded,
    user_id: str,
    rooms: list[str],
    last_event_id: str | None,
    overlap_ms: int,
) -> Replayed:
    user_key = stream_key(user_id)
    room_keys = [room_streams.stream_key(cid) for cid in rooms]
    done = Replayed(rooms=True)
    if last_event_id is not None:
        start = frames.parse_id(last_event_id)
        if start is None:
            await send(frames.RESYNC_REQUIRED)
        else:
            floor = f"{max(0, start[0] - overlap_ms)}-0"
            exact = not room_streams.is_room_id(start)
            # The stream the position came from is read in order, so after it exactly; the others
            # from the overlap before it. (key, first id to read, a room's or the user's)
            origin = None if exact else await bounded(_origin(redis, rooms, start))
            reads: list[Read] = [
                (key, f"({origin[1]}" if origin is not None and key == origin[0] else floor, True)
                for key in room_keys
            ]
            reads.insert(0, (user_key, f"({start[0]}-{start[1]}" if exact else floor, False))
            if await bounded(_cut(redis, reads, user_key, start if exact else None)):
                await send(frames.RESYNC_REQUIRED)
            else:
                entries = await bounded(_read_all(redis, reads))
                for _, event_id, frame in heapq.merge(*entries):
                    await send(frame)
                    done.sent.add(event_id)
                    done.count += 1
    done.newest = await bounded(_newest(redis, user_key, room_keys))
    return done


async def _origin(redis: Redis, rooms: list[str], start: Position) -> tuple[str, str] | None:
    """The room stream holding the entry a room id names, and that entry's Redis id; None when no
    room of the user's has it (any more)."""
    feed = (start[1] - room_streams.ROOM_COUNTER_BASE) % room_streams.FEEDS
    keys = [room_streams.stream_key(cid) for cid in rooms if room_streams.feed_of(cid) == feed]
    if not keys:
        return None
    counter = str(start[1]).encode()
    async with redis.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.xrange(key, min=f"{start[0]}-0", max=f"{start[0]}-18446744073709551615")
        found = await pipe.execute(raise_on_error=False)
    for key, entries in zip(keys, found, strict=True):
        if isinstance(entries, Exception):
            continue
        for entry_id, fields in entries:
            if fields.get(room_streams.COUNTER_FIELD) == counter:
                return key, entry_id.decode()
    return None


async def _cut(
    redis: Redis, reads: list[tuple[str, str, bool]], user_key: str, exact: Position | None
) -> bool:
    """Whether any stream lost entries after where it is read from (resync_required)."""
    if exact is not None and await trimmed_after(redis, user_key, exact):
        return True
    async with redis.pipeline(transaction=False) as pipe:
        for key, _, _ in reads:
            pipe.xinfo_stream(key)
        infos = await pipe.execute(raise_on_error=False)
    for (key, first, _), info in zip(reads, infos, strict=True):
        if isinstance(info, Exception) or (key == user_key and exact is not None):
            continue  # no such stream (no event yet), or checked exactly above
        # Trimming keeps no record of what it took (max-deleted-entry-id counts XDEL only): the
        # oldest kept entry is newer than where the read starts, and entries were taken.
        floor = frames.parse_id(first.lstrip("("))
        kept = info.get("first-entry")
        oldest = frames.parse_id(kept[0]) if kept else None
        taken = int(info.get("entries-added") or 0) > int(info.get("length") or 0)
        if floor is not None and oldest is not None and oldest > floor and taken:
            return True
    return False


async def _read_all(
    redis: Redis, reads: list[tuple[str, str, bool]]
) -> list[list[tuple[Position, str, str]]]:
    """Each stream's entries from its start, as (event id as clients see it, that id, frame)."""
    out: list[list[Entry]] = [[] for _ in reads]
    cursors = [first for _, first, _ in reads]
    todo = list(range(len(reads)))
    while todo:
        async with redis.pipeline(transaction=False) as pipe:
            for i in todo:
                pipe.xrange(reads[i][0], min=cursors[i], max="+", count=CHUNK)
            chunks = await pipe.execute()
        more = []
        for i, entries in zip(todo, chunks, strict=True):
            room = reads[i][2]
            for entry_id, fields in entries:
                shown = (
                    room_streams.shown(entry_id, fields[room_streams.COUNTER_FIELD])
                    if room
                    else entry_id.decode()
                )
                frame, _ = untraced(event_frame(shown, fields[EVENT_FIELD]).decode())
                position = frames.parse_id(shown)
                assert position is not None  # noqa: S101  (a stream id, shown or not, parses)
                out[i].append((position, shown, frame))
            if len(entries) == CHUNK:
                cursors[i] = "(" + entries[-1][0].decode()
                more.append(i)
        todo = more
    return out


async def _newest(redis: Redis, user_key: str, room_keys: list[str]) -> str | None:
    async with redis.pipeline(transaction=False) as pipe:
        for key in (user_key, *room_keys):
            pipe.xrevrange(key, count=1)
        lasts = await pipe.execute()
    best: tuple[Position, str] | None = None
    for i, last in enumerate(lasts):
        if not last:
            continue
        entry_id, fields = last[0]
        shown = (
            entry_id.decode() if i == 0 else room_streams.shown(entry_id, fields[room_streams.COUNTER_FIELD])
        )
        position = frames.parse_id(shown)
        if position is not None and (best is None or position > best[0]):
            best = (position, shown)
    return best[1] if best else None


def _shown(entry_id: bytes, fields: dict[bytes, bytes], room: bool) -> str:
    return room_streams.shown(entry_id, fields[room_streams.COUNTER_FIELD]) if room else entry_id.decode()


async def trimmed_after(redis: Redis, key: str, start: Position) -> bool:
    """True when events after `start` may be missing: trimmed away, lost with data Redis no longer
    holds, or `start` was never issued."""
    at = f"{start[0]}-{start[1]}"
    async with redis.pipeline(transaction=False) as pipe:  # one round trip, one key: one node
        pipe.xinfo_stream(key)
        pipe.xrange(key, min=at, max=at, count=1)
        info, exact = await pipe.execute(raise_on_error=False)
    if isinstance(info, Exception):  # no stream at all: nothing to resume from
        return True
    # `start` named an entry the client got from this stream. Gone though trimming cannot have
    # taken it (the check below), the stream went back in time: Redis came back from an older
    # snapshot, or a replica that lacked it was promoted. The events after it may be gone too,
    # while new ones get ids past it: replaying those alone would be a silent gap.
    missing = isinstance(exact, Exception) or not exact
    last_generated = frames.parse_id(info.get("last-generated-id"))
    if last_generated is None or start > last_generated:
        return True
    deleted = frames.parse_id(info.get("max-deleted-entry-id"))
    if deleted is not None and deleted != (0, 0):
        return deleted > start or missing
    first = info.get("first-entry")
    first_id = frames.parse_id(first[0]) if first else None
    # The oldest kept event is newer than start: either trimmed (without Redis 7's bookkeeping),
    # or the stream began again after Redis lost its data. Events nobody holds any more lay
    # between, so the client must resync over REST either way.
    return (first_id is not None and first_id > start) or missing
