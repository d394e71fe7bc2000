"""The process's clients, built once by `build_deps`: create_app hands each resource the ones it
uses, and closes them all at shutdown."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from chat.eventbus import Publisher
from chat.jobqueue.accept import JobQueue
from chat.jobqueue.connection import ArqRedis
from chat.ratelimit import Limiter
from chat.security import Passwords, Tokens
from chat.sequence import Sequencer
from chat.settings import Settings
from chat.storage import Storage


@dataclass
class Deps:
    settings: Settings
    engine: AsyncEngine
    # The same pool without transactions, for single-statement reads on hot paths.
    reader: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    redis: ArqRedis
    publisher: Publisher
    queue: JobQueue
    passwords: Passwords
    tokens: Tokens
    limiter: Limiter
    sequencer: Sequencer
    storage: Storage
