"""What each demo does last: remove the keys it wrote under its own prefix, and no others.

A demo runs against the Redis at REDIS_URL, which may be the user's own: it leaves nothing
behind (set KEEP_DEMO_KEYS=1 to look at what it wrote).
"""

from __future__ import annotations

import os
from typing import Any


def remove_demo_keys(client: Any, prefix: str) -> None:
    """Unlink every key under ``prefix:`` (a prefix only the demos use) and say how many."""
    if os.environ.get("KEEP_DEMO_KEYS"):
        print(f"kept the demo's keys under {prefix!r} (KEEP_DEMO_KEYS is set)")
        return
    keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
    # One UNLINK per key: on a cluster the keys live in several slots.
    pipeline = client.pipeline(transaction=False)
    for key in keys:
        pipeline.unlink(key)
    pipeline.execute()
    print(f"removed the {len(keys)} keys the demo wrote under {prefix!r}")
