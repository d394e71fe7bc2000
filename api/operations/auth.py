"""Registering, logging in and out, and refreshing tokens."""

from __future__ import annotations

from api import representations as r
from api.operations.base import NO_CONTENT, Operation
from api.resources import auth
from chat.schemas import UserOut

TAG = "auth"
REFRESH_EXAMPLE = {"refresh_token": "h2Kq…"}

OPERATIONS = (
    Operation(
        "POST",
        "/auth/register",
        auth.Register,
        TAG,
        "Register a user",
        "public",
        {201: ("Registered; `Location` names the user.", UserOut)},
        body=auth.RegisterBody,
        example={"username": "alice", "password": "correct horse battery", "display_name": "Alice"},
        limited=True,
        errors={409: "The username is taken (case-insensitively)."},
    ),
    Operation(
        "POST",
        "/auth/login",
        auth.Login,
        TAG,
        "Log in: an access token and a refresh token",
        "public",
        {200: ("Signed in.", r.TokenPair)},
        body=auth.LoginBody,
        example={"username": "alice", "password": "correct horse battery"},
        form=True,
        limited=True,
        errors={401: "Wrong username or password."},
        description="JSON, or form-encoded as OAuth2 password clients send it.",
    ),
    Operation(
        "POST",
        "/auth/refresh",
        auth.Refresh,
        TAG,
        "Trade a refresh token for a new pair",
        "public",
        {200: ("A new pair; the old refresh token is retired.", r.TokenPair)},
        body=auth.RefreshBody,
        example=REFRESH_EXAMPLE,
        errors={401: "Unknown, expired or revoked; a retired token revokes its whole login."},
    ),
    Operation(
        "POST",
        "/auth/logout",
        auth.Logout,
        TAG,
        "Log out: revoke the login of a refresh token",
        "self",
        {204: NO_CONTENT},
        body=auth.RefreshBody,
        example=REFRESH_EXAMPLE,
    ),
)
