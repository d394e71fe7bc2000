"""Queue shards: which hash slot a conversation's keys and its queue share.

The send script touches a conversation's counter, client_id claims and members, and enqueues its
job, atomically. On a Redis Cluster a script may touch one hash slot only, so each of those keys,
the queue that carries the conversation's writes and arq's keys of its jobs carry one hash tag:
the shard's, `{m<k>}`, where k is the conversation hashed onto `QUEUE_SHARDS` shards. A job id
carries the tag too (`persist:{m3}<message id>`), so its job, in-progress, retry and result keys
land beside its queue, and the claim and finish scripts stay in one slot.

On one Redis (standalone or Sentinel) there is one shard and no tag: the keys are those of a
product that never heard of clusters, and a shard costs nothing.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any

from chat.settings import Settings, parse_shard_list

_TAG = re.compile(r"\{m(\d+)\}")


@dataclass(frozen=True, slots=True)
class Shards:
    count: int
    tagged: bool

    @classmethod
    def from_settings(cls, settings: Settings) -> Shards:
        return cls(settings.shard_count, settings.redis_mode == "cluster" or settings.shard_count > 1)

    @classmethod
    def single(cls) -> Shards:
        return cls(1, False)

    def of(self, key: uuid.UUID | str) -> int:
        """The shard of a conversation (or of any id that needs one: a user's erasure)."""
        if self.count == 1:
            return 0
        value = key if isinstance(key, uuid.UUID) else uuid.UUID(str(key))
        return value.int % self.count

    def tag(self, shard: int) -> str:
        return f"{{m{shard}}}" if self.tagged else ""

    def tag_of(self, key: uuid.UUID | str) -> str:
        return self.tag(self.of(key)) if self.tagged else ""

    @property
    def all(self) -> range:
        return range(self.count)

    def queue(self, base: str, shard: int) -> str:
        return base + self.tag(shard)

    def queues(self, base: str, shards: list[int] | None = None) -> list[str]:
        return [self.queue(base, k) for k in (shards if shards else self.all)]

    def shard_of_job(self, job_id: str) -> int:
        """The shard a job id names by its tag; untagged ids (one shard) are shard 0."""
        found = _TAG.search(job_id)
        return int(found.group(1)) if found and self.tagged else 0

    def queue_of_job(self, base: str, job_id: str) -> str:
        return self.queue(base, self.shard_of_job(job_id))

    def worker_shards(self, settings: Settings) -> list[int]:
        chosen = parse_shard_list(settings.worker_shards)
        wrong = [k for k in chosen if k >= self.count]
        if wrong:
            raise ValueError(f"WORKER_SHARDS names shards {wrong} but QUEUE_SHARDS is {self.count}")
        return chosen or list(self.all)


def shards_of(redis: Any) -> Shards:
    """The key layout of the Redis a client talks to (`chat.infra.redisclient.create_redis` sets
    it); a client made elsewhere (a test's, fakeredis) talks to one Redis with one shard."""
    found = getattr(redis, "chat_shards", None)
    return found if isinstance(found, Shards) else _SINGLE


_SINGLE = Shards(1, False)
