"""The LangGraph checkpoint saver on plain Redis."""

from redis_checkpoint.checkpoint.aio import AsyncRedisSaver
from redis_checkpoint.checkpoint.saver import RedisSaver
from redis_checkpoint.errors import MissingThreadIdError

__all__ = ["AsyncRedisSaver", "MissingThreadIdError", "RedisSaver"]
