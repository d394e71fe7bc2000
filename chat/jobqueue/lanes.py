"""Which queue holds a job. Message writes go on QUEUE_NAME; webhook deliveries on a queue of
their own beside it, which every worker serves in slots of their own (WEBHOOK_MAX_JOBS), so a
receiver that hangs never holds a slot that stores messages.

Each of the two is a lane of queue shards (`chat.jobqueue.shards`): on one Redis a lane is the one
queue its name says; with shards, shard k's queue is the name plus the shard's tag, and a job is on
the shard its id's tag names.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from chat.jobqueue.shards import Shards
from chat.settings import Settings

DELIVER_WEBHOOK = "deliver_webhook"
# Delivery job ids start with this (`chat.domain.webhooks.Dispatcher`), so an id names its queue.
WEBHOOK_JOB_PREFIX = "webhook:"


@dataclass(frozen=True, slots=True)
class Queues:
    messages: str
    webhooks: str
    shards: Shards = field(default_factory=Shards.single)

    @classmethod
    def from_settings(cls, settings: Settings) -> Queues:
        return cls(settings.queue_name, settings.webhook_queue_name, Shards.from_settings(settings))

    @property
    def all(self) -> tuple[str, str]:
        """The lanes' base names."""
        return (self.messages, self.webhooks)

    def shard_queues(self, lane: str) -> list[str]:
        """Every shard queue of one lane (its one queue on a single Redis)."""
        return self.shards.queues(lane)

    @property
    def every(self) -> list[str]:
        """Every shard queue of both lanes."""
        return [queue for lane in self.all for queue in self.shard_queues(lane)]

    def lane_of_function(self, function: str | None) -> str:
        return self.webhooks if function == DELIVER_WEBHOOK else self.messages

    def for_function(self, function: str | None, job_id: str) -> str:
        """The queue a job of `function` with this id goes on: its lane's shard the id's tag names."""
        return self.shards.queue_of_job(self.lane_of_function(function), job_id)

    def for_job(self, job_id: str) -> str:
        lane = self.webhooks if job_id.startswith(WEBHOOK_JOB_PREFIX) else self.messages
        return self.shards.queue_of_job(lane, job_id)
