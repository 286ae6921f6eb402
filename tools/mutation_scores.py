#!/usr/bin/env python
"""Mutation scores of the pure modules: the share of mutants their tests kill.

    python tools/mutation_scores.py                         # every module of [tool.mutmut]
    python tools/mutation_scores.py redis_checkpoint.web.rfc9111 redis_checkpoint.cache.keys
    python tools/mutation_scores.py --report                # the table of the last run

The selected tests are the unit-level ones (``[tool.mutmut]``): a full run takes minutes.
The saver's real-server tests would kill more of ``checkpoint.codec``'s mutants, at seconds
each: hours for a full run.

mutmut copies the project into mutants/ and runs the selected tests against each mutant. A
mutant is killed when a test fails; it survives when every test passes, which marks a behaviour
no test pins down.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KILLED = {1, 3}  # pytest: tests failed; interrupted by a failing test
SURVIVED = {0}


def scores(mutants: Path) -> list[tuple[str, int, int, int, int]]:
    """(module, mutants, killed, survived, other) per mutated module."""
    rows = []
    for meta in sorted(mutants.rglob("*.py.meta")):
        codes = Counter(json.loads(meta.read_text())["exit_code_by_key"].values())
        total = sum(codes.values())
        killed = sum(n for code, n in codes.items() if code in KILLED)
        survived = sum(n for code, n in codes.items() if code in SURVIVED)
        module = str(meta.relative_to(mutants)).removesuffix(".meta")
        rows.append((module, total, killed, survived, total - killed - survived))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="*", help="dotted module names (default: all)")
    parser.add_argument("--report", action="store_true", help="print the last run's scores")
    args = parser.parse_args()
    if not args.report:
        names = [f"{module}.*" for module in args.modules]
        done = subprocess.run([sys.executable, "-m", "mutmut", "run", *names], cwd=ROOT)
        if done.returncode not in (0, 1):
            return done.returncode
    rows = scores(ROOT / "mutants")
    if not rows:
        print("no mutmut results: run without --report first", file=sys.stderr)
        return 1
    print(f"{'module':<42} {'mutants':>7} {'killed':>6} {'survived':>8} {'other':>5} {'score':>6}")
    for module, total, killed, survived, other in rows:
        # A module whose mutants this run did not check has no score.
        score = f"{killed / total:.1%}" if killed + survived else "-"
        print(f"{module:<42} {total:>7} {killed:>6} {survived:>8} {other:>5} {score:>6}")
    print("\nsurvivors: python -m mutmut results; one mutant: python -m mutmut show NAME")
    return 0


if __name__ == "__main__":
    sys.exit(main())
