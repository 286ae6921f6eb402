#!/usr/bin/env python3
"""Run the demo or the tests in a project-local virtualenv, creating it on first use.

    python3 run.py demo                 # the demos in DEMOS, one after another
    python3 run.py test [pytest args]   # pytest, default args: -q

Standard library only, so it works on a fresh machine with any Python >= 3.10.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / ("python.exe" if os.name == "nt" else "python")
EXTRAS = "all,dev"
# Lives inside .venv so deleting the venv also forgets the install.
STAMP = VENV / ".stamp-install"

# The whole stack, face by face; each runs on Redis at REDIS_URL when reachable, else in memory.
DEMOS = (
    "examples/demo.py",
    "examples/ai_caches_demo.py",
    "examples/web_caches_demo.py",
)
# Printed after the demos: where each part they showed is explained.
READ_NEXT = (
    ("the checkpoint saver, TTLs, history", "docs/saver.md"),
    ("what happens while Redis is away", "docs/outages.md"),
    ("the memory store and vector search", "docs/store.md"),
    ("LLM, semantic, embedding and node caches", "docs/llm-cache.md"),
    ("DB-query and HTTP caches, sessions", "docs/query-cache.md"),
    ("metrics, health, the CLI", "docs/operations.md"),
    ("numbers against every peer", "docs/benchmarks.md"),
)

USAGE = """\
usage: python3 run.py demo                 run the demos (examples/*demo.py)
       python3 run.py test [pytest args]   run the tests (default args: -q)"""

NO_REDIS_SERVER = (
    "redis-server not found: the tests start their own servers; install it "
    "(Debian/Ubuntu: sudo apt-get install redis-server; macOS: brew install redis) "
    "or set REDIS_SERVER_BIN"
)


def say(message: str) -> None:
    print(f"run.py: {message}", flush=True)


def install_key() -> str:
    # The extras are part of the key: asking for other extras must reinstall too.
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes())
    digest.update(f"\0{EXTRAS}".encode())
    return digest.hexdigest()


def venv_works() -> bool:
    if not PYTHON.exists():
        return False
    # A venv outlives the interpreter it points at (e.g. a removed pyenv version).
    probe = subprocess.run([str(PYTHON), "-c", "pass"], capture_output=True)
    return probe.returncode == 0


def check(cmd: list[str], what: str) -> None:
    # pip's -q still lets build-backend warnings through; show its output only when it fails.
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        sys.stdout.write(result.stdout)
        sys.stderr.write(result.stderr)
        say(f"{what} failed (exit code {result.returncode}); see the output above")
        sys.exit(result.returncode)


def ensure_venv() -> None:
    if not venv_works():
        say("creating .venv" if not VENV.exists() else "recreating .venv (it no longer runs)")
        cmd = [sys.executable, "-m", "venv", *(["--clear"] if VENV.exists() else []), str(VENV)]
        if subprocess.run(cmd, cwd=ROOT).returncode != 0:
            # Debian/Ubuntu ship venv's pip bootstrap separately.
            say("could not create .venv; on Debian/Ubuntu: sudo apt-get install python3-venv")
            sys.exit(1)
    key = install_key()
    if STAMP.exists() and STAMP.read_text().strip() == key:
        return
    say("installing dependencies (first run takes a minute)")
    # A stale stamp must not survive a failed install.
    STAMP.unlink(missing_ok=True)
    pip = [str(PYTHON), "-m", "pip", "--disable-pip-version-check"]
    check([*pip, "install", "--quiet", "--upgrade", "pip"], "upgrading pip")
    check([*pip, "install", "--quiet", "-e", f".[{EXTRAS}]"], "installing the project")
    STAMP.write_text(key + "\n")
    say("dependencies installed")


def redis_server_found() -> bool:
    # Same rule as redis_checkpoint.testing.find_redis_server, which the tests use.
    configured = os.environ.get("REDIS_SERVER_BIN")
    if configured:
        return os.access(configured, os.X_OK)
    return shutil.which("redis-server") is not None


def run(cmd: list[str]) -> int:
    try:
        code = subprocess.run(cmd, cwd=ROOT).returncode
    except KeyboardInterrupt:
        # The child got the same Ctrl-C; report it the way a shell would.
        return 130
    # A child killed by a signal reports -N; shells use 128 + N.
    return 128 - code if code < 0 else code


def main(argv: list[str]) -> int:
    # run.py is started by whatever python3 is on PATH, which may predate the project's floor.
    if sys.version_info < (3, 10):  # noqa: UP036
        say(f"Python >= 3.10 is required, this is {sys.version.split()[0]}")
        return 2
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0 if argv else 2
    command, args = argv[0], argv[1:]
    if command == "demo":
        ensure_venv()
        for script in DEMOS:
            say(f"{script}")
            code = run([str(PYTHON), script, *args])
            if code != 0:
                return code
        print("\nRead next (or browse them all: .venv/bin/mkdocs serve):")
        for topic, page in READ_NEXT:
            print(f"  {topic:<42} {page}")
        return 0
    if command == "test":
        if not redis_server_found():
            if os.environ.get("CI", "").lower() != "true":
                say(NO_REDIS_SERVER)
                return 2
            # On CI the conftest turns this into loud failures instead of skips.
            say(f"warning: {NO_REDIS_SERVER}")
        ensure_venv()
        return run([str(PYTHON), "-m", "pytest", *(args or ["-q"])])
    print(f"run.py: unknown command {command!r}\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
