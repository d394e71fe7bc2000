"""The `web` process: `uvicorn api.asgi:app`."""

from api.app import create_app
from api.problems import RefuseWebSockets

app = RefuseWebSockets(create_app())
