"""Conversations, their participants, and each participant's read marker, settings and typing."""

from __future__ import annotations

from api import representations as r
from api.operations.base import CURSOR, LIMIT, NO_CONTENT, Operation
from api.resources import conversations, participants, read_markers, typing_indicators
from chat.schemas import ConversationOut

TAG = "conversations"
EXAMPLE_USER = "6f1c1d52-8d0e-4c1e-9a55-2f9b1f4b7e10"
ONE = "/conversations/{conversation_id}"

OPERATIONS = (
    Operation(
        "GET",
        "/conversations",
        conversations.Conversations,
        TAG,
        "My conversations, most recent activity first",
        "self",
        {200: ("A page.", r.ConversationPage)},
        query=(LIMIT, CURSOR),
    ),
    Operation(
        "POST",
        "/conversations",
        conversations.Conversations,
        TAG,
        "Start a direct or group conversation",
        "self",
        {
            201: ("Created; `Location` names it.", ConversationOut),
            200: ("The existing direct conversation of that pair.", ConversationOut),
        },
        body=conversations.CreateBody,
        example={"kind": "group", "title": "Lunch", "participant_ids": [EXAMPLE_USER]},
    ),
    Operation(
        "GET",
        ONE,
        conversations.ConversationById,
        TAG,
        "One conversation",
        "conversation",
        {200: ("The conversation.", ConversationOut)},
    ),
    Operation(
        "POST",
        f"{ONE}/participants",
        participants.Participants,
        TAG,
        "Add people to a group",
        "conversation",
        {200: ("The conversation.", ConversationOut)},
        body=participants.AddBody,
        example={"user_ids": [EXAMPLE_USER]},
    ),
    Operation(
        "POST",
        f"{ONE}/read",
        read_markers.ReadMarker,
        TAG,
        "Move my read marker forward",
        "conversation",
        {204: NO_CONTENT},
        body=read_markers.ReadBody,
        example={"seq": 12},
    ),
    Operation(
        "PATCH",
        f"{ONE}/settings",
        read_markers.ConversationSettings,
        TAG,
        "My settings for a conversation",
        "conversation",
        {200: ("The settings as they now are.", r.Settings)},
        body=read_markers.SettingsBody,
        example={"muted": True},
        description=(
            "Per participant. A muted conversation still delivers every event; it counts nothing as "
            "unread (`unread_count` and `unread_mentions` are 0) and shows `muted: true`."
        ),
    ),
    Operation(
        "POST",
        f"{ONE}/typing",
        typing_indicators.TypingIndicator,
        TAG,
        "Tell the others I am typing",
        "conversation",
        {204: NO_CONTENT},
        limited=True,
        errors={403: "The other participant of this direct conversation blocked me."},
        description="At most one per second per user and conversation.",
    ),
    # Last: the rightful caller (the owner) removes a participant here.
    Operation(
        "DELETE",
        f"{ONE}/participants/{{user_id}}",
        participants.ParticipantById,
        TAG,
        "Leave, or remove someone (owner only)",
        "conversation",
        {204: NO_CONTENT},
        errors={
            403: "Only the owner removes others.",
            422: "A direct conversation's participants are fixed.",
        },
    ),
)
