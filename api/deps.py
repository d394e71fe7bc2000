"""The clients a request may need, built once per process by `create_app` and handed to resources."""

from __future__ import annotations

from dataclasses import dataclass

from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from chat.eventbus import Publisher
from chat.security import Passwords, Tokens
from chat.settings import Settings


@dataclass
class Deps:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    redis: ArqRedis
    publisher: Publisher
    passwords: Passwords
    tokens: Tokens
