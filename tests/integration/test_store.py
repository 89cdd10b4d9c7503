"""The run scripts against a real Redis: fencing, atomicity, terminal runs, limits."""

from __future__ import annotations

import json
import threading
import uuid
from dataclasses import replace
from typing import Any

import pytest
import redis
from conftest import wait_for

from tasks import keys
from tasks.config import Settings
from tasks.scenario import parse_scenario
from tasks.step_events import EventWriter
from tasks.store import RunStore

TOOLS = {"echo", "sleep", "fail"}


def scenario(*steps: dict[str, Any]) -> Any:
    return parse_scenario(
        {"schema_version": "1", "scenario_id": "s", "name": "S", "steps": list(steps)}, TOOLS
    )


DIAMOND = scenario(
    {"name": "a", "tool": "echo", "input": {"x": 1}},
    {"name": "b", "tool": "echo", "needs": ["a"], "input": {"v": {"from": "steps.a.output.x"}}},
    {"name": "c", "tool": "echo", "needs": ["a"]},
    {"name": "d", "tool": "echo", "needs": ["b", "c"]},
)


@pytest.fixture
def store(settings: Settings, r: redis.Redis) -> RunStore:
    return RunStore.from_settings(settings)


def new_run(store: RunStore, sc: Any = DIAMOND, run_input: Any = None) -> str:
    run_id = str(uuid.uuid4())
    store.create_run(run_id, sc, run_input or {})
    return run_id


def stream(store: RunStore, run_id: str) -> list[dict[str, Any]]:
    return [e.to_dict() for e in store.read_events(run_id, "0", 10_000)]


def succeed(store: RunStore, run_id: str, step: str, attempt: int = 1, output: Any = None):
    assert store.start_step(run_id, step, attempt, "w@test") is not None
    return store.finish_step(run_id, step, attempt, "succeeded", "", json.dumps(output))


def test_a_run_walks_the_dag_and_finishes_once(store: RunStore) -> None:
    run_id = new_run(store)
    started = store.start_run(run_id, "w@test")
    assert started.outcome == "started" and [s.step for s in started.ready] == ["a"]
    t = succeed(store, run_id, "a", output={"x": 7})
    assert sorted(s.step for s in t.ready) == ["b", "c"]
    inputs_b = store.attempt_inputs(run_id, "b")
    assert inputs_b is not None and inputs_b.outputs == {"a": {"x": 7}}
    assert store.start_step(run_id, "b", 1, "w@test") is not None
    store.finish_step(run_id, "b", 1, "succeeded", "", "1")
    t = succeed(store, run_id, "c")
    assert [s.step for s in t.ready] == ["d"]
    t = succeed(store, run_id, "d")
    assert t.run_status == "succeeded"
    events = stream(store, run_id)
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[-1]["type"] == "run_finished" and events[-1]["status"] == "succeeded"
    snap = store.snapshot(run_id)
    assert snap is not None and snap["last_event_id"] == events[-1]["id"]


def test_fencing_makes_duplicate_messages_harmless(store: RunStore) -> None:
    run_id = new_run(store)
    store.start_run(run_id, "w@test")
    again = store.start_run(run_id, "w@test")
    # A redelivered run_scenario re-offers the root nobody started, without a 2nd event.
    assert again.outcome == "running" and [s.step for s in again.ready] == ["a"]
    assert store.start_step(run_id, "a", 1, "w@1") is not None
    assert store.start_step(run_id, "a", 1, "w@2") is None  # taken
    assert store.start_step(run_id, "a", 2, "w@2") is None  # no such attempt
    assert store.start_run(run_id, "w@test").ready == []  # started now
    done = store.finish_step(run_id, "a", 1, "succeeded", "", "{}")
    assert done.outcome == "recorded"
    dup = store.finish_step(run_id, "a", 1, "succeeded", "", "{}")
    assert dup.outcome == "stale" and dup.events == [] and dup.ready == []
    # The duplicate's continuation: b and c are ready and unstarted, so offered again...
    assert sorted(s.step for s in store.continuation(run_id, "a", 1)) == ["b", "c"]
    store.start_step(run_id, "b", 1, "w@1")
    # ...but never once started.
    assert [s.step for s in store.continuation(run_id, "a", 1)] == ["c"]
    types = [e["type"] for e in stream(store, run_id)]
    assert types.count("step_started") == 2 and types.count("run_started") == 1


def test_events_of_a_finished_attempt_or_run_are_refused(store: RunStore) -> None:
    sc = scenario({"name": "only", "tool": "echo"})
    run_id = new_run(store, sc)
    store.start_run(run_id, "w@test")
    store.start_step(run_id, "only", 1, "w@test")
    assert store.step_event(run_id, "only", 1, "step_log", {"message": "hi"}, number=1)
    assert not store.step_event(run_id, "only", 2, "step_log", {"message": "x"}, number=1)
    store.finish_step(run_id, "only", 1, "succeeded", "", "{}")
    before = stream(store, run_id)
    assert before[-1]["type"] == "run_finished"
    assert not store.step_event(
        run_id, "only", 1, "step_progress", {"progress": 1.0}, progress=1.0, number=2
    )
    assert store.start_step(run_id, "only", 1, "w@test") is None
    assert store.start_run(run_id, "w@test").outcome == "finished"
    assert stream(store, run_id) == before


def test_failure_skips_everything_downstream_and_fails_the_run(store: RunStore) -> None:
    run_id = new_run(store)
    store.start_run(run_id, "w@test")
    succeed(store, run_id, "a")
    store.start_step(run_id, "b", 1, "w@test")
    failed = store.finish_step(run_id, "b", 1, "failed", "nope", "")
    assert failed.ready == [] and failed.run_status == "running"  # c still pending
    snap = store.snapshot(run_id)
    assert snap is not None
    assert {s["name"]: s["status"] for s in snap["steps"]} == {
        "a": "succeeded",
        "b": "failed",
        "c": "pending",
        "d": "skipped",
    }
    t = succeed(store, run_id, "c")
    assert t.ready == [] and t.run_status == "failed"
    final = stream(store, run_id)[-1]
    assert final["reason"] == "step_failed" and final["message"] == "step b failed: nope"


def test_retry_makes_the_next_attempt_ready_with_its_delay(store: RunStore) -> None:
    sc = scenario(
        {
            "name": "flaky",
            "tool": "echo",
            "retry": {"max_attempts": 3, "backoff_s": 2.5, "backoff_factor": 2.0},
        }
    )
    run_id = new_run(store, sc)
    store.start_run(run_id, "w@test")
    store.start_step(run_id, "flaky", 1, "w@test")
    t = store.finish_step(run_id, "flaky", 1, "failed", "try again", "")
    assert t.outcome == "retrying"
    assert [(s.step, s.attempt, s.delay_s) for s in t.ready] == [("flaky", 2, 2.5)]
    retrying = stream(store, run_id)[-1]
    assert retrying["type"] == "step_retrying" and retrying["delay_s"] == 2.5
    snap = store.snapshot(run_id)
    assert snap is not None and snap["steps"][0]["status"] == "running"
    assert snap["steps"][0]["attempt"] == 2
    # A duplicate of attempt 1's message re-dispatches the retry, not attempt 1.
    assert [(s.step, s.attempt) for s in store.continuation(run_id, "flaky", 1)] == [("flaky", 2)]
    # The delay grows by the factor; the last attempt's failure is final.
    store.start_step(run_id, "flaky", 2, "w@test")
    t = store.finish_step(run_id, "flaky", 2, "failed", "again", "")
    assert [(s.attempt, s.delay_s) for s in t.ready] == [(3, 5.0)]
    store.start_step(run_id, "flaky", 3, "w@test")
    t = store.finish_step(run_id, "flaky", 3, "failed", "no more", "")
    assert t.outcome == "recorded" and t.run_status == "failed"


def test_retry_delay(store: RunStore) -> None:
    """The backoff formula exists once, in finish_step.lua: the delay after attempt n
    is backoff_s * backoff_factor ** (n - 1)."""
    sc = scenario(
        {
            "name": "flaky",
            "tool": "echo",
            "retry": {"max_attempts": 4, "backoff_s": 1.5, "backoff_factor": 2.0},
        }
    )
    run_id = new_run(store, sc)
    store.start_run(run_id, "w@test")
    delays = []
    for attempt in (1, 2, 3):
        assert store.start_step(run_id, "flaky", attempt, "w@test") is not None
        (ready,) = store.finish_step(run_id, "flaky", attempt, "failed", "again", "").ready
        delays.append(ready.delay_s)
    assert delays == [1.5, 3.0, 6.0]


def test_no_retry_once_the_run_is_being_cancelled(store: RunStore) -> None:
    sc = scenario({"name": "flaky", "tool": "echo", "retry": {"max_attempts": 5}})
    run_id = new_run(store, sc)
    store.start_run(run_id, "w@test")
    store.start_step(run_id, "flaky", 1, "w@test")
    assert store.cancel_run(run_id).outcome == "cancelling"
    t = store.finish_step(run_id, "flaky", 1, "failed", "broke", "")
    assert t.outcome == "recorded" and t.ready == [] and t.run_status == "cancelled"
    assert [e["type"] for e in stream(store, run_id)].count("step_retrying") == 0


def test_cancel_while_queued_finishes_at_once_and_enforce_is_idempotent(
    store: RunStore,
) -> None:
    run_id = new_run(store)
    t = store.cancel_run(run_id)
    assert t.outcome == "cancelled"
    events = stream(store, run_id)
    assert [e["type"] for e in events] == ["run_queued"] + ["step_finished"] * 4 + ["run_finished"]
    assert store.start_run(run_id, "w@test").outcome == "finished"
    assert store.cancel_run(run_id).outcome == "finished"
    assert store.enforce_cancel(run_id) == []
    assert stream(store, run_id) == events


def test_large_outputs_stay_out_of_events_but_in_the_snapshot(store: RunStore) -> None:
    sc = scenario({"name": "big", "tool": "echo"})
    run_id = new_run(store, sc)
    store.start_run(run_id, "w@test")
    big = {"blob": "x" * 20_000}
    succeed(store, run_id, "big", output=big)
    finished = next(e for e in stream(store, run_id) if e["type"] == "step_finished")
    assert finished["output_truncated"] is True and "output" not in finished
    snap = store.snapshot(run_id)
    assert snap is not None and snap["steps"][0]["output"] == big


def test_user_data_passes_through_unchanged(store: RunStore) -> None:
    """Outputs and inputs never go through Lua's cjson: numbers and [] stay as they are."""
    sc = scenario({"name": "only", "tool": "echo"})
    value = {
        "big": 12345678901234567890,
        "pi": 3.141592653589793,
        "empty": [],
        "obj": {},
        "text": 'quote" slash/ \u00e9 \U0001f600',
    }
    run_id = new_run(store, sc, value)
    store.start_run(run_id, "w@test")
    succeed(store, run_id, "only", output=value)
    events = stream(store, run_id)
    assert events[0]["input"] == value
    assert next(e for e in events if e["type"] == "step_finished")["output"] == value
    snap = store.snapshot(run_id)
    assert snap is not None and snap["input"] == value and snap["steps"][0]["output"] == value


def test_finished_runs_expire_and_streams_are_capped(settings: Settings, r: redis.Redis) -> None:
    store = RunStore.from_settings(replace(settings, run_ttl_s=1234, event_maxlen=50))
    sc = scenario({"name": "chatty", "tool": "echo"})
    run_id = new_run(store, sc)
    store.start_run(run_id, "w@test")
    store.start_step(run_id, "chatty", 1, "w@test")
    for i in range(1000):
        store.step_event(run_id, "chatty", 1, "step_log", {"message": str(i)}, number=i + 1)
    # MAXLEN ~ trims whole stream nodes (100 entries by default), never below 50.
    assert 50 <= r.xlen(keys.run_events(run_id)) <= 250
    for key in keys.run_keys(run_id):
        assert r.ttl(key) == -1  # running: never expires
    store.finish_step(run_id, "chatty", 1, "succeeded", "", "1")
    for key in keys.run_keys(run_id):
        assert 0 < r.ttl(key) <= 1234
    assert stream(store, run_id)[-1]["seq"] == 3 + 1000 + 2


def test_snapshot_never_disagrees_with_the_stream(store: RunStore, r: redis.Redis) -> None:
    """Under concurrent appends, every snapshot's last_event_id carries its own seq."""
    sc = scenario({"name": "busy", "tool": "echo"})
    run_id = new_run(store, sc)
    store.start_run(run_id, "w@test")
    store.start_step(run_id, "busy", 1, "w@test")
    stop = threading.Event()

    def writer() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            store.step_event(
                run_id,
                "busy",
                1,
                "step_progress",
                {"progress": (i % 100) / 100, "message": str(i)},
                progress=(i % 100) / 100,
                number=i,
            )

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        for _ in range(200):
            snap = store.snapshot(run_id)
            assert snap is not None
            last = r.xrange(keys.run_events(run_id), snap["last_event_id"], snap["last_event_id"])
            event = json.loads(last[0][1]["data"])
            if event["type"] == "step_progress":
                assert snap["steps"][0]["message"] == event["message"]
                assert snap["steps"][0]["progress"] == event["progress"]
    finally:
        stop.set()
        thread.join()


@pytest.mark.slow
def test_expired_runs_leave_the_index(settings: Settings, r: redis.Redis) -> None:
    store = RunStore.from_settings(replace(settings, run_ttl_s=1))
    sc = scenario({"name": "only", "tool": "echo"})
    old = new_run(store, sc)
    store.start_run(old, "w@test")
    succeed(store, old, "only")
    wait_for(lambda: not r.exists(keys.run(old)), timeout=10, what="the run to expire")
    assert r.zscore(keys.runs_index(), old) is not None  # expired, not yet forgotten
    # Listing skips it and forgets it...
    assert old not in [s["run_id"] for s in store.list_runs(limit=50)[0]]
    assert r.zscore(keys.runs_index(), old) is None
    # ...and so does creating runs, without anyone listing.
    other = new_run(store, sc)
    store.start_run(other, "w@test")
    succeed(store, other, "only")
    wait_for(lambda: not r.exists(keys.run(other)), timeout=10, what="the run to expire")
    new_run(store, sc)
    wait_for(
        lambda: r.zscore(keys.runs_index(), other) is None or new_run(store, sc) is None,
        timeout=10,
        what="the index to forget the expired run",
    )
    assert all(r.exists(keys.run(run_id)) for run_id in r.zrange(keys.runs_index(), 0, -1))


def test_every_write_is_safe_to_repeat_after_a_lost_reply(store: RunStore) -> None:
    """A worker retries a write whose reply it lost; Redis may have applied it already.

    Each script recognises its own earlier effect: the repeat changes nothing and still
    answers what the caller needs to go on.
    """
    sc = scenario(
        {"name": "a", "tool": "echo"},
        {"name": "b", "tool": "echo", "needs": ["a"]},
    )
    run_id = str(uuid.uuid4())
    created = store.create_run(run_id, sc, {"n": 1})
    again = store.create_run(run_id, sc, {"n": 1})
    assert again.summary == created.summary and again.events == created.events

    assert [s.step for s in store.start_run(run_id, "w@1").ready] == ["a"]
    assert [s.step for s in store.start_run(run_id, "w@1").ready] == ["a"]

    first = store.start_step(run_id, "a", 1, "w@1", "task-1", token="t1")
    repeat = store.start_step(run_id, "a", 1, "w@1", "task-1", token="t1")
    assert first is not None and repeat is not None and repeat.events == []
    # The same message delivered again is a new execution, with a new token: refused.
    assert store.start_step(run_id, "a", 1, "w@1", "task-1", token="t2") is None

    for number in (1, 1, 2, 2, 3):
        store.step_event(
            run_id, "a", 1, "step_progress", {"progress": number / 3}, progress=number / 3,
            number=number,
        )  # fmt: skip

    done = store.finish_step(run_id, "a", 1, "succeeded", "", "1")
    assert [s.step for s in done.ready] == ["b"]
    repeat_finish = store.finish_step(run_id, "a", 1, "succeeded", "", "1")
    assert repeat_finish.outcome == "stale" and repeat_finish.events == []
    assert [s.step for s in store.continuation(run_id, "a", 1)] == ["b"]

    store.start_step(run_id, "b", 1, "w@1", "task-2", token="t3")
    resumed = store.resume_step(run_id, "b", 1, "worker_lost", holder="w@1")
    repeat_resume = store.resume_step(run_id, "b", 1, "worker_lost", holder="w@1")
    assert resumed.outcome == repeat_resume.outcome == "resumed"
    assert [(s.step, s.attempt) for s in repeat_resume.ready] == [("b", 2)]
    assert repeat_resume.events == []
    assert store.resume_step(run_id, "b", 1, "worker_lost", holder="w@2").outcome == "stale"

    events = stream(store, run_id)
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert [e["type"] for e in events] == [
        "run_queued",
        "run_started",
        "step_started",
        "step_progress",
        "step_progress",
        "step_progress",
        "step_finished",
        "step_started",
    ]
    assert [e["progress"] for e in events if e["type"] == "step_progress"] == [1 / 3, 2 / 3, 1.0]
    assert store.snapshot(run_id)["steps"][1]["attempt"] == 2


def test_a_chatty_steps_events_are_batched_in_order(settings: Settings, r: redis.Redis) -> None:
    class CountingStore(RunStore):
        calls = 0

        def step_events(self, *args: Any, **kwargs: Any) -> Any:
            CountingStore.calls += 1
            return super().step_events(*args, **kwargs)

    store = CountingStore.from_settings(settings)
    sc = scenario({"name": "chatty", "tool": "echo"})
    run_id = new_run(store, sc)
    store.start_run(run_id, "w@test")
    store.start_step(run_id, "chatty", 1, "w@test")
    writer = EventWriter(store, run_id, "chatty", 1)
    for i in range(1, 5001):
        if i % 1000 == 0:
            writer.put("step_log", {"message": f"log {i}"})
        else:
            writer.put("step_progress", {"progress": i / 5000, "message": str(i)}, i / 5000)
    writer.close()
    events = stream(store, run_id)[3:]
    assert len(events) == 5000
    assert [e["message"] for e in events] == [
        f"log {i}" if i % 1000 == 0 else str(i) for i in range(1, 5001)
    ]
    assert [e["seq"] for e in events] == list(range(4, 5004))
    assert CountingStore.calls < 5000 / 4  # batched, not one round trip per event
    assert store.snapshot(run_id)["steps"][0]["progress"] == 4999 / 5000


def test_a_batch_retried_in_part_appends_only_its_new_events(store: RunStore) -> None:
    """A batch repeated after a lost reply, with more events behind it: the events
    already appended are not appended again, the rest are, seq stays gapless, and the
    step's progress is the newest."""
    run_id = new_run(store, scenario({"name": "chatty", "tool": "echo"}))
    store.start_run(run_id, "w@test")
    store.start_step(run_id, "chatty", 1, "w@test")

    def item(n: int) -> Any:
        if n % 3 == 0:
            return ("step_log", {"message": f"log {n}"}, None, n)
        return ("step_progress", {"progress": n / 10, "message": f"at {n}"}, n / 10, n)

    assert store.step_events(run_id, "chatty", 1, [item(n) for n in range(1, 6)]) == 5
    assert store.step_events(run_id, "chatty", 1, [item(n) for n in range(3, 10)]) == 4
    assert store.step_events(run_id, "chatty", 1, [item(n) for n in range(1, 10)]) == 0
    events = stream(store, run_id)[3:]
    assert [e["message"] for e in events] == [item(n)[1]["message"] for n in range(1, 10)]
    assert [e["seq"] for e in events] == list(range(4, 13))
    step = store.snapshot(run_id)["steps"][0]
    assert (step["progress"], step["message"]) == (0.8, "at 8")  # 9 is a log line


def test_a_batch_whose_events_are_not_numbered_one_by_one_is_refused(store: RunStore) -> None:
    run_id = new_run(store, scenario({"name": "chatty", "tool": "echo"}))
    store.start_run(run_id, "w@test")
    store.start_step(run_id, "chatty", 1, "w@test")
    batch = [("step_log", {"message": str(n)}, None, n) for n in (1, 2, 4)]
    with pytest.raises(ValueError, match="one by one"):
        store.step_events(run_id, "chatty", 1, batch)  # type: ignore[arg-type]
    assert len(stream(store, run_id)) == 3  # nothing appended


def test_line_separators_in_messages_are_escaped_in_every_event(
    store: RunStore, r: redis.Redis
) -> None:
    """U+2028, U+2029 and U+0085 are legal in JSON but end lines for JavaScript and some
    line readers: no event carries them raw, and every event reads back exactly."""
    one = scenario({"name": "a", "tool": "echo"})
    run_id = new_run(store, one)
    store.start_run(run_id, "w\u2028@test")
    store.start_step(run_id, "a", 1, "w\u2028@test")
    store.step_events(run_id, "a", 1, [("step_log", {"message": "log \u2029 line"}, None, 1)])
    store.finish_step(run_id, "a", 1, "failed", "one\u2028two\u2029three\u0085four", "")
    raw = [fields["data"] for _, fields in r.xrange(keys.run_events(run_id))]
    assert raw and not any(c in data for data in raw for c in "\u2028\u2029\u0085")
    events = stream(store, run_id)
    assert events[-1]["message"] == "step a failed: one\u2028two\u2029three\u0085four"
    assert events[1]["worker"] == "w\u2028@test"


def test_runs_of_an_earlier_version_join_the_indexes_once(store: RunStore, r: redis.Redis) -> None:
    """A run created before the listing and watch indexes existed (here: taken out of
    them) is listed by status and scenario, and its running attempt watched, after
    `reindex`, which the first sweep of a worker calls; a second call does nothing."""
    run_id = new_run(store)
    store.start_run(run_id, "w@test")
    assert store.start_step(run_id, "a", 1, "w@test") is not None
    (entry,) = r.zrange(keys.running_attempts(), 0, -1)
    started_us = int(r.hget(keys.run_steps(run_id), "a.started_us"))  # type: ignore[arg-type]
    pipe = r.pipeline()
    pipe.zrem(keys.runs_by_status("running"), run_id)
    pipe.zrem(keys.runs_by_scenario("s"), run_id)
    pipe.zrem(keys.runs_by_scenario("s", "running"), run_id)
    pipe.hdel(keys.scenario_of(), run_id)
    pipe.zrem(keys.running_attempts(), entry)
    pipe.hset(keys.run_steps(run_id), "a.running_member", "")
    pipe.delete(keys.indexes_version())
    pipe.execute()
    assert store.list_runs(status="running")[0] == []

    assert store.reindex() == 1
    assert [r["run_id"] for r in store.list_runs(status="running")[0]] == [run_id]
    assert [r["run_id"] for r in store.list_runs(scenario_id="s", status="running")[0]] == [run_id]
    (attempt,) = store.running_attempts()
    assert (attempt.run_id, attempt.step, attempt.attempt, attempt.worker) == (
        run_id,
        "a",
        1,
        "w@test",
    )
    assert attempt.started == started_us // 1000 / 1000
    assert store.reindex() == 0
    store.finish_step(run_id, "a", 1, "succeeded", "", "null")
    assert r.zcard(keys.running_attempts()) == 0
