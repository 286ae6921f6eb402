"""The one-line file a langgraph.json "path" can name (a module path works as well)."""

from redis_checkpoint.agent_server import checkpointer, store

__all__ = ["checkpointer", "store"]
