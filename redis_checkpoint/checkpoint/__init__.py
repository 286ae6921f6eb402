"""The LangGraph checkpoint saver on plain Redis."""

from redis_checkpoint.checkpoint.aio import AsyncRedisSaver
from redis_checkpoint.checkpoint.core import MissingThreadIdError
from redis_checkpoint.checkpoint.saver import RedisSaver

__all__ = ["AsyncRedisSaver", "MissingThreadIdError", "RedisSaver"]
