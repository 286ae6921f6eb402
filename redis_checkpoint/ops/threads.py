"""How the management API and the CLI show a thread's checkpoints."""

from __future__ import annotations

from typing import Any

__all__ = ["summarize"]


def summarize(checkpoint_tuple: Any) -> dict[str, Any]:
    """What an operator wants to see of one checkpoint (not its full state)."""
    checkpoint = checkpoint_tuple.checkpoint
    metadata = checkpoint_tuple.metadata or {}
    parent = checkpoint_tuple.parent_config
    return {
        "checkpoint_id": checkpoint["id"],
        "checkpoint_ns": checkpoint_tuple.config["configurable"].get("checkpoint_ns", ""),
        "ts": checkpoint.get("ts"),
        "step": metadata.get("step"),
        "source": metadata.get("source"),
        "parent_checkpoint_id": parent["configurable"]["checkpoint_id"] if parent else None,
        "channels": sorted(checkpoint.get("channel_values", {})),
        "pending_writes": len(checkpoint_tuple.pending_writes or []),
    }
