"""Blocking: a user who blocked another is never opened a direct conversation by them, and their
sends, reactions and typing in the direct conversation they share are refused (the api's send
script reads that from the conversation's members set in Redis; see chat.domain.membership)."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import and_, exists, select
from sqlalchemy.orm import aliased

from chat.models import Block, Conversation, Participant

BLOCKED = "This user has blocked you: you cannot send, react or type in your direct conversation."


def direct_key(a: uuid.UUID, b: uuid.UUID) -> str:
    """The key that makes a direct conversation between two users unique, in either order."""
    return ":".join(sorted((str(a), str(b))))


def refused_senders(conversation_id: uuid.UUID) -> Any:
    """The participants of a direct conversation whom the other participant blocked."""
    other = aliased(Participant)
    return (
        select(Participant.user_id)
        .join(
            Conversation, and_(Conversation.id == Participant.conversation_id, Conversation.kind == "direct")
        )
        .join(
            other,
            and_(other.conversation_id == Participant.conversation_id, other.user_id != Participant.user_id),
        )
        .join(Block, and_(Block.blocker_id == other.user_id, Block.blocked_id == Participant.user_id))
        .where(Participant.conversation_id == conversation_id)
    )


def blocked_by(blocker: uuid.UUID, user: uuid.UUID) -> Any:
    """Whether `blocker` blocked `user`."""
    return select(exists().where(Block.blocker_id == blocker, Block.blocked_id == user))


def refused(conversation_id: uuid.UUID, user: uuid.UUID) -> Any:
    """Whether `user` is in a direct conversation with someone who blocked them."""
    return select(exists(refused_senders(conversation_id).where(Participant.user_id == user)))
