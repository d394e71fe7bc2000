"""The `web` process's ASGI app (`python -m api` serves it; any ASGI server can)."""

from api.app import create_app
from api.problems import RefuseWebSockets
from chat.infra.process import settle_gc

app = RefuseWebSockets(create_app())
settle_gc()  # uvicorn imports this module once, after its own start-up: the app is built
