"""benchmarks/run_deletion.py in a tiny mode: the shape of what it reports (no wall-clock
assertions), and that the run index keeps the work of delete_for_runs the same at both sizes."""

from __future__ import annotations

from benchmarks import run_deletion


def test_the_run_deletion_benchmark_reports_each_size_and_the_ratio(
    redis_server_bin: str,
) -> None:
    result = run_deletion.run([10, 40], repeats=2)
    rows = result["sizes"]
    writer, fresh = run_deletion.WRITER, run_deletion.FRESH
    assert [(row["bystander_threads"], row["saver"]) for row in rows] == [
        (10, writer),
        (10, fresh),
        (40, writer),
        (40, fresh),
    ]
    for row in rows:
        assert len(row["ms"]) == 2 and all(ms > 0 for ms in row["ms"])
        assert row["problems"] == []
        # one delete script per thread the run wrote to
        assert row["scripts_run"] == [run_deletion.RUN_THREADS]
    # the bystanders add no round trips: the run index names the run's threads
    assert len({tuple(row["round_trips"]) for row in rows}) == 1
    assert rows[2]["keys_on_server"] > rows[0]["keys_on_server"]
    assert result["ratio_last_to_first"] > 0 and result["ratio_last_to_first_fresh_saver"] > 0
    text = run_deletion.report(result, "python -m benchmarks.run_deletion --sizes 10,40")
    header = next(line for line in text.splitlines() if line.startswith("| bystander threads |"))
    assert "| deleting saver" in header and "| median ms |" in header
    assert "Median at 40 over median at 10 bystander threads" in text
