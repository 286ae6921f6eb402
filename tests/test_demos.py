"""The README's demo command: each demo runs on a test-started redis-server and leaves no key."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from redis_checkpoint.testing import RedisServer

ROOT = Path(__file__).resolve().parent.parent

from run import DEMOS  # noqa: E402  (run.py lives at the root, beside tests/)


@pytest.mark.slow
@pytest.mark.parametrize("demo", DEMOS)
def test_a_demo_runs_and_leaves_no_key(demo: str, redis_server_bin: str) -> None:
    with RedisServer(binary=redis_server_bin) as server:
        env = {**os.environ, "REDIS_URL": server.url, "REDIS_SERVER_BIN": redis_server_bin}
        env.pop("KEEP_DEMO_KEYS", None)
        done = subprocess.run(
            [sys.executable, str(ROOT / demo)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        assert "removed the" in done.stdout
        with server.client() as client:
            assert client.dbsize() == 0, sorted(client.scan_iter(count=1000))[:20]
