"""The server API's users, tokens and jobs: the app's backend, with a server key, names users by its
own ids (`external_id`)."""

from __future__ import annotations

from api import representations as r
from api.operations.base import CURSOR, NO_CONTENT, Operation, Param
from api.resources import server_users as su
from chat.usecases.server_users import ServerUserOut

TAG = "server"
ONE = "/server/users/{external_id}"
UNKNOWN_USER = {404: "No user has this external id."}
EXPORT_LIMIT = Param(
    "limit", {"type": "integer", "minimum": 1, "maximum": 500, "default": 100}, "Messages a page."
)

OPERATIONS = (
    Operation(
        "PUT",
        ONE,
        su.ServerUser,
        TAG,
        "Create or update a user",
        "server",
        {201: ("Created.", ServerUserOut), 200: ("Updated.", ServerUserOut)},
        body=su.PutUserBody,
        example={"display_name": "Ada Lovelace", "username": "ada", "metadata": {"plan": "pro"}},
        errors={409: "The username is taken.", 422: "Invalid fields, or metadata over 4 KiB."},
        description=(
            "The user your app calls `external_id` (its own id for them): made if new, else updated "
            "with what is given. Their tokens are yours to mint (`POST /server/tokens`, or a JWT "
            "your backend signs); they have no password here."
        ),
    ),
    Operation("GET", ONE, su.ServerUser, TAG, "A user", "server", {200: ("The user.", ServerUserOut)}),
    Operation(
        "POST",
        f"{ONE}/deactivate",
        "server-deactivate",
        TAG,
        "Deactivate a user",
        "server",
        {204: NO_CONTENT},
        errors=UNKNOWN_USER,
        description="Their tokens are refused at once (401) and their open sockets close with 4403.",
    ),
    Operation(
        "POST",
        f"{ONE}/reactivate",
        "server-reactivate",
        TAG,
        "Reactivate a user",
        "server",
        {204: NO_CONTENT},
        errors={**UNKNOWN_USER, 409: "The user was erased."},
    ),
    Operation(
        "GET",
        f"{ONE}/export",
        su.ServerUserExport,
        TAG,
        "Everything of a user's, as JSON",
        "server",
        {200: ("Everything of theirs, paged over their messages.", su.UserExport)},
        query=(EXPORT_LIMIT, CURSOR),
        errors=UNKNOWN_USER,
    ),
    Operation(
        "POST",
        "/server/tokens",
        su.ServerTokens,
        TAG,
        "An access token for a user (made if new)",
        "server",
        {200: ("A token the api and the WebSocket accept.", su.ServerToken)},
        body=su.TokenBody,
        example={"external_id": "user-42", "display_name": "Ada", "ttl_seconds": 3600},
        errors={409: "The user is deactivated."},
    ),
    Operation(
        "GET",
        "/server/jobs/{job_id}",
        su.ServerJob,
        TAG,
        "A job's state",
        "server",
        {200: ("As `GET /jobs/{job_id}`.", r.JobView)},
    ),
    # Last: the rightful caller erases the user here.
    Operation(
        "DELETE",
        ONE,
        su.ServerUser,
        TAG,
        "Erase a user (queued)",
        "server",
        {202: ("Queued; poll the job.", su.ErasureJob)},
        errors=UNKNOWN_USER,
        description=(
            "Deactivates the user at once, then a job deletes their messages (body null, "
            "`message.deleted` to the others), reactions, uploads, blocks and memberships, and "
            "leaves of their row only its id. Asking again is harmless."
        ),
    ),
)
