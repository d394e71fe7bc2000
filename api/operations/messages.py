"""Messages: sending (queued), history, search, edits, reactions, and the files they attach."""

from __future__ import annotations

from api import representations as r
from api.operations.base import CURSOR, ID, LIMIT, NO_CONTENT, SEQ, Operation, Param
from api.resources import messages, search, uploads
from chat.schemas import MessageOut

TAG = "messages"
ONE = "/messages/{message_id}"
REACTION = f"{ONE}/reactions/{{emoji}}"
QUEUED = ("Accepted and queued.", r.Accepted)
EXPIRES = Param("expires", {"type": "string"}, "Part of the signed URL: when it expires (unix seconds).")
SIGNATURE = Param("signature", {"type": "string"}, "Part of the signed URL: its HMAC-SHA256.")
LOCAL_DISK = (
    "Only with the local-disk store (no `S3_BUCKET`): the presigned URLs the api hands out point "
    "here, and their signature is the credential, so no bearer token. With S3 this is `404`."
)
SIGNED_REFUSAL = {403: "A signature that is missing, wrong or expired."}

OPERATIONS = (
    Operation(
        "GET",
        "/conversations/{conversation_id}/messages",
        messages.ConversationMessages,
        TAG,
        "History, in ascending seq",
        "conversation",
        {200: ("A page of messages.", r.History)},
        query=(
            Param("before", SEQ, "The newest `limit` messages below this seq."),
            Param("after", SEQ, "The oldest `limit` messages above this seq."),
            Param("thread", ID, "Only the replies to this message (of this conversation; `404` otherwise)."),
            LIMIT,
        ),
    ),
    Operation(
        "POST",
        "/conversations/{conversation_id}/messages",
        messages.ConversationMessages,
        TAG,
        "Send a message (queued)",
        "conversation",
        {202: ("Accepted and queued; `Location` names the message.", r.Accepted)},
        body=messages.SendBody,
        example={"body": "Hello!", "client_id": "9d3b2f0c-local-1"},
        limited=True,
        errors={409: "The client_id was used before with another body (or other attachments)."},
        description=(
            "`reply_to` makes the message a reply: it must name a stored message of the same "
            "conversation (`422` otherwise), whose `reply_count` and `last_reply_at` then count it. "
            "`attachments` names up to 10 distinct uploads of mine (`POST /uploads`), each attached "
            "to no other message and with its bytes uploaded as announced (`422` otherwise)."
        ),
    ),
    # Only the caller's conversations are searched.
    Operation(
        "GET",
        "/search/messages",
        search.MessageSearch,
        TAG,
        "Search my messages",
        "self",
        {200: ("A page of matches.", r.SearchPage)},
        errors={404: "`conversation_id` names a conversation I am not in (or none)."},
        query=(
            Param(
                "q",
                {"type": "string", "minLength": 1, "maxLength": 256},
                'The words to find (required). Every word must match; `"quoted words"` are a phrase, '
                "`-word` excludes.",
            ),
            Param("conversation_id", ID, "Only this conversation (`404` unless I am in it)."),
            LIMIT,
            CURSOR,
        ),
        description=(
            "Full-text search over the conversations I am in now, ranked. Deleted messages and "
            "messages of users I blocked are never found. Words are matched whole, ignoring case; "
            "the embedded dev mode (SQLite) matches every word as a substring instead."
        ),
    ),
    Operation(
        "GET",
        ONE,
        messages.MessageById,
        TAG,
        "One message, once stored",
        "message",
        {200: ("The message.", MessageOut)},
    ),
    Operation(
        "PATCH",
        ONE,
        messages.MessageById,
        TAG,
        "Edit my message (queued)",
        "message",
        {202: QUEUED},
        body=messages.EditBody,
        example={"body": "Hello again!"},
        errors={403: "Only the sender edits.", 409: "The message was deleted."},
    ),
    Operation(
        "DELETE",
        ONE,
        messages.MessageById,
        TAG,
        "Delete a message (queued)",
        "message",
        {202: QUEUED},
        errors={403: "Only the sender, or a group's owner."},
    ),
    Operation(
        "PUT",
        REACTION,
        messages.MessageReaction,
        TAG,
        "React with an emoji (queued)",
        "message",
        {204: NO_CONTENT},
        errors={
            403: "The other participant of this direct conversation blocked me.",
            409: "The message was deleted.",
        },
        description=(
            "Idempotent. A worker stores the reaction in the order the api accepted changes to it and "
            "publishes `reaction.added` when it appears. The emoji is 1 to 32 visible characters, no "
            "whitespace (`422`); URL-encode it."
        ),
    ),
    Operation(
        "DELETE",
        REACTION,
        messages.MessageReaction,
        TAG,
        "Take a reaction back (queued)",
        "message",
        {204: NO_CONTENT},
        description="Idempotent; `reaction.removed` is published when the reaction goes away.",
    ),
    Operation(
        "POST",
        "/uploads",
        uploads.Uploads,
        TAG,
        "Announce a file to attach: where to PUT its bytes",
        "self",
        {201: ("A presigned upload URL and the headers to send with it.", r.UploadTicket)},
        body=uploads.UploadBody,
        example={"filename": "cat.png", "content_type": "image/png", "size": 48213},
        limited=True,
        errors={422: "A bad filename or content type, or a size of 0 or over UPLOAD_MAX_BYTES."},
        description=(
            "Then `PUT` the bytes to `upload_url` with exactly `headers`, before `expires_at`, and "
            "name `id` in `attachments` of one message of yours. Filenames are 1 to 255 characters, "
            "no path separators or control characters; the content type is `type/subtype`."
        ),
    ),
    # The signature in the URL is the credential, as for an S3 presigned URL.
    Operation(
        "PUT",
        "/uploads/{upload_id}/content",
        uploads.UploadContent,
        TAG,
        "Local-disk store: the bytes of an upload",
        "signed",
        {204: ("Stored.", None)},
        query=(
            EXPIRES,
            Param("content_type", {"type": "string"}, "Part of the signed URL: the announced type."),
            Param("size", {"type": "string"}, "Part of the signed URL: the announced size."),
            SIGNATURE,
        ),
        errors={
            **SIGNED_REFUSAL,
            409: "The bytes are stored already.",
            413: "More bytes than the upload announced.",
            422: "A Content-Type or Content-Length other than announced, or fewer bytes.",
        },
        description=LOCAL_DISK + " The body is the file's bytes, sent with the headers `POST /uploads` gave.",
    ),
    Operation(
        "GET",
        "/uploads/{upload_id}/content",
        uploads.UploadContent,
        TAG,
        "Local-disk store: download an attachment",
        "signed",
        {200: ("The file, with its content type.", None)},
        query=(EXPIRES, Param("filename", {"type": "string"}, "Part of the signed URL."), SIGNATURE),
        errors=dict(SIGNED_REFUSAL),
        media="application/octet-stream",
        description=LOCAL_DISK + " Attachments' `url` in message reads point here.",
    ),
)
