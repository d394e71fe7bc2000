"""The signed-in user, the directory of users, and blocks."""

from __future__ import annotations

from api import representations as r
from api.operations.base import CURSOR, LIMIT, NO_CONTENT, Operation, Param
from api.resources import auth, blocks, users
from chat.schemas import UserOut, UserProfileOut

TAG = "users"

OPERATIONS = (
    Operation(
        "GET",
        "/users",
        users.Users,
        TAG,
        "Find users by username prefix",
        "self",
        {200: ("Users, by username.", r.UserPage)},
        query=(Param("q", {"type": "string"}, "Username prefix, case-insensitive."), LIMIT, CURSOR),
    ),
    Operation("GET", "/users/me", users.Me, TAG, "The signed-in user", "self", {200: ("The user.", UserOut)}),
    Operation(
        "PATCH",
        "/users/me",
        users.Me,
        TAG,
        "Change the display name",
        "self",
        {200: ("The user.", UserOut)},
        body=auth.DisplayName,
        example={"display_name": "Alice B."},
    ),
    Operation(
        "GET",
        "/users/me/blocks",
        blocks.Blocks,
        TAG,
        "The users I blocked",
        "self",
        {200: ("My blocks.", r.Blocks)},
        query=(LIMIT, CURSOR),
    ),
    Operation(
        "PUT",
        "/users/me/blocks/{user_id}",
        blocks.BlockedUser,
        TAG,
        "Block a user",
        "self",
        {204: NO_CONTENT},
        errors={404: "No such user.", 422: "Blocking myself."},
        description=(
            "Idempotent. The blocked user can no longer open a direct conversation with me, or send, "
            "react or type in ours (`403`); no event tells them. Blocking myself is `422`."
        ),
    ),
    Operation(
        "DELETE",
        "/users/me/blocks/{user_id}",
        blocks.BlockedUser,
        TAG,
        "Unblock a user",
        "self",
        {204: NO_CONTENT},
        errors={404: "No such user.", 422: "Unblocking myself."},
        description="Idempotent.",
    ),
    # Intended: any signed-in user may look up anyone's profile (a directory, like Zulip's and
    # Stream Chat's); it names no conversation, so it leaks none.
    Operation(
        "GET",
        "/users/{user_id}",
        users.UserById,
        TAG,
        "A user's profile and presence",
        "user",
        {200: ("The profile.", UserProfileOut)},
    ),
)
