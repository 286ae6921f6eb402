"""benchmarks/checkpointer_bytes.py: the Agent Server's channel versions, and what a conversation
costs in Redis under them against the saver's own versions (a short one)."""

from __future__ import annotations

from benchmarks import checkpointer_bytes


def test_the_agent_server_versions_are_32_digit_counters_with_a_random_fraction() -> None:
    first = checkpointer_bytes.agent_server_versions(None, None)
    second = checkpointer_bytes.agent_server_versions(first, None)
    assert first.startswith("0" * 31 + "1.") and second.startswith("0" * 31 + "2.")
    assert len(first) >= 32 + 1 + 16  # the fraction takes 16 characters at least


def test_a_conversation_under_the_agent_server_versions_stores_more_bytes(
    redis_server_bin: str,
) -> None:
    _, ours = checkpointer_bytes.conversation_bytes(6, "own-versions", versions=False)
    _, server = checkpointer_bytes.conversation_bytes(6, "server-versions", versions=True)
    assert 0 < ours < server  # key bytes: their longer versions name every blob
