"""The server API's conversations and messages: the app's backend, with a server key, names them
by its own ids (`external_id`)."""

from __future__ import annotations

from api import representations as r
from api.operations.base import NO_CONTENT, Operation
from api.resources import server_conversations as sc
from chat.schemas import ConversationOut

TAG = "server"
ONE = "/server/conversations/{external_id}"
UNKNOWN_CONVERSATION = {404: "No conversation has this external id."}

OPERATIONS = (
    Operation(
        "PUT",
        ONE,
        sc.ServerConversation,
        TAG,
        "Create or update a group with exactly these members",
        "server",
        {
            201: ("Created.", ConversationOut),
            200: ("Updated.", ConversationOut),
        },
        body=sc.PutBody,
        example={"title": "Match 42", "member_ids": ["user-1", "user-2"], "metadata": {"match": 42}},
        errors={422: "An unknown member id (see `PUT /server/users`), or metadata over 4 KiB."},
        description=(
            "Members are the app's user ids; afterwards the group has exactly them (added ones hear "
            "`participant.added`, removed ones `participant.removed`; a new group's members get "
            "`conversation.created`). No one owns it: everyone is a `member`. `metadata` (a JSON "
            "object of at most 4 KiB) is kept as given; left out, the stored one stays."
        ),
    ),
    Operation(
        "POST",
        f"{ONE}/members",
        sc.ServerMembers,
        TAG,
        "Add members",
        "server",
        {200: ("The conversation.", ConversationOut)},
        body=sc.MembersBody,
        example={"member_ids": ["user-3"]},
        errors={**UNKNOWN_CONVERSATION, 422: "A member id names no user."},
    ),
    Operation(
        "POST",
        f"{ONE}/messages",
        sc.ServerMessages,
        TAG,
        "Send a message as a member, or a system message (queued)",
        "server",
        {202: ("Accepted and queued; `Location` names the message.", r.Accepted)},
        body=sc.ServerSendBody,
        example={"body": "The match starts in 5 minutes.", "client_id": "match-42-start"},
        errors={
            **UNKNOWN_CONVERSATION,
            409: "The client_id was used before with another body.",
            422: "`sender_id` names no member of this conversation.",
        },
        description=(
            "With `sender_id` (a member's external id) the message is that member's, as if they sent "
            'it. Without it, it is a system message: `kind: "system"`, `sender_id: null`, unread '
            "for every member. `client_id` is required: a repeat gets the first send's id and seq."
        ),
    ),
    # Last: the rightful caller removes a member here.
    Operation(
        "DELETE",
        f"{ONE}/members/{{member_external_id}}",
        sc.ServerMember,
        TAG,
        "Remove a member",
        "server",
        {204: NO_CONTENT},
        errors={404: "No conversation has this external id, or that user is not in it."},
    ),
)
