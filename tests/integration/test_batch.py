"""`POST /api/runs/batch` (SPEC §15): every entry checked first, one bad entry creates
nothing, the runs recorded together and their roots sent through one producer, and an
`Idempotency-Key` that stands for the batch as a whole.

The app sends its messages to a broker database no worker reads (the `broker`
fixture), so what a batch sent is counted there; the runs of one test are run to their
end by the session's worker.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import redis

from devtools.celery_worker import WorkerProcess
from tasks import keys
from tests.conftest import url_of
from tests.stacks import events_until_finished

#: 1,000 entries, the most a batch takes.
FULL = 1000


def entry(name: str = "Ada") -> dict[str, Any]:
    return {"scenario_id": "hello_sequence", "input": {"name": name}}


@pytest.fixture
def client(app_factory: Callable[..., Any], r: redis.Redis, broker: redis.Redis) -> Any:
    return app_factory(broker_url=url_of(broker)).test_client()


def messages(broker: redis.Redis) -> list[dict[str, Any]]:
    return [json.loads(raw) for raw in broker.lrange("stepstream", 0, -1)]


def nothing_created(r: redis.Redis, broker: redis.Redis) -> None:
    assert list(r.scan_iter("stepstream:run:*")) == []
    assert r.zcard(keys.runs_index()) == 0
    assert r.zcard(keys.owed_dispatches()) == 0
    assert broker.llen("stepstream") == 0


def test_a_batch_creates_its_runs_in_order_and_sends_their_roots(
    client: Any, r: redis.Redis, broker: redis.Redis
) -> None:
    names = [f"n{i}" for i in range(5)]
    response = client.post("/api/runs/batch", json={"runs": [entry(n) for n in names]})
    assert response.status_code == 202, response.get_data(as_text=True)
    runs = response.get_json()["runs"]
    assert [run["input"]["name"] for run in runs] == names  # in order, defaults filled
    assert {run["status"] for run in runs} == {"queued"}
    assert len({run["run_id"] for run in runs}) == 5
    assert r.zcard(keys.runs_index()) == 5
    sent = messages(broker)
    assert [m["headers"]["task"] for m in sent] == ["stepstream.run_step"] * 5
    assert sorted(m["headers"]["id"] for m in sent)  # one message per root
    assert {m["headers"]["kwargsrepr"].split("'run_id': '")[1][:36] for m in sent} == {
        run["run_id"] for run in runs
    }


def test_a_full_batch_with_one_invalid_entry_creates_nothing(
    client: Any, r: redis.Redis, broker: redis.Redis
) -> None:
    entries = [entry(f"n{i}") for i in range(FULL)]
    entries[3] = {"scenario_id": "hello_sequence", "input": {"name": ""}}  # minLength 1
    entries[700] = {"scenario_id": "no_such_scenario", "input": {}}
    entries[999] = {"scenario_id": "hello_sequence", "input": {}, "extra": 1}
    response = client.post("/api/runs/batch", json={"runs": entries})
    assert response.status_code == 422, response.get_data(as_text=True)
    details = response.get_json()["error"]["details"]
    assert {d["index"] for d in details} == {3, 700, 999}
    (name,) = [d for d in details if d["index"] == 3]
    assert name["path"] == "$.name"
    (unknown,) = [d for d in details if d["index"] == 700]
    assert unknown["path"] == "$.scenario_id" and "no_such_scenario" in unknown["message"]
    nothing_created(r, broker)
    # No key of a run, an index of runs or a claim (the worker's heartbeat and the
    # sweeper's lock live in this database too).
    assert [k for k in r.scan_iter("stepstream:run*")] == []
    assert [k for k in r.scan_iter("stepstream:idem*")] == []


def test_a_full_valid_batch_is_accepted(client: Any, r: redis.Redis, broker: redis.Redis) -> None:
    response = client.post("/api/runs/batch", json={"runs": [entry() for _ in range(FULL)]})
    assert response.status_code == 202
    assert len(response.get_json()["runs"]) == FULL
    assert r.zcard(keys.runs_index()) == FULL
    assert broker.llen("stepstream") == FULL


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"runs": []},
        {"runs": [entry()] * (FULL + 1)},
        {"runs": "x"},
        {"runs": [entry()], "extra": 1},
        [entry()],
    ],
)
def test_a_malformed_batch_is_400_and_creates_nothing(
    client: Any, r: redis.Redis, broker: redis.Redis, body: Any
) -> None:
    response = client.post("/api/runs/batch", json=body)
    assert response.status_code == 400, response.get_data(as_text=True)
    nothing_created(r, broker)


def test_an_entry_that_is_not_an_object_is_named_by_index(
    client: Any, r: redis.Redis, broker: redis.Redis
) -> None:
    response = client.post("/api/runs/batch", json={"runs": [entry(), 5]})
    assert response.status_code == 422
    assert [d["index"] for d in response.get_json()["error"]["details"]] == [1]
    nothing_created(r, broker)


def test_a_batch_too_large_is_413(
    app_factory: Callable[..., Any], r: redis.Redis, broker: redis.Redis
) -> None:
    small = app_factory(max_body_bytes=200, broker_url=url_of(broker)).test_client()
    # Eight times the single POST's limit is allowed to a batch, no more.
    body = json.dumps({"runs": [entry("x" * 100) for _ in range(20)]})
    assert len(body) > 8 * 200
    response = small.post("/api/runs/batch", data=body, content_type="application/json")
    assert response.status_code == 413
    nothing_created(r, broker)
    fits = json.dumps({"runs": [entry("x" * 100) for _ in range(5)]})
    assert 200 < len(fits) < 8 * 200
    ok = small.post("/api/runs/batch", data=fits, content_type="application/json")
    assert ok.status_code == 202


def test_a_batch_unsent_is_undone_and_503(app_factory: Callable[..., Any], r: redis.Redis) -> None:
    cut_off = app_factory(broker_url="redis://127.0.0.1:1/0").test_client()
    response = cut_off.post("/api/runs/batch", json={"runs": [entry(), entry()]})
    assert response.status_code == 503
    assert list(r.scan_iter("stepstream:run:*")) == []
    assert r.zcard(keys.runs_index()) == 0 and r.zcard(keys.owed_dispatches()) == 0


# -- Idempotency-Key -------------------------------------------------------------------


def test_the_same_key_and_batch_replays_the_same_runs(
    client: Any, r: redis.Redis, broker: redis.Redis
) -> None:
    body = {"runs": [entry("a"), entry("b"), entry("c")]}
    first = client.post("/api/runs/batch", json=body, headers={"Idempotency-Key": "k1"})
    assert first.status_code == 202
    again = client.post("/api/runs/batch", json=body, headers={"Idempotency-Key": "k1"})
    assert again.status_code == 200
    ids = [run["run_id"] for run in first.get_json()["runs"]]
    assert [run["run_id"] for run in again.get_json()["runs"]] == ids
    assert r.zcard(keys.runs_index()) == 3
    assert broker.llen("stepstream") == 3


def test_the_same_key_with_another_batch_is_409(
    client: Any, r: redis.Redis, broker: redis.Redis
) -> None:
    body = {"runs": [entry("a"), entry("b")]}
    assert client.post("/api/runs/batch", json=body, headers={"Idempotency-Key": "k2"}).status_code
    other = {"runs": [entry("a")]}
    response = client.post("/api/runs/batch", json=other, headers={"Idempotency-Key": "k2"})
    assert response.status_code == 409
    # A single POST with a key a batch holds is another body too.
    single = client.post("/api/runs", json=entry("a"), headers={"Idempotency-Key": "k2"})
    assert single.status_code == 409
    assert r.zcard(keys.runs_index()) == 2
    assert broker.llen("stepstream") == 2


def test_an_invalid_batch_does_not_use_up_its_key(client: Any, r: redis.Redis) -> None:
    bad = {"runs": [{"scenario_id": "no_such_scenario", "input": {}}]}
    headers = {"Idempotency-Key": "k3"}
    assert client.post("/api/runs/batch", json=bad, headers=headers).status_code == 422
    good = {"runs": [entry()]}
    assert client.post("/api/runs/batch", json=good, headers=headers).status_code == 202


# -- run to the end --------------------------------------------------------------------


def test_a_batch_runs_all_finish(
    app_factory: Callable[..., Any], worker: WorkerProcess, r: redis.Redis
) -> None:
    client = app_factory().test_client()
    response = client.post("/api/runs/batch", json={"runs": [entry(f"r{i}") for i in range(10)]})
    assert response.status_code == 202
    for run in response.get_json()["runs"]:
        events = events_until_finished(r, run["run_id"], timeout=60)
        assert events[-1]["status"] == "succeeded"
        assert [e["type"] for e in events].count("run_started") == 1
