"""What listing and sweeping cost as runs pile up, counted in Redis commands (not timed:
these machines are shared). A filtered page costs about what an unfiltered one costs,
and a sweep costs what runs, not what exists."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from devtools.redis_server import RedisServer
from tasks.config import Settings
from tasks.loader import load_scenarios
from tasks.scenario import Scenario
from tasks.store import RunStore
from worker.sweeper import Sweeper

pytestmark = pytest.mark.slow


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis of this test's own, so that its command counts are this test's only."""
    with RedisServer(port=0, data_dir=tmp_path / "redis") as server:
        yield server


@pytest.fixture
def store(server: RedisServer) -> Iterator[RunStore]:
    store = RunStore.from_settings(Settings(redis_url=server.url))
    yield store
    store.close()


@pytest.fixture
def stats(server: RedisServer) -> Iterator[redis.Redis]:
    """A client of that Redis, to read its command counts."""
    client = redis.Redis.from_url(server.url, decode_responses=True)
    yield client
    client.close()


def one_step(tmp_path: Path, scenario_id: str) -> Scenario:
    directory = tmp_path / scenario_id
    directory.mkdir()
    (directory / "s.yaml").write_text(
        f"schema_version: '1'\nscenario_id: {scenario_id}\nname: n\n"
        "steps:\n  - {name: s, tool: echo}\n"
    )
    return load_scenarios(directory, {"echo"}).scenarios[scenario_id]


def create(store: RunStore, scenario: Scenario, count: int) -> list[str]:
    run_ids = [str(uuid.uuid4()) for _ in range(count)]
    for i in range(0, count, 5000):
        store.create_runs([(r, scenario, {}) for r in run_ids[i : i + 5000]])
    return run_ids


def commands(client: redis.Redis) -> int:
    stats = client.info("commandstats")
    return sum(v["calls"] for k, v in stats.items() if k != "cmdstat_info")


def counted(client: redis.Redis, call: object) -> int:
    client.config_resetstat()
    assert callable(call)
    call()
    return commands(client) - 1  # the CONFIG RESETSTAT itself


def test_a_filtered_page_costs_what_an_unfiltered_one_does_at_100k_runs(
    store: RunStore, stats: redis.Redis, tmp_path: Path
) -> None:
    common, rare = one_step(tmp_path, "common"), one_step(tmp_path, "rare")
    rare_ids = create(store, rare, 60)
    create(store, common, 100_000)
    # The rare scenario's runs are the oldest: walking the whole index would find them
    # only after 100,000 others.
    for run_id in rare_ids[:30]:
        store.cancel_run(run_id)

    def page(**filters: str) -> None:
        runs, _ = store.list_runs(limit=50, **filters)  # type: ignore[arg-type]
        assert len(runs) == 50 or filters

    unfiltered = counted(stats, page)
    by_scenario = counted(stats, lambda: page(scenario_id="rare"))
    by_both = counted(stats, lambda: page(scenario_id="rare", status="cancelled"))
    by_status = counted(stats, lambda: page(status="cancelled"))
    assert unfiltered <= 60
    for cost in (by_scenario, by_both, by_status):
        assert cost <= unfiltered + 2, (unfiltered, by_scenario, by_both, by_status)
    listed, _ = store.list_runs(scenario_id="rare", status="cancelled", limit=50)
    assert sorted(r["run_id"] for r in listed) == sorted(rare_ids[:30])
    assert all("input" not in r for r in listed)
    listed, next_before = store.list_runs(scenario_id="rare", status="queued", limit=20)
    rest, _ = store.list_runs(scenario_id="rare", status="queued", limit=50, before=next_before)
    assert sorted(r["run_id"] for r in listed + rest) == sorted(rare_ids[30:])


def test_a_sweep_costs_what_runs_not_what_is_queued(
    store: RunStore, stats: redis.Redis, tmp_path: Path
) -> None:
    create(store, one_step(tmp_path, "queued"), 10_000)
    running = create(store, one_step(tmp_path, "running"), 5)
    for run_id in running:
        store.start_run(run_id, "w@h")
        assert store.start_step(run_id, "s", 1, "w@h") is not None
    # The sweep reads every running attempt (w@h never beat, but its attempts are
    # younger than the grace) and none of the queued runs: a handful of commands.
    store.reindex()  # once per Redis, by the first sweep of a worker: done here
    sweeper = Sweeper(store, "sweeper@h")
    sweeper.reindexed = True
    cost = counted(stats, sweeper.sweep)
    assert cost <= 12, cost
