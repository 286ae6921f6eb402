"""The project's benchmarks, each run from the repository root as ``python -m benchmarks.<name>``
(``checkpointer``, ``saver_cpu``, ``wait_cost``, ``journal_cost``, ``failover_drills``,
``ai_caches``, ``query_cache``, ``asgi``); results go to ``benchmarks/results/``.

``workload`` is the LangGraph workload the checkpoint benchmarks share, ``report`` the
statistics, tables and results files they all write with."""
