"""Moved to `chat.usecases.conversations` (the use-case layer reads conversations now); re-exported
for the resources that have not moved yet."""

from __future__ import annotations

from chat.usecases.conversations import (
    MAX_PARTICIPANTS,
    conversation_of,
    conversation_view,
    conversation_views,
    participant_ids,
    require_group,
    require_participant,
    require_users,
)

__all__ = [
    "MAX_PARTICIPANTS",
    "conversation_of",
    "conversation_view",
    "conversation_views",
    "participant_ids",
    "require_group",
    "require_participant",
    "require_users",
]
