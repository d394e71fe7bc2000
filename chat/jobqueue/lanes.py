"""Which queue holds a job. Message writes go on QUEUE_NAME; webhook deliveries on a queue of
their own beside it, which every worker serves in slots of their own (WEBHOOK_MAX_JOBS), so a
receiver that hangs never holds a slot that stores messages.
"""

from __future__ import annotations

from dataclasses import dataclass

from chat.settings import Settings

DELIVER_WEBHOOK = "deliver_webhook"
# Delivery job ids start with this (`chat.domain.webhooks.Dispatcher`), so an id names its queue.
WEBHOOK_JOB_PREFIX = "webhook:"


@dataclass(frozen=True, slots=True)
class Queues:
    messages: str
    webhooks: str

    @classmethod
    def from_settings(cls, settings: Settings) -> Queues:
        return cls(settings.queue_name, settings.webhook_queue_name)

    @property
    def all(self) -> tuple[str, str]:
        return (self.messages, self.webhooks)

    def for_function(self, function: str | None) -> str:
        return self.webhooks if function == DELIVER_WEBHOOK else self.messages

    def for_job(self, job_id: str) -> str:
        return self.webhooks if job_id.startswith(WEBHOOK_JOB_PREFIX) else self.messages
