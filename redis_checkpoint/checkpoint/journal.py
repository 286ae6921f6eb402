"""TEMPORARY stub: replaced by the journal branch."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Delta:
    """What the tier changed in one thread, in order: later changes win."""

    cleared: bool = False
    members: set[bytes] = field(default_factory=set)
    fields: dict[bytes, bytes] = field(default_factory=dict)
    removed: set[bytes] = field(default_factory=set)

    def add_member(self, member: bytes) -> None:
        self.members.add(member)

    def set(self, name: bytes, value: bytes) -> None:
        self.fields[name] = value
        self.removed.discard(name)

    def remove(self, name: bytes) -> None:
        self.fields.pop(name, None)
        self.removed.add(name)

    def clear(self) -> None:
        self.cleared = True
        self.members.clear()
        self.fields.clear()
        self.removed.clear()

    def merge(self, later: Delta) -> None:
        if later.cleared:
            self.clear()
        self.members |= later.members
        for name, value in later.fields.items():
            self.set(name, value)
        for name in later.removed:
            self.remove(name)

    def __bool__(self) -> bool:
        return bool(self.cleared or self.members or self.fields or self.removed)


class Journal:
    def __init__(self, directory: str | os.PathLike[str], key_prefix: str, *, fsync: bool = True):
        self.directory = Path(directory)
        self.path: Path | None = None

    def append(self, thread_id: str, delta: Delta) -> None: ...
    def written_back(self, thread_ids: Iterable[str]) -> None: ...
    def adopt(self) -> dict[str, Delta]:
        return {}

    def reset(self) -> None: ...
    def close(self) -> None: ...
